"""reconcile with multi-node plans: whole groups counted, scaled, replaced and parked,
against the in-memory cluster (4 nodes of 8 H100 each)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.observe import ChildRef, PodSnapshot, observe_pod
from sovereign_operator.render.group_names import GROUP_INDEX_LABEL, POD_INDEX_LABEL
from sovereign_operator.render.group_statefulset import PARKED_ANNOTATION
from tests.unit.operator.fakes import H100, FakeCluster, md_body
from tests.unit.operator.passes import (
    NOW,
    condition,
    count_renders,
    run_pass,
    with_status,
    written_status,
)

pytestmark = pytest.mark.unit

TIMEOUT = 60
FULL = {f"h100-{i}": 8 for i in range(4)}


def group_body(generation: int = 1, **spec: Any) -> dict[str, Any]:
    """16 GPUs on 8-GPU H100 nodes: TP 8, PP 2, two pods per group."""
    return md_body(
        generation=generation,
        resources={"gpus": 16, "gpuType": H100},
        multiNode={"placementTimeout": TIMEOUT},
        **spec,
    )


def statefulsets(cluster: FakeCluster) -> dict[str, dict[str, Any]]:
    return {r.name: o for r, o in cluster.objects.items() if r.kind == "StatefulSet"}


def group_pods(
    statefulset: dict[str, Any],
    nodes: tuple[str, ...] = ("h100-0", "h100-1"),
    *,
    ready: bool = True,
    waiting_since: datetime | None = None,
    crash_rank: int | None = None,
) -> tuple[PodSnapshot, ...]:
    """The group's pods as the API server shows them: rank r on nodes[r] ("" = unplaced)."""
    pods = []
    template = statefulset["spec"]["template"]
    for rank, node_name in enumerate(nodes):
        meta = copy.deepcopy(template["metadata"])
        meta["name"] = f"{statefulset['metadata']['name']}-{rank}"
        meta["namespace"] = "clinical-ai"
        meta["labels"][POD_INDEX_LABEL] = str(rank)
        spec = copy.deepcopy(template["spec"]) | ({"nodeName": node_name} if node_name else {})
        conditions: list[dict[str, Any]] = []
        if node_name:
            conditions.append({"type": "Ready", "status": "True" if ready else "False"})
        else:
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/7 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    "lastTransitionTime": (waiting_since or NOW).isoformat(),
                }
            )
        container_statuses = []
        if crash_rank == rank:
            container_statuses.append(
                {
                    "name": "engine",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "member lost"}},
                }
            )
        raw = {
            "metadata": meta,
            "spec": spec,
            "status": {
                "phase": "Running" if node_name else "Pending",
                "conditions": conditions,
                "containerStatuses": container_statuses,
            },
        }
        pods.append(observe_pod(raw))
    return tuple(pods)


def test_a_multi_node_plan_creates_one_statefulset_per_group_and_no_deployment() -> None:
    cluster = FakeCluster()
    run_pass(cluster, group_body())
    kinds = [ref.kind for ref in cluster.objects]
    assert "Deployment" not in kinds
    (name,) = statefulsets(cluster)
    assert name.startswith("llama-g0-")
    assert statefulsets(cluster)[name]["spec"]["replicas"] == 2
    current = written_status(cluster)
    assert current["plan"]["parallelism"] == "8x2"
    # The scale subresource counts groups: one leader pod per group.
    assert current["selector"] == (
        "apps.kubernetes.io/pod-index=0,sovereign.dev/deployment=llama,sovereign.dev/role=engine"
    )
    assert (current["readyReplicas"], current["readySummary"]) == (0, "0/1")
    assert condition(cluster, "Progressing")["reason"] == "ScalingUp"


