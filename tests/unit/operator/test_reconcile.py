"""reconcile: whole passes against an in-memory cluster, from first create to no-op resync."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator import desired as desired_module
from sovereign_operator.actions import Written
from sovereign_operator.hooks import Hooks, OperatorAction, PolicyVerdict
from sovereign_operator.render import UnsupportedPlanError
from sovereign_operator.status import parse_previous
from tests.unit.operator.fakes import MD_UID, FakeCluster, md_body
from tests.unit.operator.passes import count_renders, rolled_out_pod, run_pass, with_status

pytestmark = pytest.mark.unit


def test_first_pass_creates_children_and_writes_status() -> None:
    cluster = FakeCluster()
    outcome = run_pass(cluster, md_body())
    assert [w for w in cluster.writes if w[0] == "apply"] == [
        ("apply", "ServiceAccount/llama-engine"),
        ("apply", "NetworkPolicy/llama-engine"),
        ("apply", "Service/llama"),
        ("apply", "PodDisruptionBudget/llama-engine"),
        ("apply", "Deployment/llama-engine"),
    ]
    assert outcome.status_written
    status = next(iter(cluster.status.values()))
    assert status["plan"]["parallelism"] == "1x1"
    assert status["selector"] == "sovereign.dev/deployment=llama,sovereign.dev/role=engine"
    assert status["endpoint"] == "http://llama.clinical-ai.svc:8000/v1"
    assert status["observedGeneration"] == 1
    owner = cluster.deployment()["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"]) == (MD_UID, True)


def test_a_noop_resync_writes_nothing() -> None:
    cluster = FakeCluster()
    body = md_body()
    run_pass(cluster, body)
    ready = rolled_out_pod(cluster)
    run_pass(cluster, with_status(cluster, body), (ready,))
    cluster.writes.clear()
    outcome = run_pass(cluster, with_status(cluster, body), (ready,))
    assert cluster.writes == []
    assert (outcome.writes, outcome.result, outcome.phase) == (0, "noop", "Ready")


def test_scaling_changes_only_the_deployment() -> None:
    cluster = FakeCluster()
    run_pass(cluster, md_body())
    cluster.writes.clear()
    run_pass(cluster, md_body(generation=2, replicas=3))
    assert [w for w in cluster.writes if w[0] == "apply"] == [("apply", "Deployment/llama-engine")]
    assert cluster.deployment()["spec"]["replicas"] == 3


def test_more_gpus_roll_the_engine_to_tensor_parallel_two() -> None:
    cluster = FakeCluster()
    run_pass(cluster, md_body())
    run_pass(cluster, md_body(generation=2, resources={"gpus": 2, "gpuType": "NVIDIA-L40S"}))
    container = cluster.deployment()["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--tensor-parallel-size" in container["args"]
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "2"


def test_a_plan_render_cannot_serve_yet_is_reported_not_raised_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = FakeCluster()
    run_pass(cluster, md_body())
    cluster.writes.clear()

    def unsupported(*_: Any, **__: Any) -> list[Any]:
        raise UnsupportedPlanError("llama: engine kind x needs its own serve command")

    # Every engine kind the API knows is rendered today; a new one would be refused so.
    monkeypatch.setattr(desired_module, "render_children", unsupported)
    outcome = run_pass(cluster, md_body(generation=2, replicas=2))
    assert [w for w in cluster.writes if w[0] != "status"] == []
    assert cluster.deployment()["spec"]["replicas"] == 1
    assert outcome.refused
    status = parse_previous(next(iter(cluster.status.values())))
    assert status is not None
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "UnsupportedPlan")
    assert "needs its own serve command" in ready.message
    assert status.plan is not None
    assert status.plan.parallelism == "1x1"
    assert status.phase.value == "Failed"


def test_a_spec_planning_refuses_is_reported_with_the_fix() -> None:
    cluster = FakeCluster()
    outcome = run_pass(cluster, md_body(resources={"gpus": 1, "gpuType": "NVIDIA-B200"}))
    assert outcome.refused
    assert cluster.objects == {}
    status = next(iter(cluster.status.values()))
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "no node offers NVIDIA-B200" in degraded["message"]


def test_a_refused_apply_stops_before_the_workload_and_is_reported() -> None:
    cluster = FakeCluster(refuse={"NetworkPolicy": 403})
    outcome = run_pass(cluster, md_body())
    assert [r.kind for r in cluster.objects] == ["ServiceAccount"]
    assert outcome.error is not None
    assert outcome.error.code == 403
    status = next(iter(cluster.status.values()))
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")


def test_an_enforcing_policy_blocks_every_write_but_status() -> None:
    async def deny(*_: Any) -> PolicyVerdict:
        return PolicyVerdict(
            "False", "SourceNotAllowed", "pvc://model-store is not approved", enforce=True
        )

    cluster = FakeCluster()
    outcome = run_pass(cluster, md_body(), hooks=Hooks(policy=deny))
    assert cluster.objects == {}
    assert outcome.refused
    conditions = {c["type"]: c for c in next(iter(cluster.status.values()))["conditions"]}
    assert conditions["PolicyCompliant"]["reason"] == "SourceNotAllowed"
    assert conditions["Ready"]["reason"] == "PolicyViolation"


def test_every_action_and_transition_reaches_the_audit_hook() -> None:
    records: list[OperatorAction] = []

    async def audit(action: OperatorAction) -> None:
        records.append(action)

    cluster = FakeCluster()
    body = md_body()
    run_pass(cluster, body, hooks=Hooks(audit=audit))
    assert [r.target for r in records if r.verb == "apply"] == [
        "ServiceAccount/llama-engine",
        "NetworkPolicy/llama-engine",
        "Service/llama",
        "PodDisruptionBudget/llama-engine",
        "Deployment/llama-engine",
    ]
    # Each write's record names the API server's Audit-ID of that very request.
    assert [r.audit_id for r in records if r.verb == "apply"] == [f"audit-{n}" for n in range(1, 6)]
    assert cluster.audit_ids == {}  # each taken once, nothing left behind
    records.clear()
    ready = rolled_out_pod(cluster)
    run_pass(cluster, with_status(cluster, body), (ready,), hooks=Hooks(audit=audit))
    changed = {(r.target, r.extra["status"]) for r in records if r.verb == "condition"}
    assert {("Ready", "True"), ("Progressing", "False"), ("ModelVerified", "True")} <= changed


def test_a_deleting_deployment_is_not_reconciled() -> None:
    cluster = FakeCluster()
    body = md_body()
    body["metadata"]["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    assert run_pass(cluster, body).writes == 0
    assert cluster.writes == []


def test_a_cache_without_our_last_status_write_causes_no_second_write() -> None:
    cluster = FakeCluster()
    statuses: dict[Any, Any] = {}
    body = md_body()
    run_pass(cluster, body, statuses=statuses)
    ready = rolled_out_pod(cluster)
    stale = with_status(cluster, body)
    first = run_pass(cluster, stale, (ready,), statuses=statuses)
    assert first.status_written
    assert {t.type for t in first.transitions} >= {"Ready"}
    cluster.writes.clear()
    # The next child event arrives before the ModelDeployment's own watch event does.
    again = run_pass(cluster, stale, (ready,), statuses=statuses)
    assert (again.status_written, again.transitions, cluster.writes) == (False, (), [])
    # Once the cache catches up, it is used as it is.
    caught_up = run_pass(cluster, with_status(cluster, body), (ready,), statuses=statuses)
    assert caught_up.writes == 0


def test_an_unchanged_spec_is_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_renders(monkeypatch)
    cluster = FakeCluster()
    rendered: dict[Any, Any] = {}
    body = md_body()
    run_pass(cluster, body, rendered=rendered)
    run_pass(cluster, with_status(cluster, body), rendered=rendered)
    assert calls == ["render"]
    run_pass(cluster, md_body(generation=2, replicas=2), rendered=rendered)
    assert calls == ["render", "render"]
    assert cluster.deployment()["spec"]["replicas"] == 2


def test_our_own_write_is_recognised_when_it_comes_back() -> None:
    written = Written("uid-1", 2, at=0.0, resource_version="812")
    assert written.echoes("uid-1", "812")
    assert not written.echoes("uid-1", "813")  # someone else's edit, or a status update
    assert not written.echoes("uid-2", "812")
    assert not Written("uid-1", 2, at=0.0).echoes("uid-1", "")


def test_a_policy_tightened_later_holds_changes_but_the_running_engine_stays_ready() -> None:
    async def deny(*_: Any) -> PolicyVerdict:
        return PolicyVerdict(
            "False", "PolicyViolation", "spec.model.source is not allowed", enforce=True
        )

    cluster = FakeCluster()
    body = md_body()
    run_pass(cluster, body)
    ready = rolled_out_pod(cluster)
    run_pass(cluster, with_status(cluster, body), (ready,))

    # The policy tightens, and the spec changes: nothing is written but status.
    changed = md_body(generation=2, resources={"gpus": 2})
    cluster.writes.clear()
    outcome = run_pass(cluster, with_status(cluster, changed), (ready,), hooks=Hooks(policy=deny))
    assert [w for w in cluster.writes if w[0] != "status"] == []
    assert outcome.refused
    status = next(iter(cluster.status.values()))
    conditions = {c["type"]: c for c in status["conditions"]}
    # What runs still serves, and the status says so; the hold is on the rollout.
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "False"
    progressing = conditions["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "PolicyViolation")
    assert "changes held, what runs is kept: spec.model.source" in progressing["message"]
    assert conditions["PolicyCompliant"]["status"] == "False"
    assert status["phase"] != "Failed"
