"""Conditions computed from observed objects: what each situation reports, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.api.common import Condition
from sovereign_operator.api.model_deployment import ModelDeploymentSpec, ModelDeploymentStatus
from sovereign_operator.hooks import AutoscalerReport
from sovereign_operator.observe import PodSnapshot
from sovereign_operator.status import (
    Observed,
    Refusal,
    compute_status,
    parse_previous,
    status_patch,
)
from tests.unit.operator.fakes import DIGEST, pod

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HASH = "abc123"


def spec(**overrides: Any) -> ModelDeploymentSpec:
    data: dict[str, Any] = {
        "model": {"source": "pvc://model-store/m", "digest": DIGEST},
        "resources": {"gpus": 8, "gpuType": "NVIDIA-H100-80GB-HBM3"},
    }
    data.update(overrides)
    return ModelDeploymentSpec.model_validate(data)


def deployment(
    replicas: int = 1, available: int = 1, updated: int | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "generation": 2,
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "updatedReplicas": replicas if updated is None else updated,
            **status,
        },
    }


def observed(
    *,
    pods: tuple[PodSnapshot, ...] = (),
    workload: dict[str, Any] | None = None,
    **fields: Any,
) -> Observed:
    defaults: dict[str, Any] = {
        "generation": 3,
        "spec": spec(),
        "plan": None,
        "template_hash": HASH,
        "refusal": None,
        "deployment": workload,
        "pods": pods,
        "selector": "sovereign.dev/deployment=m,sovereign.dev/role=engine",
        "endpoint": "http://m.ns.svc:8000/v1",
    }
    return Observed(**(defaults | fields))


def conditions(status: ModelDeploymentStatus) -> dict[str, Condition]:
    return {c.type: c for c in status.conditions}


def test_all_replicas_available_is_ready() -> None:
    status, _ = compute_status(
        observed(workload=deployment(), pods=(pod(template_hash=HASH),)), None, T0
    )
    found = conditions(status)
    assert (found["Ready"].status, found["Ready"].reason) == ("True", "AllReplicasAvailable")
    assert found["Ready"].message == "1/1 engine replicas available at http://m.ns.svc:8000/v1"
    assert found["Progressing"].status == "False"
    assert found["Degraded"].status == "False"
    assert found["Scheduled"].status == "True"
    assert found["ModelVerified"].status == "True"
    assert (status.phase.value, status.ready_summary, status.observed_generation) == (
        "Ready",
        "1/1",
        3,
    )
    assert all(c.observed_generation == 3 for c in status.conditions)


def test_unschedulable_engine_pods_name_the_gpu_shortage() -> None:
    shortage = "needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3, largest free is 4 (on h100-2)"
    stuck = pod(template_hash=HASH, unschedulable="0/8 nodes are available: ...", ready=False)
    status, transitions = compute_status(
        observed(workload=deployment(available=0), pods=(stuck,), shortage=shortage), None, T0
    )
    found = conditions(status)
    assert (found["Scheduled"].status, found["Scheduled"].reason) == ("False", "InsufficientGPU")
    assert shortage in found["Scheduled"].message
    assert (found["Ready"].status, found["Ready"].reason) == ("False", "InsufficientGPU")
    assert status.phase.value == "Pending"
    # A deployment that cannot be placed is news worth an Event at once.
    assert [(t.type, t.warning) for t in transitions] == [("Scheduled", True)]


def test_without_a_gpu_shortage_the_schedulers_own_message_is_kept() -> None:
    stuck = pod(template_hash=HASH, unschedulable='persistentvolumeclaim "store" not found')
    status, _ = compute_status(observed(workload=deployment(available=0), pods=(stuck,)), None, T0)
    found = conditions(status)
    assert found["Scheduled"].reason == "Unschedulable"
    assert 'persistentvolumeclaim "store" not found' in found["Scheduled"].message


def test_a_failed_model_verification_is_degraded_and_not_verified() -> None:
    failing = pod(
        template_hash=HASH, ready=False, fetch_failure="digest mismatch: sha256:00 != sha256:ab"
    )
    status, _ = compute_status(
        observed(workload=deployment(available=0), pods=(failing,)), None, T0
    )
    found = conditions(status)
    assert (found["ModelVerified"].status, found["ModelVerified"].reason) == (
        "False",
        "VerificationFailed",
    )
    assert "digest mismatch" in found["ModelVerified"].message
    assert (found["Degraded"].status, found["Degraded"].reason) == (
        "True",
        "ModelVerificationFailed",
    )
    assert status.phase.value == "Degraded"


def test_model_verified_is_unknown_until_the_worker_reports() -> None:
    waiting = pod(template_hash=HASH, ready=False, fetch_done=False)
    status, _ = compute_status(
        observed(workload=deployment(available=0), pods=(waiting,)), None, T0
    )
    assert conditions(status)["ModelVerified"].status == "Unknown"


def test_old_template_pods_do_not_verify_the_new_model() -> None:
    old = pod(template_hash="previous")
    status, _ = compute_status(observed(workload=deployment(), pods=(old,)), None, T0)
    assert conditions(status)["ModelVerified"].status == "Unknown"


def test_a_crash_looping_engine_is_degraded() -> None:
    crashing = pod(template_hash=HASH, ready=False, crash="CrashLoopBackOff after 5 restarts: OOM")
    status, _ = compute_status(
        observed(workload=deployment(available=0), pods=(crashing,)), None, T0
    )
    found = conditions(status)
    assert (found["Degraded"].status, found["Degraded"].reason) == ("True", "EngineFailing")
    assert "OOM" in found["Degraded"].message


def test_a_rollout_in_progress_is_progressing() -> None:
    rolling = deployment(replicas=2, available=1, updated=1)
    status, _ = compute_status(
        observed(workload=rolling, pods=(pod(template_hash=HASH),)), None, T0
    )
    found = conditions(status)
    assert (found["Progressing"].status, found["Progressing"].reason) == ("True", "RollingOut")
    assert "1 old pods being replaced" in found["Progressing"].message


def test_a_stuck_rollout_is_degraded_not_progressing() -> None:
    stuck = deployment(
        available=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "m-engine-x" has timed out progressing.',
            }
        ],
    )
    status, _ = compute_status(observed(workload=stuck), None, T0)
    found = conditions(status)
    assert (found["Progressing"].status, found["Degraded"].reason) == (
        "False",
        "ProgressDeadlineExceeded",
    )


def test_pods_refused_by_admission_surface_from_replica_failure() -> None:
    refused = deployment(
        replicas=0,
        available=0,
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "m-engine-x" is forbidden: violates PodSecurity "restricted:latest"',
            }
        ],
    )
    status, _ = compute_status(observed(workload=refused), None, T0)
    assert "violates PodSecurity" in conditions(status)["Degraded"].message


def test_a_refused_plan_fails_with_the_reason_everywhere() -> None:
    refusal = Refusal("UnsupportedPlan", "engine kind diffusers is not rendered yet")
    status, _ = compute_status(observed(refusal=refusal, template_hash=None), None, T0)
    found = conditions(status)
    assert found["Ready"].reason == found["Degraded"].reason == "UnsupportedPlan"
    assert found["Scheduled"].status == "Unknown"
    assert status.phase.value == "Failed"


def test_autoscaler_condition_follows_the_spec_until_the_loop_reports() -> None:
    fixed, _ = compute_status(observed(), None, T0)
    assert conditions(fixed)["AutoscalerActive"].reason == "FixedReplicas"
    external = observed(spec=spec(scaling={"mode": "external", "maxReplicas": 3}))
    status, _ = compute_status(external, None, T0)
    assert conditions(status)["AutoscalerActive"].reason == "ExternalAutoscaler"
    internal = observed(spec=spec(scaling={"maxReplicas": 3}))
    status, _ = compute_status(internal, None, T0)
    assert conditions(status)["AutoscalerActive"].status == "Unknown"
    report = AutoscalerReport("True", "Scaling", "queueDepth 3.1 per replica, target 8")
    status, _ = compute_status(
        observed(spec=spec(scaling={"maxReplicas": 3}), autoscaler=report), None, T0
    )
    assert conditions(status)["AutoscalerActive"].message == report.message


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first, _ = compute_status(observed(workload=deployment(available=0)), None, T0)
    later = T0 + timedelta(minutes=5)
    same, transitions = compute_status(observed(workload=deployment(available=0)), first, later)
    assert transitions == []
    assert conditions(same)["Ready"].last_transition_time == T0
    ready, transitions = compute_status(
        observed(workload=deployment(), pods=(pod(template_hash=HASH),)), same, later
    )
    assert conditions(ready)["Ready"].last_transition_time == later
    assert conditions(ready)["Degraded"].last_transition_time == T0
    assert ("Ready", "True", "False") in {(t.type, t.status, t.previous) for t in transitions}


def test_an_unchanged_status_needs_no_patch_even_after_a_round_trip() -> None:
    status, _ = compute_status(
        observed(workload=deployment(), pods=(pod(template_hash=HASH),)), None, T0
    )
    stored = parse_previous(status.model_dump(by_alias=True, mode="json", exclude_none=True))
    again, _ = compute_status(
        observed(workload=deployment(), pods=(pod(template_hash=HASH),)),
        stored,
        T0 + timedelta(hours=1),
    )
    assert status_patch(again, stored) is None


def test_a_patch_carries_only_what_changed() -> None:
    before, _ = compute_status(observed(workload=deployment(available=0)), None, T0)
    after, _ = compute_status(
        observed(workload=deployment(), pods=(pod(template_hash=HASH),)), before, T0
    )
    patch = status_patch(after, before)
    assert patch is not None
    assert set(patch) <= {"conditions", "phase", "readyReplicas", "readySummary"}
    assert "selector" not in patch


def test_conditions_other_components_own_are_kept() -> None:
    audit = Condition(type="AuditSinkHealthy", status="True", reason="Writing", message="ok")
    first, _ = compute_status(observed(), None, T0)
    previous = first.model_copy(update={"conditions": [*first.conditions, audit]})
    status, _ = compute_status(observed(), previous, T0)
    assert conditions(status)["AuditSinkHealthy"] == audit


def test_a_status_we_cannot_read_is_rewritten() -> None:
    assert parse_previous({"phase": "Exploded"}) is None
    assert parse_previous(None) is None
