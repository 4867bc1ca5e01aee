"""The operator with its audit trail on, against the local control plane.

The session's operator is restarted for this module with `--audit-dir`, its signing key
read from a Secret through the chart's RBAC, a real syslog receiver on loopback, short
checkpoint intervals and `audit.failurePolicy: pause`; it is restored afterwards. The
tests read the log the operator writes, verify it with the public key it publishes, kill
and restart it, take the syslog receiver down and bring it back, and build the report.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sovereign_operator.audit.checkpoint import (
    CONFIGMAP_LATEST_CHECKPOINT,
    CONFIGMAP_PUBLIC_KEY,
    generate_key_files,
)
from sovereign_operator.audit_hooks import DEFAULT_CONFIGMAP, LOG_NAME
from sovereign_operator.commands.audit import verify_command
from sovereign_operator.commands.report import report_command
from sovereign_operator.local import NAMESPACE, OperatorProcess
from tests.integration.operator.conftest import (
    DIGEST,
    OPERATOR_USER,
    Md,
    model_deployment,
    requests_by,
    wait_for,
)
from tests.unit.audit.test_sinks_remote import SyslogReceiver, free_port

pytestmark = pytest.mark.integration

KEY_SECRET = "sovereign-audit-key"
CHILD_KINDS = {"ServiceAccount", "Service", "NetworkPolicy", "PodDisruptionBudget", "Deployment"}


@dataclass
class Syslog:
    """A real syslog receiver on a fixed loopback port that can go down and come back."""

    port: int = field(default_factory=free_port)
    receivers: list[SyslogReceiver] = field(default_factory=list)

    def up(self) -> None:
        self.receivers.append(SyslogReceiver(self.port))

    def down(self) -> None:
        """Close the port and every connection, like a receiver that went away."""
        self.receivers[-1].close()

    def seqs(self) -> set[int]:
        return {seq for receiver in self.receivers for seq in receiver.seqs()}


@dataclass
class Audited:
    operator: OperatorProcess
    log_dir: Path
    public_key: Path
    syslog: Syslog
    core: k8s.CoreV1Api
    extra: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.log_dir / LOG_NAME

    def records(self) -> list[dict[str, Any]]:
        lines = self.log.read_bytes().splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines]

    def about(self, namespace: str, name: str, action: str = "apply") -> list[dict[str, Any]]:
        return [
            r
            for r in self.records()
            if r.get("action") == action
            and (r.get("details") or {}).get("deployment", {}).get("namespace") == namespace
            and r["details"]["deployment"]["name"] == name
        ]

    def published(self) -> dict[str, str]:
        configmap = self.core.read_namespaced_config_map(DEFAULT_CONFIGMAP, NAMESPACE)
        return dict(configmap.data or {})

    def verify(self, *extra: str) -> Any:
        files = sorted(str(p) for p in self.log_dir.glob(f"{LOG_NAME}*"))
        return CliRunner().invoke(
            verify_command, [*files, "--public-key", str(self.public_key), *extra]
        )


def _create_key_secret(core: k8s.CoreV1Api, private_key: Path) -> None:
    body: Any = {
        "metadata": {"name": KEY_SECRET},
        "data": {"key.pem": base64.b64encode(private_key.read_bytes()).decode()},
    }
    try:
        core.delete_namespaced_secret(KEY_SECRET, NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise
    core.create_namespaced_secret(NAMESPACE, body)


@pytest.fixture(scope="module")
def audited(
    operator: OperatorProcess, api: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    """The session's operator, restarted with the audit trail on; restored afterwards."""
    keys = tmp_path_factory.mktemp("audit-keys")
    generate_key_files(keys / "key.pem", keys / "generated-pub.pem")
    core = k8s.CoreV1Api(api)
    _create_key_secret(core, keys / "key.pem")
    syslog = Syslog()
    syslog.up()
    log_dir = tmp_path_factory.mktemp("audit") / "log"
    original = operator.extra_args
    operator.stop()
    operator.extra_args = (
        *original,
        f"--audit-dir={log_dir}",
        f"--audit-signing-key-secret={KEY_SECRET}",
        f"--audit-syslog=127.0.0.1:{syslog.port}",
        "--audit-failure-policy=pause",
        "--audit-checkpoint-records=5",
        "--audit-checkpoint-seconds=2",
        "--resync-seconds=3",  # the last value wins: conditions follow sink health quickly
    )
    try:
        operator.start()
        # The operator publishes its public key; auditors take it from there, so do we.
        public = keys / "pub.pem"
        public.write_text(
            wait_for(lambda: _published_key(core), 30, "the public key in the audit ConfigMap")
        )
        assert public.read_text() == (keys / "generated-pub.pem").read_text()
        yield Audited(operator, log_dir, public, syslog, core)
    finally:
        operator.stop()
        operator.extra_args = original
        syslog.down()
        operator.start()


