"""The operator's audit hooks: what reconcile and the webhook report, as audit records.

`hooks.py` defines what the operator tells the audit trail (an `OperatorAction` for every
child written or deleted, every condition transition and every scale decision; an
`AdmissionRecord` for every admission decision) without importing `audit/`. This module
maps those onto `audit.record.AuditEvent`s and records them through one `AuditTrail`, and
reports the trail's sink health as the AuditSinkHealthy condition. It talks to no
Kubernetes API: `audit_wiring.py` reads the key Secret and publishes the public key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, cast

from sovereign_operator.audit.canonical import JsonValue
from sovereign_operator.audit.checkpoint import CheckpointPolicy, Signer
from sovereign_operator.audit.diff import ABSENT, FieldChange, spec_diff
from sovereign_operator.audit.forwarding import HttpTarget, SyslogTarget
from sovereign_operator.audit.health import FailurePolicy
from sovereign_operator.audit.record import (
    Action,
    Actor,
    ActorKind,
    AuditEvent,
    ModelIdentity,
    ObjectRef,
)
from sovereign_operator.audit.trail import AuditConfig, AuditTrail, AuditUnavailable
from sovereign_operator.hooks import (
    AdmissionRecord,
    AuditHealthReport,
    DeploymentKey,
    Hooks,
    OperatorAction,
)

log = logging.getLogger(__name__)

LOG_NAME: Final = "audit.log"
DEFAULT_CONFIGMAP: Final = "sovereign-audit-public-key"
SECRET_DATA_KEY: Final = "key.pem"  # noqa: S105 - a data key name, not a secret
"""The data key of the signing-key Secret (`sovereign audit keygen` prints the command)."""
OPERATOR_USER: Final = "sovereign-operator"
MODEL_DEPLOYMENT: Final = "ModelDeployment"


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail as `sovereign run` configures it (the chart's `audit:` values)."""

    log_dir: Path
    """Holds audit.log, its rotated files and the forwarding spools; a PVC in production."""
    signing_key: Path | None = None
    """A PEM ed25519 private key file, e.g. the key Secret mounted into the pod."""
    signing_key_secret: str | None = None
    """Or the name of a Secret in the operator's namespace holding `key.pem`."""
    checkpoint_records: int = 1000
    checkpoint_seconds: float = 60.0
    stdout: bool = False
    syslog: str | None = None
    """HOST:PORT of an RFC 5424 receiver over TCP."""
    http_url: str | None = None
    failure_policy: FailurePolicy = FailurePolicy.PAUSE
    public_key_configmap: str = DEFAULT_CONFIGMAP
    rotate_bytes: int = 64 * 1024 * 1024

    @property
    def log_file(self) -> Path:
        return self.log_dir / LOG_NAME

    def config(self) -> AuditConfig:
        """The audit library's config; raises ValueError naming the setting that is wrong."""
        if self.signing_key is not None and self.signing_key_secret is not None:
            raise ValueError(
                "audit: give the signing key as a file (--audit-signing-key) or a Secret "
                "(--audit-signing-key-secret), not both"
            )
        return AuditConfig(
            file=self.log_file,
            rotate_bytes=self.rotate_bytes,
            stdout=self.stdout,
            syslog=parse_syslog(self.syslog) if self.syslog else None,
            http=HttpTarget(self.http_url) if self.http_url else None,
            signing_key=self.signing_key,
            checkpoints=CheckpointPolicy(self.checkpoint_records, self.checkpoint_seconds),
            failure_policy=self.failure_policy,
        )


def parse_syslog(address: str) -> SyslogTarget:
    """`HOST:PORT` (`[v6]:PORT` for IPv6) -> a syslog target."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"audit syslog address must be HOST:PORT (e.g. siem.corp:6514), not {address!r}"
        )
    return SyslogTarget(host, int(port))


def open_trail(settings: AuditSettings, signer: Signer | None = None) -> AuditTrail:
    """Open (or continue) the trail in `settings.log_dir`; `signer` overrides the key file."""
    return AuditTrail.open(settings.config(), signer=signer)


# -- operator actions ---------------------------------------------------------------------


def _deployment_ref(key: DeploymentKey, generation: int | None) -> ObjectRef:
    return ObjectRef(MODEL_DEPLOYMENT, key.name, key.namespace, key.uid or None, generation)


def _is_scale(action: OperatorAction) -> bool:
    """A write of the scale subresource: the autoscaler's (target `ModelDeployment/NAME/scale`)."""
    return action.target.endswith("/scale") or str(action.verb) == "scale"


def _target_ref(action: OperatorAction) -> ObjectRef:
    """The object acted on: the child named `Kind/name`, or the ModelDeployment itself."""
    kind, slash, name = action.target.partition("/")
    if action.verb in ("apply", "delete") and slash and not _is_scale(action):
        return ObjectRef(
            kind, name, action.deployment.namespace, action.target_uid, action.target_generation
        )
    return _deployment_ref(action.deployment, action.generation)


