"""A ModelDeployment's status, computed from what the cluster shows (pure).

Every field is derived from observed objects: the engine Deployment's status, the engine
pods' conditions and container states, and the scheduler's verdicts. Nothing is assumed
from the operator's own actions, so the status stays true when someone else changes the
cluster. `lastTransitionTime` moves only when a condition's status changes, and each
change is returned as a `Transition` so the caller can post one Kubernetes Event for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sovereign_operator.api.common import Condition, ConditionType
from sovereign_operator.api.model_deployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    PlanStatus,
)
from sovereign_operator.groups import GroupSummary
from sovereign_operator.hooks import (
    AuditHealthReport,
    AutoscalerReport,
    ConditionStatus,
    PolicyVerdict,
)
from sovereign_operator.observe import PodSnapshot

# Conditions in the order `kubectl describe` shows them.
CONDITION_ORDER = (
    ConditionType.READY,
    ConditionType.PROGRESSING,
    ConditionType.DEGRADED,
    ConditionType.SCHEDULED,
    ConditionType.MODEL_VERIFIED,
    ConditionType.POLICY_COMPLIANT,
    ConditionType.AUTOSCALER_ACTIVE,
)
# Reported only when an audit trail is configured (hooks.audit_health), after the others.
AUDIT_SINK_HEALTHY = "AuditSinkHealthy"
# The status a condition has when all is well; the opposite is posted as a Warning event.
HEALTHY: dict[str, ConditionStatus] = {
    ConditionType.READY: "True",
    ConditionType.DEGRADED: "False",
    ConditionType.SCHEDULED: "True",
    ConditionType.MODEL_VERIFIED: "True",
    ConditionType.POLICY_COMPLIANT: "True",
    AUDIT_SINK_HEALTHY: "True",
}
MAX_MESSAGE = 2048


@dataclass(frozen=True)
class Refusal:
    """Why no children can be rendered for the current spec (the old ones are left alone)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Everything the conditions are computed from."""

    generation: int
    spec: ModelDeploymentSpec | None
    """None only when the stored spec does not parse (then `refusal` says why)."""
    plan: PlanStatus | None
    template_hash: str | None
    refusal: Refusal | None
    deployment: Mapping[str, Any] | None
    """The engine Deployment's metadata.generation and status, None when it does not exist."""
    pods: Sequence[PodSnapshot]
    groups: GroupSummary | None = None
    """Multi-node plans: the groups (StatefulSets) standing in for the engine Deployment."""
    shortage: str | None = None
    apply_error: str | None = None
    policy: PolicyVerdict = field(default_factory=PolicyVerdict)
    autoscaler: AutoscalerReport | None = None
    audit: AuditHealthReport | None = None
    withheld: int = 0
    """Changes not applied: a ModelPolicy forbids the spec (`policy_hold`), or the audit
    trail cannot record them (audit.failurePolicy: pause)."""
    policy_hold: str | None = None
    """Why a ModelPolicy forbids rolling out this spec; what already runs is left alone."""

    @property
    def nothing_deployed(self) -> bool:
        return self.deployment is None and not (self.groups and self.groups.current)

    selector: str = ""
    endpoint: str = ""


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed; becomes one Kubernetes Event."""

    type: str
    status: ConditionStatus
    previous: str | None
    reason: str
    message: str

    @property
    def warning(self) -> bool:
        healthy = HEALTHY.get(self.type)
        return healthy is not None and self.status not in (healthy, "Unknown")


@dataclass(frozen=True)
class _Verdict:
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class _Counts:
    desired: int
    replicas: int
    ready: int
    available: int
    updated: int
    rolled_out: bool
    """The Deployment controller has seen the latest template."""
    deadline_exceeded: str | None
    replica_failure: str | None


def _counts(observed: Observed) -> _Counts:
    desired = observed.spec.replicas if observed.spec is not None else 0
    if observed.groups is not None:
        # Replicas are whole groups: ready only when every member is (groups.group_ready).
        groups = observed.groups
        return _Counts(
            desired, groups.present, groups.ready, groups.ready, groups.current, True, None, None
        )
    deployment = observed.deployment
    if deployment is None:
        return _Counts(desired, 0, 0, 0, 0, False, None, None)
    status = deployment.get("status") or {}
    deadline = failure = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            deadline = str(condition.get("message") or "the rollout made no progress")
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            failure = str(condition.get("message") or condition.get("reason") or "")
    generation = int(deployment.get("generation") or 0)
    return _Counts(
        desired=desired,
        replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        rolled_out=int(status.get("observedGeneration") or 0) >= generation,
        deadline_exceeded=deadline,
        replica_failure=failure,
    )


def _current_pods(observed: Observed) -> list[PodSnapshot]:
    return [
        p for p in observed.pods if not p.deleting and p.template_hash == observed.template_hash
    ]


def _scheduled(observed: Observed, counts: _Counts) -> _Verdict:
    if observed.refusal is not None:
        return _Verdict("Unknown", observed.refusal.reason, "no engine pods are planned")
    if counts.desired == 0:
        return _Verdict("True", "NoPodsWanted", "the deployment is scaled to zero")
    if observed.groups is not None and observed.groups.parked:
        return _parked(observed, observed.groups)
    current = _current_pods(observed)
    stuck = [p for p in current if p.unschedulable is not None]
    if stuck:
        first = stuck[0]
        detail = observed.shortage or first.unschedulable or ""
        reason = "InsufficientGPU" if observed.shortage else "Unschedulable"
        return _Verdict(
            "False",
            reason,
            f"{len(stuck)} of {len(current)} engine pods cannot be placed "
            f"(e.g. {first.name}): {detail}",
        )
    placed = [p for p in current if p.node_name]
    wanted = counts.desired * (observed.plan.nodes_per_replica if observed.plan else 1)
    if current and len(placed) >= min(len(current), wanted):
        return _Verdict("True", "AllPodsScheduled", f"{len(placed)} engine pods placed on nodes")
    return _Verdict("Unknown", "Pending", "waiting for engine pods to be created and scheduled")


def _parked(observed: Observed, groups: GroupSummary) -> _Verdict:
    """Groups parked after their placement timeout have no pods left to report; the
    condition keeps saying why they cannot run until the whole group fits."""
    name, note = groups.parked[0]
    detail = f"; now {observed.shortage}" if observed.shortage else ""
    return _Verdict(
        "False",
        "InsufficientGPU" if observed.shortage else "PlacementTimeout",
        f"{len(groups.parked)} of {groups.desired} groups parked, waiting for room for all "
        f"their pods (e.g. {name}: {note}){detail}",
    )


def _model_verified(observed: Observed, previous: Condition | None) -> _Verdict:
    if observed.refusal is not None:
        return _Verdict("Unknown", observed.refusal.reason, "no engine pods are planned")
    current = _current_pods(observed)
    for pod in current:
        if pod.fetch_failure is not None:
            return _Verdict(
                "False",
                "VerificationFailed",
                f"pod {pod.name}: {pod.fetch_failure}; the engine does not start",
            )
    verified = [p for p in current if p.fetch_done]
    if verified and observed.spec is not None:
        note = verified[0].fetch_message
        message = f"model bytes match {observed.spec.model.digest}"
        return _Verdict("True", "DigestVerified", f"{message}: {note}" if note else message)
    if (
        previous is not None
        and previous.status != "Unknown"
        and previous.observed_generation == observed.generation
    ):
        # No pod of this generation reports right now (e.g. between a pod's deletion and
        # its replacement): the verdict for these bytes still stands.
        return _Verdict(previous.status, previous.reason, previous.message)
    return _Verdict("Unknown", "AwaitingWorker", "the fetch step has not reported yet")


def _degraded(observed: Observed, counts: _Counts, verified: _Verdict) -> _Verdict:  # noqa: PLR0911 - a ladder of causes, most important first
    if observed.refusal is not None:
        return _Verdict("True", observed.refusal.reason, observed.refusal.message)
    if observed.apply_error is not None:
        return _Verdict("True", "ApplyFailed", observed.apply_error)
    if observed.policy_hold is not None and observed.nothing_deployed:
        return _Verdict("True", "PolicyViolation", observed.policy_hold)
    if verified.status == "False":
        return _Verdict("True", "ModelVerificationFailed", verified.message)
    for pod in observed.pods:
        if pod.crash is not None and not pod.deleting:
            # A failing member takes its group down with it: say which group.
            where = f" (group {pod.group}, rank {pod.rank})" if pod.group else ""
            return _Verdict("True", "EngineFailing", f"pod {pod.name}{where}: {pod.crash}")
    if counts.replica_failure is not None:
        return _Verdict("True", "ReplicaFailure", counts.replica_failure)
    if counts.deadline_exceeded is not None:
        return _Verdict("True", "ProgressDeadlineExceeded", counts.deadline_exceeded)
    return _Verdict("False", "NoFailures", "no failing engine pods or rollouts")


def _progressing(observed: Observed, counts: _Counts) -> _Verdict:  # noqa: PLR0911 - a ladder of causes
    if observed.refusal is not None:
        return _Verdict("False", observed.refusal.reason, "nothing to roll out")
    if observed.apply_error is not None:
        return _Verdict("False", "ApplyFailed", "children could not be applied")
    if observed.policy_hold is not None and (observed.withheld or observed.nothing_deployed):
        return _Verdict(
            "False",
            "PolicyViolation",
            f"{observed.withheld} changes held, what runs is kept: {observed.policy_hold}",
        )
    if observed.withheld and observed.audit is not None:
        return _Verdict(
            "False",
            "AuditPaused",
            f"{observed.withheld} changes wait for the audit trail: {observed.audit.message}",
        )
    if observed.groups is not None:
        return _group_progressing(observed, observed.groups)
    if observed.deployment is None:
        return _Verdict("True", "Creating", "creating the engine Deployment")
    if counts.deadline_exceeded is not None:
        return _Verdict("False", "ProgressDeadlineExceeded", counts.deadline_exceeded)
    parallelism = f" (TPxPP {observed.plan.parallelism})" if observed.plan else ""
    if not counts.rolled_out:
        return _Verdict(
            "True",
            "RollingOut",
            f"the Deployment controller is picking up the new engine template{parallelism}",
        )
    if counts.replicas > counts.updated:
        old = counts.replicas - counts.updated
        return _Verdict(
            "True",
            "RollingOut",
            f"{counts.updated}/{counts.desired} engine pods on the new template{parallelism}; "
            f"{old} old pods being replaced",
        )
    if counts.updated < counts.desired or counts.available < counts.desired:
        return _Verdict(
            "True",
            "ScalingUp",
            f"{counts.available}/{counts.desired} engine replicas available; "
            "new engine pods are starting",
        )
    if counts.replicas > counts.desired:
        return _Verdict("True", "ScalingDown", f"scaling down to {counts.desired} replicas")
    return _Verdict(
        "False", "RolloutComplete", f"{counts.desired} replicas on the current template"
    )


def _group_progressing(observed: Observed, groups: GroupSummary) -> _Verdict:
    parallelism = f" (TPxPP {observed.plan.parallelism})" if observed.plan else ""
    if groups.stale:
        return _Verdict(
            "True",
            "RollingOut",
            f"replacing {groups.stale} groups of the old template whole; "
            f"{groups.ready}/{groups.desired} groups on the new template ready{parallelism}",
        )
    if groups.parked:
        return _Verdict(
            "False",
            "PlacementTimeout",
            f"{len(groups.parked)} groups could not be placed whole and were parked",
        )
    if groups.current < groups.desired or groups.ready < groups.desired:
        return _Verdict(
            "True",
            "ScalingUp",
            f"{groups.ready}/{groups.desired} groups ready; new groups are starting{parallelism}",
        )
    if groups.current > groups.desired or groups.leaving:
        return _Verdict("True", "ScalingDown", f"scaling down to {groups.desired} groups")
    return _Verdict("False", "RolloutComplete", f"{groups.desired} groups on the current template")


def _ready(  # noqa: PLR0911 - a ladder of causes, most important first
    observed: Observed, counts: _Counts, scheduled: _Verdict, degraded: _Verdict
) -> _Verdict:
    if observed.refusal is not None:
        return _Verdict("False", observed.refusal.reason, observed.refusal.message)
    if observed.policy_hold is not None and observed.nothing_deployed:
        return _Verdict("False", "PolicyViolation", observed.policy_hold)
    if counts.desired == 0:
        return _Verdict("False", "ScaledToZero", "spec.replicas is 0; nothing serves the model")
    summary = f"{counts.available}/{counts.desired} engine replicas available"
    if counts.available >= counts.desired:
        where = f" at {observed.endpoint}" if observed.endpoint else ""
        return _Verdict("True", "AllReplicasAvailable", summary + where)
    if scheduled.status == "False":
        return _Verdict("False", scheduled.reason, f"{summary}; {scheduled.message}")
    if degraded.status == "True":
        return _Verdict("False", degraded.reason, f"{summary}; {degraded.message}")
    return _Verdict("False", "ReplicasUnavailable", summary)


def _autoscaler(observed: Observed) -> _Verdict:
    if observed.autoscaler is not None:
        report = observed.autoscaler
        return _Verdict(report.status, report.reason, report.message)
    if observed.spec is None:
        return _Verdict("Unknown", "InvalidSpec", "the spec could not be read")
    scaling = observed.spec.scaling
    if scaling is None:
        return _Verdict(
            "False",
            "FixedReplicas",
            f"spec.scaling is not set; replicas stay at {observed.spec.replicas}",
        )
    if scaling.mode == "external":
        return _Verdict(
            "False",
            "ExternalAutoscaler",
            "an external autoscaler (HPA, KEDA) sets replicas through the scale subresource",
        )
    return _Verdict(
        "Unknown", "AutoscalerNotReporting", "the autoscaling loop has not reported yet"
    )


def _phase(
    observed: Observed,
    ready: _Verdict,
    progressing: _Verdict,
    scheduled: _Verdict,
    degraded: _Verdict,
) -> Phase:
    if observed.refusal is not None or (observed.policy_hold and observed.nothing_deployed):
        return Phase.FAILED
    if degraded.status == "True":
        return Phase.DEGRADED
    if ready.status == "True":
        return Phase.PROGRESSING if progressing.status == "True" else Phase.READY
    if scheduled.status == "False" or observed.nothing_deployed:
        return Phase.PENDING
    if progressing.status == "True":
        return Phase.PROGRESSING
    return Phase.PENDING


def _truncate(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _alarming(kind: str, status: ConditionStatus) -> bool:
    """Whether a condition's first appearance deserves an Event: only when it needs action.
    A new deployment that is not Ready yet, or is rolling out, is news to nobody."""
    healthy = HEALTHY.get(kind)
    return (
        kind != ConditionType.READY and healthy is not None and status not in (healthy, "Unknown")
    )


def compute_status(
    observed: Observed, previous: ModelDeploymentStatus | None, now: datetime
) -> tuple[ModelDeploymentStatus, list[Transition]]:
    """The new status and the conditions whose status changed since `previous`."""
    before = {c.type: c for c in (previous.conditions if previous else [])}
    counts = _counts(observed)
    scheduled = _scheduled(observed, counts)
    verified = _model_verified(observed, before.get(ConditionType.MODEL_VERIFIED))
    degraded = _degraded(observed, counts, verified)
    progressing = _progressing(observed, counts)
    ready = _ready(observed, counts, scheduled, degraded)
    policy = observed.policy
    verdicts: dict[str, _Verdict] = {
        ConditionType.READY: ready,
        ConditionType.PROGRESSING: progressing,
        ConditionType.DEGRADED: degraded,
        ConditionType.SCHEDULED: scheduled,
        ConditionType.MODEL_VERIFIED: verified,
        ConditionType.POLICY_COMPLIANT: _Verdict(policy.status, policy.reason, policy.message),
        ConditionType.AUTOSCALER_ACTIVE: _autoscaler(observed),
    }
    if observed.audit is not None:
        audit = observed.audit
        verdicts[AUDIT_SINK_HEALTHY] = _Verdict(audit.status, audit.reason, audit.message)
    stamp = now.astimezone(UTC).replace(microsecond=0)
    conditions: list[Condition] = []
    transitions: list[Transition] = []
    for kind in (*CONDITION_ORDER, AUDIT_SINK_HEALTHY):
        if kind not in verdicts:
            continue
        verdict = verdicts[kind]
        old = before.get(kind)
        changed = old is None or old.status != verdict.status
        conditions.append(
            Condition(
                type=kind,
                status=verdict.status,
                reason=verdict.reason,
                message=_truncate(verdict.message),
                last_transition_time=stamp if changed or old is None else old.last_transition_time,
                observed_generation=observed.generation,
            )
        )
        if changed and (old is not None or _alarming(kind, verdict.status)):
            transitions.append(
                Transition(
                    type=kind,
                    status=verdict.status,
                    previous=old.status if old else None,
                    reason=verdict.reason,
                    message=_truncate(verdict.message),
                )
            )
    # Conditions other components own (e.g. the audit sink's) are kept as they are: a merge
    # patch replaces the whole list, so leaving them out would delete them.
    conditions += [c for c in before.values() if c.type not in verdicts]
    status = ModelDeploymentStatus(
        observed_generation=observed.generation,
        phase=_phase(observed, ready, progressing, scheduled, degraded),
        conditions=conditions,
        replicas=counts.replicas,
        ready_replicas=counts.ready,
        selector=observed.selector,
        endpoint=observed.endpoint,
        plan=observed.plan,
        last_scale=previous.last_scale if previous else None,
        ready_summary=f"{counts.ready}/{counts.desired}",
    )
    return status, transitions


def parse_previous(raw: Mapping[str, Any] | None) -> ModelDeploymentStatus | None:
    """The stored status, or None when it is absent or not ours to read (then rewrite it)."""
    if not raw:
        return None
    try:
        return ModelDeploymentStatus.model_validate(dict(raw))
    except ValueError:
        return None


def status_patch(
    new: ModelDeploymentStatus, previous: ModelDeploymentStatus | None
) -> dict[str, Any] | None:
    """The merge patch for `.status`, or None when nothing changed (a no-op resync writes
    nothing). Fields are compared as models, so timestamps compare by value, not spelling."""
    if previous is not None and new == previous:
        return None
    wire = new.model_dump(by_alias=True, mode="json", exclude_none=True)
    if previous is not None:
        old = previous.model_dump(by_alias=True, mode="json", exclude_none=True)
        changed = {k: v for k, v in wire.items() if old.get(k) != v}
        # Fields that disappeared must be nulled explicitly in a merge patch.
        changed |= {k: None for k in old if k not in wire}
        return changed
    return wire