def _published_key(core: k8s.CoreV1Api) -> str | None:
    try:
        configmap = core.read_namespaced_config_map(DEFAULT_CONFIGMAP, NAMESPACE)
    except ApiException:
        return None
    return (configmap.data or {}).get(CONFIGMAP_PUBLIC_KEY)


def test_the_children_the_operator_applies_are_recorded_and_the_log_verifies(
    audited: Audited, cluster: Any, model_store: str, namespace: str, md: Md, tmp_path: Path
) -> None:
    md.create(model_deployment("audited", namespace))

    def every_child_applied() -> list[dict[str, Any]] | None:
        found = audited.about(namespace, "audited")
        return found if {r["object"]["kind"] for r in found} >= CHILD_KINDS else None

    applies = wait_for(every_child_applied, 60, "an apply record for every child")
    uid = md.get(namespace, "audited")["metadata"]["uid"]
    for record in applies:
        assert record["actor"] == {"kind": "operator", "username": "sovereign-operator"}
        assert record["object"]["namespace"] == namespace
        assert record["object"]["uid"], record
        assert record["model"] == {"source": "pvc://model-store/models/audited", "digest": DIGEST}
        assert record["details"]["deployment"]["uid"] == uid
        assert record["details"]["deployment"]["generation"] == 1
    engine = next(r for r in applies if r["object"]["kind"] == "Deployment")
    assert engine["object"]["generation"] == 1
    if cluster.state is not None:  # the local control plane keeps the API server's audit log
        # Each record names the very request in the API server's audit log.
        requests = {e["auditID"]: e for e in requests_by(cluster.state.logs, OPERATOR_USER)}
        for record in applies:
            request = requests[record["auditId"]]
            ref = request["objectRef"]
            assert (request["verb"], ref["namespace"], ref["name"]) == (
                "patch",
                namespace,
                record["object"]["name"],
            )
    md.wait_condition(namespace, "audited", "AuditSinkHealthy", "True", timeout=30)

    result = audited.verify()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK")
    # The newest checkpoint is published as an anchor the log must reach.
    anchor = tmp_path / "anchor.json"
    anchor.write_text(
        wait_for(
            lambda: audited.published().get(CONFIGMAP_LATEST_CHECKPOINT),
            30,
            "a checkpoint anchor in the ConfigMap",
        )
    )
    anchored = audited.verify("--anchor", str(anchor))
    assert anchored.exit_code == 0, anchored.output


def test_the_chain_continues_after_sigterm_and_sigkill(
    audited: Audited, model_store: str, namespace: str, md: Md
) -> None:
    md.create(model_deployment("restarted", namespace))
    wait_for(lambda: audited.about(namespace, "restarted"), 60, "the first apply records")

    audited.operator.stop()  # SIGTERM: a clean shutdown seals the log
    last = audited.records()[-1]
    assert last["type"] == "checkpoint"
    assert last["checkpoint"]["reason"] == "seal"
    audited.operator.start()
    md.patch_spec(namespace, "restarted", {"replicas": 2})
    wait_for(
        lambda: [r for r in audited.about(namespace, "restarted") if r["seq"] > last["seq"]],
        60,
        "an apply record after the restart",
    )

    audited.operator.stop(kill=True)  # SIGKILL: no seal, whatever was in flight is cut
    killed_at = audited.records()[-1]["seq"]
    audited.operator.start()
    md.patch_spec(namespace, "restarted", {"replicas": 1})
    wait_for(
        lambda: [r for r in audited.about(namespace, "restarted") if r["seq"] > killed_at],
        60,
        "an apply record after the kill",
    )

    records = audited.records()
    assert [r["seq"] for r in records] == list(range(len(records))), "a gap in the chain"
    for previous, record in itertools.pairwise(records):
        assert record["prevHash"] == previous["hash"]
    result = audited.verify()
    assert result.exit_code == 0, result.output


