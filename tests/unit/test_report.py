"""`sovereign report`: the evidence bundle from a real, verified audit log and a policy."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sovereign_operator.api.model_policy import ModelPolicy
from sovereign_operator.audit.checkpoint import generate_key_files, load_public_keys
from sovereign_operator.audit.verify import verify_files
from sovereign_operator.audit_hooks import AuditSettings, OperatorAudit, open_trail
from sovereign_operator.commands.report import (
    build_bundle,
    image_identity,
    log_files,
    read_records,
    render_markdown,
    report_command,
)
from sovereign_operator.hooks import AdmissionRecord, AdmissionUser, DeploymentKey, OperatorAction
from sovereign_operator.policy import NamedPolicy

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
SOURCE = "pvc://model-store/meta-llama/Llama-3.1-8B"
PINNED = "registry.internal.example/ai/vllm@sha256:" + "cd" * 32


def md(image: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"source": SOURCE, "digest": DIGEST},
        "resources": {"gpus": 1},
    }
    if image:
        spec["engine"] = {"image": image}
    return {
        "metadata": {"namespace": "clinical-ai", "name": "llama", "uid": "u-1", "generation": 2},
        "spec": spec,
        "status": {
            "observedGeneration": 2,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReplicasAvailable",
                    "message": "1/1 | available",
                    "lastTransitionTime": "2026-11-28T11:00:00Z",
                }
            ],
        },
    }


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, Path]:
    """An audit log with records about clinical-ai/llama and about another deployment."""
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    generate_key_files(private, public)
    settings = AuditSettings(tmp_path / "audit", signing_key=private, checkpoint_records=3)
    audit = OperatorAudit(open_trail(settings))
    llama, other = DeploymentKey("clinical-ai", "llama", "u-1"), DeploymentKey("other", "x", "u-2")

    async def record() -> None:
        await audit.record_admission(
            AdmissionRecord(
                operation="CREATE",
                user=AdmissionUser("alice", "a-1", ("clinical",)),
                namespace="clinical-ai",
                name="llama",
                uid="",
                generation=None,
                allowed=True,
                reason="Compliant",
                message="",
                policies=("regulated-workloads",),
                old_spec=None,
                new_spec=md()["spec"],
                time=NOW,
            )
        )
        for key in (llama, other):
            await audit.record_action(
                OperatorAction(
                    key, "apply", "Deployment/llama-engine", "missing", model_source=SOURCE
                )
            )
        await audit.record_action(
            OperatorAction(
                llama, "condition", "Ready", "AllReplicasAvailable", "", NOW, {"status": "True"}
            )
        )

    asyncio.run(record())
    audit.close()
    return settings.log_dir, public


def bundle_for(log_dir: Path, public: Path, **overrides: Any) -> dict[str, Any]:
    files = log_files(log_dir)
    policy = yaml.safe_load((ROOT / "examples" / "modelpolicy-regulated.yaml").read_text())
    inputs: dict[str, Any] = {
        "md": md(),
        "policies": [NamedPolicy.from_resource(ModelPolicy.model_validate(policy))],
        "namespace_labels": {"data-classification": "restricted"},
        "other_namespace_gpus": 0,
        "default_image": "vllm/vllm-openai:v0.32.0",
        "records": read_records(files),
        "verified": verify_files(files, load_public_keys(public.read_bytes())),
        "now": NOW,
    }
    inputs.update(overrides)
    return build_bundle(**inputs)


def test_the_bundle_has_the_model_image_policies_conditions_and_verified_history(
    log: tuple[Path, Path],
) -> None:
    bundle = bundle_for(*log)
    assert bundle["model"] == {"source": SOURCE, "digest": DIGEST, "servedName": None}
    assert bundle["engine"]["reference"] == "vllm/vllm-openai:v0.32.0"
    assert not bundle["engine"]["pinned"]
    policies = bundle["policies"]
    assert policies["evaluated"]
    assert not policies["compliant"]
    [regulated] = policies["applied"]
    assert regulated["name"] == "regulated-workloads"
    assert regulated["verdict"] == "violated"
    assert {v["field"] for v in regulated["violations"]} >= {"spec.engine.image"}
    assert [c["type"] for c in bundle["conditions"]] == ["Ready"]
    verification = bundle["audit"]["verification"]
    assert verification["ok"], verification
    assert verification["checkpoints"] >= 1
    history = bundle["audit"]["history"]
    # The other deployment's apply is left out; admission, apply and condition are in.
    assert [h["action"] for h in history] == ["create", "apply", "condition"]
    assert history[0]["actor"] == {"kind": "admission", "username": "alice", "groups": ["clinical"]}
    assert history[0]["change"][0]["path"] == "spec"
    assert history[1]["object"] == "Deployment/llama-engine"
    assert [h["seq"] for h in history] == sorted(h["seq"] for h in history)
    json.dumps(bundle)  # JSON-ready as it is


def test_markdown_shows_the_same_facts(log: tuple[Path, Path]) -> None:
    text = render_markdown(bundle_for(*log))
    assert text.startswith("# Evidence bundle: ModelDeployment clinical-ai/llama\n")
    assert f"- digest: `{DIGEST}`" in text
    assert "| regulated-workloads | violated |" in text
    assert "Chain VERIFIED" in text
    assert "| Ready | True | AllReplicasAvailable | 1/1 \\| available |" in text
    assert "alice (admission)" in text
    assert 'status.conditions[Ready].status: - -> "True"' in text


def test_a_pinned_image_shows_its_digest() -> None:
    assert image_identity(PINNED) == {
        "reference": PINNED,
        "digest": "sha256:" + "cd" * 32,
        "pinned": True,
    }


def test_a_tampered_log_is_reported_not_verified(log: tuple[Path, Path]) -> None:
    log_dir, public = log
    active = log_dir / "audit.log"
    active.write_bytes(active.read_bytes().replace(b'"missing"', b'"mis5ing"', 1))
    bundle = bundle_for(log_dir, public)
    verification = bundle["audit"]["verification"]
    assert not verification["ok"]
    assert "line" in verification["failure"]
    assert "Chain NOT VERIFIED" in render_markdown(bundle)


def test_an_unparseable_spec_is_reported_not_evaluated(log: tuple[Path, Path]) -> None:
    broken = md()
    broken["spec"]["resources"] = {"gpus": "many"}
    bundle = bundle_for(*log, md=broken)
    assert not bundle["policies"]["evaluated"]
    assert "spec.resources.gpus" in bundle["policies"]["error"]


def test_the_target_must_be_namespace_slash_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(report_command, ["llama", "--audit-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "NAMESPACE/NAME" in result.output


def test_an_empty_audit_dir_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(report_command, ["ns/llama", "--audit-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no audit.log" in result.output
