"""audit_hooks: operator actions and admission decisions become the right audit records,
the trail continues across restarts, and a failing sink shows and pauses changes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import click
import pytest
from click.testing import CliRunner

from sovereign_operator.audit.checkpoint import (
    CheckpointPolicy,
    Signer,
    generate_key_files,
    load_public_keys,
)
from sovereign_operator.audit.forwarding import Backoff, SyslogSink, SyslogTarget
from sovereign_operator.audit.health import CONDITION_TYPE, FailurePolicy
from sovereign_operator.audit.record import ActorKind
from sovereign_operator.audit.sinks import FileSink
from sovereign_operator.audit.trail import AuditTrail
from sovereign_operator.audit.verify import verify_files
from sovereign_operator.audit_hooks import (
    AuditSettings,
    OperatorAudit,
    admission_event,
    open_trail,
    operator_event,
    parse_syslog,
)
from sovereign_operator.commands.audit import verify_command
from sovereign_operator.commands.audit_options import audit_settings
from sovereign_operator.hooks import (
    AdmissionRecord,
    AdmissionUser,
    AuditHealthReport,
    DeploymentKey,
    Hooks,
    OperatorAction,
)
from sovereign_operator.reconcile import ReconcileContext, reconcile
from sovereign_operator.status import AUDIT_SINK_HEALTHY
from tests.unit.operator.fakes import DIGEST, MD_UID, FakeCluster, md_body

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
KEY = DeploymentKey("clinical-ai", "llama", MD_UID)
SOURCE = "pvc://model-store/meta-llama/Llama-3.1-8B"


def wire(event: Any) -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads(json.dumps(event.to_wire())))


def test_an_apply_names_the_child_with_its_uid_generation_owner_and_model() -> None:
    action = OperatorAction(
        KEY,
        "apply",
        "Deployment/llama-engine",
        "missing",
        time=NOW,
        generation=3,
        model_source=SOURCE,
        model_digest=DIGEST,
        target_uid="child-uid",
        target_generation=1,
        audit_id="0d4c5a3e-5f0b-4c1e-9a53-3f1f1b0f6a10",
    )
    record = wire(operator_event(action))
    assert record["actor"] == {"kind": "operator", "username": "sovereign-operator"}
    # The same request in the API server's audit log.
    assert record["auditId"] == "0d4c5a3e-5f0b-4c1e-9a53-3f1f1b0f6a10"
    assert record["action"] == "apply"
    assert record["object"] == {
        "kind": "Deployment",
        "name": "llama-engine",
        "namespace": "clinical-ai",
        "uid": "child-uid",
        "generation": 1,
    }
    assert record["model"] == {"source": SOURCE, "digest": DIGEST}
    assert record["reason"] == "missing"
    assert record["outcome"] == "succeeded"
    assert record["details"]["deployment"] == {
        "kind": "ModelDeployment",
        "name": "llama",
        "namespace": "clinical-ai",
        "uid": MD_UID,
        "generation": 3,
    }
    assert "change" not in record


def test_a_drift_repair_lists_the_restored_fields() -> None:
    action = OperatorAction(
        KEY, "apply", "Service/llama", "drifted", "spec.ports, metadata.labels.app", NOW
    )
    record = wire(operator_event(action))
    assert record["change"] == [{"path": "spec.ports"}, {"path": "metadata.labels.app"}]
    assert record["details"]["detail"] == "spec.ports, metadata.labels.app"


def test_a_condition_transition_is_a_change_of_the_deployment_itself() -> None:
    action = OperatorAction(
        KEY,
        "condition",
        "Ready",
        "AllReplicasAvailable",
        "1/1 engine replicas available",
        NOW,
        {"status": "True", "previous": "False"},
        generation=2,
    )
    record = wire(operator_event(action))
    assert record["object"]["kind"] == "ModelDeployment"
    assert record["object"]["generation"] == 2
    assert record["change"] == [
        {"path": "status.conditions[Ready].status", "old": "False", "new": "True"}
    ]
    assert "outcome" not in record
    first = wire(
        operator_event(
            OperatorAction(
                KEY, "condition", "Degraded", "X", "", NOW, {"status": "True", "previous": ""}
            )
        )
    )
    assert first["change"] == [{"path": "status.conditions[Degraded].status", "new": "True"}]


def test_a_scale_decision_is_the_autoscalers_change_of_replicas() -> None:
    # As autoscaler_bridge.audit_record builds it.
    action = OperatorAction(
        KEY,
        "apply",
        "ModelDeployment/llama/scale",
        "Autoscaled",
        "queue depth 17 > 8 per replica",
        NOW,
        {"from": "1", "to": "2", "metric": "queueDepth"},
    )
    record = wire(operator_event(action))
    assert record["actor"] == {"kind": ActorKind.AUTOSCALER.value, "username": "sovereign-operator"}
    assert record["action"] == "scale"
    assert record["object"]["kind"] == "ModelDeployment"
    assert record["object"]["name"] == "llama"
    assert record["change"] == [{"path": "spec.replicas", "old": 1, "new": 2}]
    assert record["details"]["metric"] == "queueDepth"
    assert record["outcome"] == "succeeded"


def admission(**overrides: Any) -> AdmissionRecord:
    fields: dict[str, Any] = {
        "operation": "UPDATE",
        "user": AdmissionUser("alice", "u-1", ("clinical", "system:authenticated")),
        "namespace": "clinical-ai",
        "name": "llama",
        "uid": MD_UID,
        "generation": 4,
        "allowed": True,
        "reason": "Compliant",
        "message": "compliant with ModelPolicy eu",
        "policies": ("eu",),
        "old_spec": {"model": {"source": SOURCE, "digest": DIGEST}, "replicas": 1},
        "new_spec": {"model": {"source": SOURCE, "digest": DIGEST}, "replicas": 2},
        "time": NOW,
        "request_uid": "req-1",
        "audit_id": "audit-1",
    }
    fields.update(overrides)
    return AdmissionRecord(**fields)


def test_an_admission_records_the_caller_the_spec_diff_and_the_model() -> None:
    record = wire(admission_event(admission()))
    assert record["actor"] == {
        "kind": "admission",
        "username": "alice",
        "uid": "u-1",
        "groups": ["clinical", "system:authenticated"],
    }
    assert record["action"] == "update"
    assert record["outcome"] == "allowed"
    assert record["change"] == [{"path": "spec.replicas", "old": 1, "new": 2}]
    assert record["model"] == {"source": SOURCE, "digest": DIGEST}
    assert record["auditId"] == "audit-1"
    assert record["object"]["generation"] == 4
    assert record["details"] == {"decision": "Compliant", "policies": ["eu"], "requestUid": "req-1"}


def test_a_denied_create_records_the_whole_spec_and_the_refusal() -> None:
    spec = {"model": {"source": "s3://outside/model", "digest": DIGEST}}
    record = wire(
        admission_event(
            admission(
                operation="CREATE",
                user=AdmissionUser("mallory"),
                uid="",
                generation=None,
                allowed=False,
                reason="PolicyViolation",
                message="spec.model.source: not allowed",
                old_spec=None,
                new_spec=spec,
                audit_id="",
            )
        )
    )
    assert record["actor"] == {"kind": "admission", "username": "mallory"}
    assert record["outcome"] == "denied"
    assert record["change"] == [{"path": "spec", "new": spec}]
    assert record["reason"] == "PolicyViolation: spec.model.source: not allowed"
    assert "uid" not in record["object"]
    assert "auditId" not in record
    assert record["model"]["source"] == "s3://outside/model"


@pytest.mark.parametrize(
    ("address", "host", "port"), [("siem:514", "siem", 514), ("[::1]:6514", "::1", 6514)]
)
def test_syslog_addresses_parse(address: str, host: str, port: int) -> None:
    target = parse_syslog(address)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize("address", ["siem", "siem:", ":514", "siem:99999", "siem:x"])
def test_a_bad_syslog_address_says_what_is_expected(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_syslog(address)


def test_key_file_and_secret_exclude_each_other(tmp_path: Path) -> None:
    settings = AuditSettings(tmp_path, signing_key=tmp_path / "k.pem", signing_key_secret="s")
    with pytest.raises(ValueError, match="not both"):
        settings.config()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    generate_key_files(private, public)
    return private, public


def crash(trail: Any) -> None:
    """What a killed process leaves behind: no seal checkpoint, no writer thread (a live one
    would wake later to sign an idle checkpoint into a closed file), the file lock released."""
    trail._queue.put(None)
    trail._writer.join()
    trail._file.close()


def test_the_chain_continues_across_restarts_and_verifies(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    settings = AuditSettings(tmp_path / "audit", signing_key=private, checkpoint_records=2)
    action = OperatorAction(KEY, "apply", "Service/llama", "missing", time=NOW)

    first = OperatorAudit(open_trail(settings))
    asyncio.run(first.record_action(action))
    head = first.trail.head
    first.close()  # clean shutdown: sealed
    second = OperatorAudit(open_trail(settings))
    assert second.trail.head == first.trail.head
    asyncio.run(second.record_action(action))
    assert second.trail.head.next_seq > head.next_seq
    crash(second.trail)
    third = OperatorAudit(open_trail(settings))
    asyncio.run(third.record_action(action))
    third.close()

    result = verify_files(
        sorted(settings.log_dir.glob("audit.log*")), load_public_keys(public.read_bytes())
    )
    assert result.ok, result.failure
    lines = [json.loads(line) for line in settings.log_file.read_bytes().splitlines()]
    assert [r["seq"] for r in lines] == list(range(len(lines)))
    reasons = [r["checkpoint"]["reason"] for r in lines if r["type"] == "checkpoint"]
    assert "seal" in reasons
    assert "resume" in reasons  # after the crash the unsigned tail was signed at start-up
    cli = CliRunner().invoke(verify_command, [str(settings.log_file), "--public-key", str(public)])
    assert cli.exit_code == 0, cli.output


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_failing_sink_reports_unhealthy_and_pauses(tmp_path: Path) -> None:
    signer = Signer.from_file(_key(tmp_path))
    syslog = SyslogSink(
        SyslogTarget("127.0.0.1", closed_port(), timeout=0.2),
        tmp_path / "spool",
        backoff=Backoff(initial=0.01, maximum=0.05),
    )
    trail = AuditTrail(
        file_sink=FileSink(tmp_path / "audit.log"),
        forwarders=[syslog],
        signer=signer,
        checkpoints=CheckpointPolicy(),
        failure_policy=FailurePolicy.PAUSE,
    )
    audit = OperatorAudit(trail)
    try:
        assert audit.health() == AuditHealthReport(
            "True", "AllSinksDelivering", "every audit sink is delivering", pause=False
        )
        asyncio.run(audit.record_action(OperatorAction(KEY, "apply", "Service/llama", "missing")))
        deadline = time.monotonic() + 5
        while audit.health().status == "True" and time.monotonic() < deadline:
            time.sleep(0.01)
        report = audit.health()
        assert report.status == "False"
        assert report.reason == "SinkFailing"
        assert report.pause
        assert "syslog" in report.message
        assert "changes are paused" in report.message
        trail.failure_policy = FailurePolicy.CONTINUE
        assert not audit.health().pause
    finally:
        trail.close(drain_timeout=0)


def _key(tmp_path: Path) -> Path:
    generate_key_files(tmp_path / "key.pem", tmp_path / "pub.pem")
    return tmp_path / "key.pem"


def test_hooks_are_wired_to_the_trail(tmp_path: Path) -> None:
    audit = OperatorAudit(open_trail(AuditSettings(tmp_path)))
    try:
        hooks = audit.hooks(Hooks())
        assert hooks.audit == audit.record_action
        assert hooks.admission_audit == audit.record_admission
        assert hooks.audit_health() == audit.health()
    finally:
        audit.close()


def run_pass(cluster: FakeCluster, hooks: Hooks) -> Any:
    ctx = ReconcileContext(writer=cluster, now=lambda: NOW, hooks=hooks)
    return asyncio.run(reconcile(md_body(), cluster.observe(()), ctx))


def test_pause_applies_nothing_and_says_why() -> None:
    failing = AuditHealthReport(
        "False", "SinkFailing", "syslog: refused; changes are paused", pause=True
    )
    cluster = FakeCluster()
    outcome = run_pass(cluster, Hooks(audit_health=lambda: failing))
    assert outcome.actions == ()
    assert cluster.applied == []
    conditions = {c["type"]: c for c in next(iter(cluster.status.values()))["conditions"]}
    assert conditions[AUDIT_SINK_HEALTHY]["status"] == "False"
    assert conditions[AUDIT_SINK_HEALTHY]["message"] == failing.message
    assert conditions["Progressing"]["reason"] == "AuditPaused"
    assert "changes wait for the audit trail" in conditions["Progressing"]["message"]


def test_continue_applies_and_records_with_generation_and_model() -> None:
    failing = AuditHealthReport("False", "SinkFailing", "syslog: refused", pause=False)
    seen: list[OperatorAction] = []

    async def audit(action: OperatorAction) -> None:
        seen.append(action)

    cluster = FakeCluster()
    outcome = run_pass(cluster, Hooks(audit=audit, audit_health=lambda: failing))
    assert outcome.actions
    applies = [a for a in seen if a.verb == "apply"]
    assert len(applies) == len(outcome.actions)
    assert all(a.generation == 1 and a.model_digest == DIGEST for a in seen)
    assert all(a.target_uid for a in applies)
    assert AUDIT_SINK_HEALTHY == CONDITION_TYPE


def test_without_an_audit_trail_there_is_no_audit_condition() -> None:
    cluster = FakeCluster()
    run_pass(cluster, Hooks())
    types = {c["type"] for c in next(iter(cluster.status.values()))["conditions"]}
    assert AUDIT_SINK_HEALTHY not in types


def options(**given: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "audit_dir": None,
        "audit_signing_key": None,
        "audit_signing_key_secret": None,
        "audit_checkpoint_records": 1000,
        "audit_checkpoint_seconds": 60.0,
        "audit_stdout": False,
        "audit_syslog": None,
        "audit_http": None,
        "audit_failure_policy": "pause",
        "audit_public_key_configmap": "sovereign-audit-public-key",
    }
    return {**defaults, **given}


def test_run_options_become_audit_settings(tmp_path: Path) -> None:
    assert audit_settings(**options()) is None
    settings = audit_settings(
        **options(audit_dir=tmp_path, audit_syslog="siem:514", audit_failure_policy="continue")
    )
    assert settings is not None
    assert settings.log_file == tmp_path / "audit.log"
    assert settings.failure_policy is FailurePolicy.CONTINUE
    assert settings.config().syslog == parse_syslog("siem:514")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"audit_syslog": "siem:514"}, "need --audit-dir"),
        ({"audit_dir": Path("/x"), "audit_syslog": "siem"}, "HOST:PORT"),
        (
            {
                "audit_dir": Path("/x"),
                "audit_signing_key": Path("k"),
                "audit_signing_key_secret": "s",
            },
            "exclude each other",
        ),
    ],
)
def test_bad_run_options_name_the_fix(given: dict[str, Any], message: str) -> None:
    with pytest.raises(click.UsageError, match=message):
        audit_settings(**options(**given))
