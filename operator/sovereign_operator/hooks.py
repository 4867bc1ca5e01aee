"""Seams where policy, audit and the autoscaler plug into reconcile (pure interfaces).

Reconcile calls these at fixed points; the defaults here keep the operator complete on its
own. `policy.py` (ModelPolicy evaluation), `audit/` (records of every operator action) and
`autoscaling/` (the metrics loop) provide real implementations and are wired in
`commands/run.py`, so reconcile never imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sovereign_operator.api.model_deployment import ModelDeploymentSpec

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class DeploymentKey:
    """A ModelDeployment by namespace, name and uid (a re-created object has a new uid)."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PolicyVerdict:
    """What policy says about a spec, before anything is planned or applied."""

    status: ConditionStatus = "True"
    reason: str = "NotEvaluated"
    message: str = "no ModelPolicy evaluation is configured in this operator"
    allow_trust_remote_code: bool = False
    enforce: bool = False
    """True: the spec must not be served; reconcile changes nothing and reports why."""


PolicyHook = Callable[[DeploymentKey, ModelDeploymentSpec], Awaitable[PolicyVerdict]]


async def no_policy(_key: DeploymentKey, _spec: ModelDeploymentSpec) -> PolicyVerdict:
    return PolicyVerdict()


@dataclass(frozen=True)
class AutoscalerReport:
    """The AutoscalerActive condition as the autoscaling loop reports it."""

    status: ConditionStatus
    reason: str
    message: str


AutoscalerHook = Callable[[DeploymentKey, ModelDeploymentSpec], AutoscalerReport | None]


def no_autoscaler(_key: DeploymentKey, _spec: ModelDeploymentSpec) -> AutoscalerReport | None:
    """None: reconcile derives the condition from spec.scaling alone."""
    return None


@dataclass(frozen=True)
class OperatorAction:
    """One thing the operator did (or found) on the cluster, for the audit trail."""

    deployment: DeploymentKey
    verb: Literal["apply", "delete", "condition"]
    target: str
    """`Kind/name` of a child, or the condition type."""
    reason: str
    detail: str = ""
    time: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
    generation: int | None = None
    """The ModelDeployment's metadata.generation the pass acted on."""
    model_source: str | None = None
    model_digest: str | None = None
    target_uid: str | None = None
    """uid and generation of the child written, from the API server's answer."""
    target_generation: int | None = None
    audit_id: str | None = None
    """The API server's Audit-ID of the write: the same request in the API server's audit
    log. None for what was found rather than written (conditions)."""


AuditHook = Callable[[OperatorAction], Awaitable[None]]


async def no_audit(_action: OperatorAction) -> None:
    return None


@dataclass(frozen=True)
class AuditHealthReport:
    """The AuditSinkHealthy condition, and whether `audit.failurePolicy: pause` holds changes."""

    status: ConditionStatus
    reason: str
    message: str
    pause: bool = False
    """True: a sink fails under `pause`; reconcile applies nothing until it recovers."""


AuditHealthHook = Callable[[], AuditHealthReport | None]


def no_audit_health() -> AuditHealthReport | None:
    """None: no audit trail is configured, so no AuditSinkHealthy condition."""
    return None


@dataclass(frozen=True)
class AdmissionUser:
    """Who asked, as the API server authenticated them (the admission request's userInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdmissionRecord:
    """One admission decision on a ModelDeployment, handed to the audit trail.

    Dry runs are decided but never recorded (the webhook declares sideEffects NoneOnDryRun).
    """

    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user: AdmissionUser
    namespace: str
    name: str
    uid: str
    """The object's uid; empty on CREATE (the API server assigns it after admission)."""
    generation: int | None
    allowed: bool
    reason: str
    """Admitted: Compliant, NoPolicy, SpecUnchanged, Deleted, NotChecked. Refused: PolicyViolation,
    InvalidSpec, PolicyUnreadable, NamespaceUnknown (see `admission.decide`)."""
    message: str
    policies: tuple[str, ...]
    """The ModelPolicies that selected the namespace (empty when none did)."""
    old_spec: dict[str, Any] | None
    new_spec: dict[str, Any] | None
    time: datetime
    request_uid: str = ""
    """The AdmissionReview's request uid; the API server's audit event for the same request
    carries it as the `modeldeployments.validate.sovereign.dev/request-uid` annotation."""
    audit_id: str = ""
    """The API server's Audit-ID, if it ever sends one to webhooks (Kubernetes does not
    today, so this is empty; `request_uid` links the two logs instead)."""


AdmissionAuditHook = Callable[[AdmissionRecord], Awaitable[None]]


async def no_admission_audit(_record: AdmissionRecord) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """Everything reconcile calls out to; the defaults do nothing and claim nothing."""

    policy: PolicyHook = no_policy
    autoscaler: AutoscalerHook = no_autoscaler
    audit: AuditHook = no_audit
    audit_health: AuditHealthHook = no_audit_health
    admission_audit: AdmissionAuditHook = no_admission_audit