def _operator_change(action: OperatorAction) -> tuple[FieldChange, ...]:
    if _is_scale(action):
        sides = {
            side: int(value)
            for side, key in (("old", "from"), ("new", "to"))
            if (value := action.extra.get(key, "")).isdigit()
        }
        return (FieldChange("spec.replicas", **sides),)
    if action.verb == "condition":
        previous = action.extra.get("previous") or ABSENT
        new = action.extra.get("status", ABSENT)
        return (FieldChange(f"status.conditions[{action.target}].status", previous, new),)
    if action.verb == "apply" and action.detail:
        # Drift repair: the fields found changed on the cluster and restored.
        return tuple(FieldChange(path.strip()) for path in action.detail.split(","))
    return ()


def operator_event(action: OperatorAction) -> AuditEvent:
    """The audit record of one thing the operator (or its autoscaler) did or found."""
    scale = _is_scale(action)
    kind = ActorKind.AUTOSCALER if scale else ActorKind.OPERATOR
    deployment = _deployment_ref(action.deployment, action.generation).to_wire()
    details: dict[str, JsonValue] = {"deployment": deployment, "target": action.target}
    if action.detail:
        details["detail"] = action.detail
    details.update({k: v for k, v in action.extra.items() if k not in ("status", "previous")})
    model = ModelIdentity(action.model_source, action.model_digest) if action.model_source else None
    return AuditEvent(
        actor=Actor(kind, OPERATOR_USER),
        action=Action.SCALE.value if scale else str(action.verb),
        object=_target_ref(action),
        change=_operator_change(action),
        model=model,
        reason=action.reason,
        outcome="succeeded" if scale or action.verb in ("apply", "delete") else None,
        audit_id=action.audit_id,
        details=details,
    )


# -- admission decisions ------------------------------------------------------------------


def _model_of(spec: Mapping[str, Any] | None) -> ModelIdentity | None:
    model = (spec or {}).get("model")
    if not isinstance(model, Mapping) or not model.get("source"):
        return None
    digest = model.get("digest")
    return ModelIdentity(str(model["source"]), str(digest) if digest else None)


def admission_event(record: AdmissionRecord) -> AuditEvent:
    """The audit record of one admission decision: who asked, for what change, the answer."""
    user = record.user
    actor = Actor(ActorKind.ADMISSION, user.username, user.uid or None, tuple(user.groups))
    old = cast("Mapping[str, JsonValue] | None", record.old_spec)
    new = cast("Mapping[str, JsonValue] | None", record.new_spec)
    details: dict[str, JsonValue] = {"decision": record.reason, "policies": list(record.policies)}
    if record.request_uid:
        details["requestUid"] = record.request_uid
    reason = f"{record.reason}: {record.message}" if record.message else record.reason
    return AuditEvent(
        actor=actor,
        action=record.operation.lower(),
        object=ObjectRef(
            MODEL_DEPLOYMENT, record.name, record.namespace, record.uid or None, record.generation
        ),
        change=spec_diff(old, new),
        model=_model_of(record.new_spec) or _model_of(record.old_spec),
        reason=reason,
        outcome="allowed" if record.allowed else "denied",
        audit_id=record.audit_id or None,
        details=details,
    )


# -- the hooks ----------------------------------------------------------------------------


class OperatorAudit:
    """The trail behind the operator's hooks: records actions and decisions, reports health."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    async def record_action(self, action: OperatorAction) -> None:
        await self._record(operator_event(action))

    async def record_admission(self, record: AdmissionRecord) -> None:
        await self._record(admission_event(record))

    async def _record(self, event: AuditEvent) -> None:
        try:
            await self.trail.arecord_event(event)
        except AuditUnavailable as error:
            # The record stays queued, in order, and is written when the disk recovers;
            # AuditSinkHealthy shows the failure and `pause` stops further changes.
            log.error("audit: %s", error)  # noqa: TRY400 - expected, no traceback

    def health(self) -> AuditHealthReport:
        """AuditSinkHealthy from the sinks' state; `pause` when failing under that policy."""
        condition = self.trail.health().condition()
        return AuditHealthReport(
            status=condition.status,
            reason=condition.reason,
            message=condition.message,
            pause=self.trail.should_pause_changes(),
        )

    def hooks(self, base: Hooks) -> Hooks:
        """`base` with the audit seams wired to this trail."""
        return replace(
            base,
            audit=self.record_action,
            audit_health=self.health,
            admission_audit=self.record_admission,
        )

    def close(self) -> None:
        """Seal the log (a signed checkpoint) and let forwarders deliver what they hold."""
        self.trail.close()
