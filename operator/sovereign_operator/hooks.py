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
from typing import Literal

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


AuditHook = Callable[[OperatorAction], Awaitable[None]]


async def no_audit(_action: OperatorAction) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """Everything reconcile calls out to; the defaults do nothing and claim nothing."""

    policy: PolicyHook = no_policy
    autoscaler: AutoscalerHook = no_autoscaler
    audit: AuditHook = no_audit