def test_a_group_is_one_ready_replica_only_when_every_member_is_ready() -> None:
    cluster = FakeCluster()
    body = group_body()
    run_pass(cluster, body)
    (sts,) = statefulsets(cluster).values()
    leader_only = group_pods(sts)[:1] + group_pods(sts, ("h100-0", "h100-1"), ready=False)[1:]
    run_pass(cluster, with_status(cluster, body), leader_only)
    assert written_status(cluster)["readyReplicas"] == 0
    assert condition(cluster, "Ready")["status"] == "False"

    outcome = run_pass(cluster, with_status(cluster, body), group_pods(sts))
    assert (outcome.phase, outcome.ready_replicas) == ("Ready", 1)
    assert condition(cluster, "Ready")["status"] == "True"
    assert condition(cluster, "Scheduled")["reason"] == "AllPodsScheduled"
    assert condition(cluster, "Progressing")["reason"] == "RolloutComplete"
    cluster.writes.clear()
    run_pass(cluster, with_status(cluster, body), group_pods(sts))
    assert cluster.writes == []


def test_replicas_scale_by_whole_groups() -> None:
    cluster = FakeCluster()
    run_pass(cluster, group_body())
    (first,) = statefulsets(cluster)
    cluster.writes.clear()
    run_pass(cluster, group_body(generation=2, replicas=2))
    groups = statefulsets(cluster)
    (second,) = set(groups) - {first}
    assert groups[second]["metadata"]["labels"][GROUP_INDEX_LABEL] == "1"
    assert ("apply", f"StatefulSet/{first}") not in cluster.writes
    run_pass(cluster, group_body(generation=3, replicas=1))
    assert set(statefulsets(cluster)) == {first}
    assert ("delete-foreground", f"StatefulSet/{second}") in cluster.writes


def test_a_spec_change_replaces_the_group_whole() -> None:
    cluster = FakeCluster()
    body = group_body()
    run_pass(cluster, body)
    (old,) = statefulsets(cluster)
    old_pods = group_pods(statefulsets(cluster)[old])
    run_pass(cluster, with_status(cluster, body), old_pods)
    cluster.writes.clear()

    changed = group_body(generation=2, engine={"maxModelLen": 4096})
    run_pass(cluster, with_status(cluster, changed), old_pods)
    (new,) = statefulsets(cluster)
    assert new != old
    assert new.startswith("llama-g0-")
    # The new group is created and the old one removed whole, workload first.
    assert ("apply", f"StatefulSet/{new}") in cluster.writes
    assert ("delete-foreground", f"StatefulSet/{old}") in cluster.writes
    assert not any(w == ("apply", f"StatefulSet/{old}") for w in cluster.writes)
    assert written_status(cluster)["readyReplicas"] == 0  # the old group's pods no longer count