def test_a_syslog_outage_pauses_changes_and_loses_no_record(
    audited: Audited, model_store: str, namespace: str, md: Md, api: k8s.ApiClient
) -> None:
    apps = k8s.AppsV1Api(api)
    md.create(model_deployment("outage", namespace))
    wait_for(lambda: audited.about(namespace, "outage"), 60, "the first apply records")
    md.wait_condition(namespace, "outage", "AuditSinkHealthy", "True", timeout=30)

    audited.syslog.down()
    # Recorded and then undeliverable; or already held back, when a record of the
    # deployment's own start-up found the receiver gone first.
    md.patch_spec(namespace, "outage", {"replicas": 2})
    failing = md.wait_condition(namespace, "outage", "AuditSinkHealthy", "False", timeout=60)
    assert "syslog" in failing["message"]
    assert "changes are paused" in failing["message"]
    held = apps.read_namespaced_deployment("outage-engine", namespace).spec.replicas

    md.patch_spec(namespace, "outage", {"replicas": 3})  # must wait for the sink
    paused = wait_for(
        lambda: (
            c
            if (c := md.condition(namespace, "outage", "Progressing"))
            and c["reason"] == "AuditPaused"
            else None
        ),
        30,
        "Progressing=False AuditPaused",
    )
    assert "changes wait for the audit trail" in paused["message"]
    assert apps.read_namespaced_deployment("outage-engine", namespace).spec.replicas == held

    audited.syslog.up()
    md.wait_condition(namespace, "outage", "AuditSinkHealthy", "True", timeout=90)
    wait_for(
        lambda: apps.read_namespaced_deployment("outage-engine", namespace).spec.replicas == 3,
        30,
        "the paused change to be applied once the sink recovered",
    )

    # Every record, from the first, reached the receiver (at least once).
    def missing() -> list[int]:
        return sorted(set(range(audited.records()[-1]["seq"] + 1)) - audited.syslog.seqs())

    deadline = time.monotonic() + 60
    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not missing(), f"records never reached the syslog receiver: {missing()}"


def test_the_report_bundles_the_deployment_with_its_verified_history(
    audited: Audited,
    model_store: str,
    namespace: str,
    md: Md,
    cluster: Any,
    tmp_path: Path,
) -> None:
    md.create(model_deployment("reported", namespace))
    wait_for(
        lambda: len(audited.about(namespace, "reported")) >= len(CHILD_KINDS),
        60,
        "the apply records",
    )
    md.wait_condition(namespace, "reported", "AuditSinkHealthy", "True", timeout=30)
    result = CliRunner().invoke(
        report_command,
        [
            f"{namespace}/reported",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--audit-dir={audited.log_dir}",
            f"--public-key={audited.public_key}",
            f"--out-dir={tmp_path}",
        ],
    )
    assert result.exit_code == 0, result.output
    bundle = json.loads((tmp_path / f"{namespace}-reported.json").read_text())
    assert bundle["deployment"]["uid"] == md.get(namespace, "reported")["metadata"]["uid"]
    assert bundle["model"]["digest"] == DIGEST
    assert bundle["audit"]["verification"]["ok"]
    history = bundle["audit"]["history"]
    assert {h["object"].split("/")[0] for h in history if h["action"] == "apply"} >= CHILD_KINDS
    assert "AuditSinkHealthy" in {c["type"] for c in bundle["conditions"]}
    markdown = (tmp_path / f"{namespace}-reported.md").read_text()
    assert "Chain VERIFIED" in markdown
    assert f"ModelDeployment {namespace}/reported" in markdown


def test_an_admitted_create_is_recorded_with_the_callers_identity(
    audited: Audited, namespace: str, md: Md
) -> None:
    md.create(model_deployment("admitted", namespace))

    def admitted() -> list[dict[str, Any]]:
        return [
            r
            for r in audited.records()
            if r.get("actor", {}).get("kind") == "admission"
            and r["object"].get("namespace") == namespace
            and r["object"]["name"] == "admitted"
        ]

    record = wait_for(admitted, 30, "the admission record of the create")[0]
    assert record["action"] == "create"
    assert record["outcome"] == "allowed"
    assert record["actor"]["username"]
    assert "system:authenticated" in record["actor"]["groups"]
    assert record["model"] == {"source": "pvc://model-store/models/admitted", "digest": DIGEST}
    [change] = record["change"]
    assert change["path"] == "spec"
    assert change["new"]["model"]["digest"] == DIGEST
    assert "old" not in change