def test_an_old_group_still_going_keeps_the_rollout_progressing() -> None:
    cluster = FakeCluster()
    run_pass(cluster, group_body())
    (old,) = statefulsets(cluster)
    old_sts = copy.deepcopy(statefulsets(cluster)[old])
    run_pass(cluster, group_body(generation=2, engine={"maxModelLen": 4096}))
    # The old StatefulSet waits for its pods to go (foreground deletion).
    old_sts["metadata"]["deletionTimestamp"] = "2026-11-28T11:59:00Z"
    cluster.objects[ChildRef.of(old_sts)] = old_sts
    (new,) = (n for n in statefulsets(cluster) if n != old)
    pods = group_pods(statefulsets(cluster)[new])
    run_pass(cluster, group_body(generation=2, engine={"maxModelLen": 4096}), pods)
    progressing = condition(cluster, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RollingOut")
    assert "replacing 1 groups of the old template whole" in progressing["message"]
    assert written_status(cluster)["readyReplicas"] == 1
    assert written_status(cluster)["replicas"] == 2


def test_a_group_without_room_reports_the_shortage_in_gpus_and_nodes() -> None:
    cluster = FakeCluster(usage={"h100-0": 8, "h100-1": 8, "h100-2": 8})
    body = group_body()
    run_pass(cluster, body)
    (sts,) = statefulsets(cluster).values()
    pods = group_pods(sts, ("h100-3", ""), ready=False)
    outcome = run_pass(cluster, with_status(cluster, body), pods)
    scheduled = condition(cluster, "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "InsufficientGPU")
    assert (
        "needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3 on 1 more node" in (scheduled["message"])
    )
    assert outcome.phase == "Pending"
    assert condition(cluster, "Ready")["status"] == "False"


def test_a_partly_placed_group_is_parked_after_its_timeout_and_released_when_it_fits() -> None:
    cluster = FakeCluster(usage=dict(FULL))
    rendered: dict[Any, Any] = {}
    body = group_body()
    run_pass(cluster, body, rendered=rendered)
    (name,) = statefulsets(cluster)
    sts = statefulsets(cluster)[name]
    waited = NOW - timedelta(seconds=TIMEOUT + 1)
    pods = group_pods(sts, ("h100-3", ""), ready=False, waiting_since=waited)

    run_pass(cluster, with_status(cluster, body), pods, rendered=rendered)
    parked = statefulsets(cluster)[name]
    assert parked["spec"]["replicas"] == 0
    note = parked["metadata"]["annotations"][PARKED_ANNOTATION]
    assert f"1 of 2 pods could not be placed within {TIMEOUT} s" in note
    scheduled = condition(cluster, "Scheduled")
    assert scheduled["status"] == "False"
    assert "1 of 1 groups parked" in scheduled["message"]
    assert condition(cluster, "Progressing")["reason"] == "PlacementTimeout"

    # Later passes keep it parked, with the same note, while the nodes stay full.
    later = NOW + timedelta(minutes=5)
    cluster.writes.clear()
    run_pass(cluster, with_status(cluster, body), now=later, rendered=rendered)
    assert [w for w in cluster.writes if w[0] != "status"] == []
    assert condition(cluster, "Scheduled")["status"] == "False"
    assert "on 2 more nodes" in condition(cluster, "Scheduled")["message"]

    # Two nodes free up: the whole group fits, so it gets its pods back.
    cluster.usage = {"h100-0": 8, "h100-1": 8}
    run_pass(cluster, with_status(cluster, body), now=later, rendered=rendered)
    released = statefulsets(cluster)[name]
    assert released["spec"]["replicas"] == 2
    assert PARKED_ANNOTATION not in released["metadata"].get("annotations", {})


def test_parking_is_part_of_the_render_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_renders(monkeypatch)
    cluster = FakeCluster(usage=dict(FULL))
    rendered: dict[Any, Any] = {}
    body = group_body()
    run_pass(cluster, body, rendered=rendered)
    (sts,) = statefulsets(cluster).values()
    run_pass(cluster, with_status(cluster, body), group_pods(sts, ready=False), rendered=rendered)
    assert calls == ["render"]
    waited = NOW - timedelta(seconds=TIMEOUT + 1)
    overdue = group_pods(sts, ("h100-3", ""), ready=False, waiting_since=waited)
    run_pass(cluster, with_status(cluster, body), overdue, rendered=rendered)
    assert calls == ["render", "render"]


def test_a_crash_looping_member_degrades_the_deployment_naming_its_group() -> None:
    cluster = FakeCluster()
    body = group_body()
    run_pass(cluster, body)
    (name, sts), *_ = statefulsets(cluster).items()
    run_pass(cluster, with_status(cluster, body), group_pods(sts, ready=False, crash_rank=1))
    degraded = condition(cluster, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "EngineFailing")
    assert f"(group {name}, rank 1)" in degraded["message"]
    assert written_status(cluster)["phase"] == "Degraded"


def test_a_waiting_group_asks_for_a_pass_just_after_its_placement_deadline() -> None:
    cluster = FakeCluster(usage=dict(FULL))
    body = group_body()
    first = run_pass(cluster, body)
    assert first.recheck_after is None  # nothing placed, nothing waiting yet
    (sts,) = statefulsets(cluster).values()
    waited = NOW - timedelta(seconds=TIMEOUT - 20)
    pods = group_pods(sts, ("h100-3", ""), ready=False, waiting_since=waited)
    outcome = run_pass(cluster, with_status(cluster, body), pods)
    # No watch event marks the deadline, so the pass itself asks to run again after it.
    assert outcome.recheck_after == pytest.approx(21.0)
