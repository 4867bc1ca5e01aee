"""The admission decision (pure), the policy view over indexes, and the webhook configuration."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click
import kopf
import pytest
from click.testing import CliRunner

from sovereign_operator.admission import PolicyView, decide, other_namespace_gpus
from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.model_policy import ModelPolicySpec
from sovereign_operator.commands.webhook_options import webhook_options
from sovereign_operator.handlers.admission import WebhookStartError, start_webhook
from sovereign_operator.handlers.admission import register as register_admission
from sovereign_operator.handlers.model_deployment import MD_INDEX
from sovereign_operator.hooks import DeploymentKey, no_admission_audit
from sovereign_operator.policy import NamedPolicy
from sovereign_operator.policy_hook import (
    DEPLOYMENT_INDEX,
    NAMESPACE_INDEX,
    POLICY_INDEX,
    IndexedPolicies,
    UnreadablePolicy,
    read_policy,
)
from sovereign_operator.settings import OperatorConfig, WebhookSettings
from sovereign_operator.webhook_config import (
    HANDLER_PATH,
    WEBHOOK_NAME,
    WebhookTarget,
    build,
    client_config,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
IMAGE = "ghcr.io/sovereign-dev/sovereign-worker:0.1.0"
ENDPOINT = "https://minio.store:9000"
LABELS = {"kubernetes.io/metadata.name": "clinical", "tier": "regulated"}


def raw_spec(source: str = "s3://approved/llama", gpus: int = 1, **extra: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"source": source, "digest": DIGEST}
    if source.startswith("s3://"):
        model["s3"] = {"endpoint": ENDPOINT}
    return {"model": model, "resources": {"gpus": gpus}, **extra}


def approved_only(name: str = "approved-only", **rules: Any) -> NamedPolicy:
    spec = {
        "namespaceSelector": {"matchLabels": {"tier": "regulated"}},
        "models": {"allowedSources": [{"scheme": "s3", "prefixes": ["s3://approved/"]}]},
        **rules,
    }
    return NamedPolicy(name, ModelPolicySpec.model_validate(spec))


def view(*policies: NamedPolicy, labels: dict[str, str] | None = LABELS, **kw: Any) -> PolicyView:
    return PolicyView(policies=policies, namespace_labels=labels, **kw)


def run(operation: str, new: Any = None, old: Any = None, v: PolicyView | None = None) -> Any:
    return decide(
        operation,
        namespace="clinical",
        name="llm",
        old_spec=old,
        new_spec=new,
        view=v if v is not None else view(approved_only()),
        default_image=IMAGE,
    )


def test_a_compliant_create_is_admitted_and_names_the_policies_that_applied() -> None:
    decision = run("CREATE", raw_spec())
    assert decision.allowed
    assert decision.reason == "Compliant"
    assert decision.policies == ("approved-only",)


def test_a_source_outside_the_policy_is_refused_naming_policy_field_and_what_is_allowed() -> None:
    decision = run("CREATE", raw_spec("s3://elsewhere/llama"))
    assert not decision.allowed
    assert decision.reason == "PolicyViolation"
    assert "ModelDeployment clinical/llm" in decision.message
    assert "approved-only" in decision.message
    assert "spec.model.source" in decision.message
    assert "s3://approved/" in decision.message
    assert decision.policies == ("approved-only",)


def test_an_update_that_changes_the_spec_is_checked_and_one_that_does_not_is_admitted() -> None:
    bad = raw_spec("s3://elsewhere/llama")
    assert not run("UPDATE", bad, old=raw_spec()).allowed
    unchanged = run("UPDATE", bad, old=bad)
    assert unchanged.allowed
    assert unchanged.reason == "SpecUnchanged"


def test_delete_is_always_admitted() -> None:
    decision = run("DELETE", None, old=raw_spec("s3://elsewhere/llama"))
    assert decision.allowed
    assert decision.reason == "Deleted"


def test_namespaces_no_policy_selects_are_admitted() -> None:
    decision = run("CREATE", raw_spec("s3://elsewhere/x"), v=view(approved_only(), labels={}))
    assert decision.allowed
    assert decision.reason == "NoPolicy"
    assert run("CREATE", raw_spec("s3://elsewhere/x"), v=view()).reason == "NoPolicy"


def test_an_unreadable_policy_or_unknown_namespace_fails_closed() -> None:
    unreadable = PolicyView((), unreadable=("broken: spec.limits: bad",), namespace_labels=LABELS)
    decision = run("CREATE", raw_spec(), v=unreadable)
    assert not decision.allowed
    assert "broken" in decision.message
    unknown = run("CREATE", raw_spec(), v=view(approved_only(), labels=None))
    assert not unknown.allowed
    assert unknown.reason == "NamespaceUnknown"


def test_a_spec_the_models_refuse_is_refused_with_the_field() -> None:
    decision = run("CREATE", {"model": {"source": "s3://approved/x", "digest": DIGEST}})
    assert not decision.allowed
    assert decision.reason == "InvalidSpec"
    assert "spec." in decision.message


def test_the_namespace_gpu_ceiling_counts_the_other_deployments() -> None:
    capped = approved_only(limits={"maxGpusPerNamespace": 4})
    others = (raw_spec(gpus=2), raw_spec(gpus=1), {"not": "a spec"})
    assert other_namespace_gpus(others) == 3
    assert run("CREATE", raw_spec(gpus=1), v=view(capped, other_specs=others)).allowed
    refused = run("CREATE", raw_spec(gpus=2), v=view(capped, other_specs=others))
    assert not refused.allowed
    assert "maxGpusPerNamespace" in refused.message


# -- the policy hook over kopf-like indexes --------------------------------------------


class FakeIndex(dict[Any, list[Any]]):
    """kopf.Index is a mapping of key -> a store iterable of values."""


def indexes(
    policies: list[Any], namespaces: dict[str, dict[str, str]], deployments: dict[Any, Any]
) -> dict[str, Any]:
    return {
        POLICY_INDEX: FakeIndex({getattr(p, "name", "x"): [p] for p in policies}),
        NAMESPACE_INDEX: FakeIndex({k: [v] for k, v in namespaces.items()}),
        DEPLOYMENT_INDEX: FakeIndex({k: [{"spec": v}] for k, v in deployments.items()}),
    }


def hooked(*policies: Any, deployments: dict[Any, Any] | None = None) -> IndexedPolicies:
    hook = IndexedPolicies(IMAGE)
    hook.bind(
        indexes(
            list(policies),
            {"clinical": LABELS, "lab": {"tier": "open"}},
            deployments or {("clinical", "llm"): raw_spec(), ("lab", "toy"): raw_spec()},
        )
    )
    return hook


def verdict(
    hook: IndexedPolicies, source: str = "s3://approved/llama", ns: str = "clinical"
) -> Any:
    spec = ModelDeploymentSpec.model_validate(raw_spec(source))
    return asyncio.run(hook(DeploymentKey(ns, "llm", "uid"), spec))


def test_the_hook_reports_compliance_and_enforces_a_violation() -> None:
    hook = hooked(approved_only())
    ok = verdict(hook)
    assert (ok.status, ok.reason, ok.enforce) == ("True", "Compliant", False)
    bad = verdict(hook, "s3://elsewhere/llama")
    assert (bad.status, bad.reason, bad.enforce) == ("False", "PolicyViolation", True)
    assert "approved-only" in bad.message
    assert "spec.model.source" in bad.message
    assert verdict(hook, "s3://elsewhere/llama", ns="lab").reason == "NoPolicy"


def test_the_hook_fails_closed_on_an_unreadable_policy() -> None:
    hook = hooked(approved_only(), UnreadablePolicy("broken", "spec.limits: bad"))
    bad = verdict(hook)
    assert (bad.status, bad.enforce) == ("False", True)
    assert "broken" in bad.message


def test_trust_remote_code_is_allowed_only_when_every_applying_policy_allows_it() -> None:
    assert not verdict(hooked(approved_only())).allow_trust_remote_code
    assert verdict(hooked(approved_only(allowTrustRemoteCode=True))).allow_trust_remote_code


def test_a_policy_change_concerns_the_deployments_in_the_namespaces_it_selects() -> None:
    hook = hooked(approved_only())
    assert hook.selected_deployments(approved_only()) == [("clinical", "llm")]
    assert sorted(hook.deployments()) == [("clinical", "llm"), ("lab", "toy")]
    assert hook.deployments("lab") == [("lab", "toy")]


def test_the_view_holds_the_namespaces_other_deployments_when_a_ceiling_needs_them() -> None:
    deployments = {
        ("clinical", "llm"): raw_spec(gpus=8),
        ("clinical", "b"): raw_spec(gpus=2),
        ("lab", "c"): raw_spec(gpus=4),
    }
    capped = approved_only(limits={"maxGpusPerNamespace": 16})
    seen = hooked(capped, deployments=deployments).view("clinical", "llm")
    assert seen.other_specs == (raw_spec(gpus=2),)
    assert seen.namespace_labels == LABELS
    assert (
        hooked(approved_only(), deployments=deployments).view("clinical", "llm").other_specs == ()
    )


def test_read_policy_parses_once_and_reports_what_does_not_parse() -> None:
    good = read_policy({"metadata": {"name": "p"}, "spec": {"limits": {"maxGpusPerDeployment": 8}}})
    assert isinstance(good, NamedPolicy)
    assert good.spec.limits.max_gpus_per_deployment == 8
    bad = read_policy({"metadata": {"name": "q"}, "spec": {"limits": {"maxGpusPerDeployment": -1}}})
    assert isinstance(bad, UnreadablePolicy)
    assert "q" in str(bad)


# -- the ValidatingWebhookConfiguration -------------------------------------------------


def test_the_configuration_fails_closed_skips_the_operator_and_declares_no_dry_run_effects() -> (
    None
):
    served = {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}
    body = build(
        "sovereign-operator",
        client_config(WebhookTarget(), served),
        exempt_users=["system:serviceaccount:sovereign-system:sovereign-operator"],
    )
    (webhook,) = body["webhooks"]
    assert webhook["name"] == WEBHOOK_NAME
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "NoneOnDryRun"
    assert webhook["rules"][0]["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert webhook["rules"][0]["resources"] == ["modeldeployments"]
    assert webhook["clientConfig"] == {
        "url": f"https://127.0.0.1:9443/{HANDLER_PATH}",
        "caBundle": "Q0E=",
    }
    (condition,) = webhook["matchConditions"]
    assert condition["expression"] == (
        'request.userInfo.username != "system:serviceaccount:sovereign-system:sovereign-operator"'
    )


def test_in_a_cluster_the_webhook_is_reached_through_its_service() -> None:
    config = client_config(
        WebhookTarget("sovereign-system", "sovereign-operator-webhook"),
        {"url": "https://10.0.0.1:9443", "caBundle": "Q0E="},
    )
    assert config == {
        "service": {
            "namespace": "sovereign-system",
            "name": "sovereign-operator-webhook",
            "port": 443,
            "path": f"/{HANDLER_PATH}",
        },
        "caBundle": "Q0E=",
    }


def test_a_namespaced_operator_checks_only_its_namespaces() -> None:
    body = build("x", {"url": "https://h"}, exempt_users=[], namespaces=["b", "a"])
    selector = body["webhooks"][0]["namespaceSelector"]
    assert selector["matchExpressions"][0]["values"] == ["a", "b"]
    assert "matchConditions" not in body["webhooks"][0]


# -- `sovereign run`'s webhook options ---------------------------------------------------


def test_the_webhook_is_on_only_when_the_api_server_can_reach_it() -> None:
    seen: list[WebhookSettings | None] = []

    @click.command()
    @webhook_options
    def command(webhook: WebhookSettings | None) -> None:
        seen.append(webhook)

    runner = CliRunner()
    assert runner.invoke(command, []).exit_code == 0
    result = runner.invoke(
        command,
        ["--webhook-host=127.0.0.1", "--webhook-port=9555", "--webhook-cert-dir=/tmp/w"],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(command, ["--webhook-service=op-webhook", "--webhook-exempt-user=u"])
    assert result.exit_code == 0, result.output
    off, local, in_cluster = seen
    assert off is None
    assert local == WebhookSettings(port=9555, cert_dir=Path("/tmp/w"), host="127.0.0.1")
    assert in_cluster is not None
    assert (in_cluster.service, in_cluster.exempt_users) == ("op-webhook", ("u",))


def test_an_unwritable_certificate_folder_is_a_clear_start_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = OperatorConfig(webhook=WebhookSettings(cert_dir=blocker / "certs", host="127.0.0.1"))
    with pytest.raises(WebhookStartError, match=r"--webhook-cert-dir .*give a writable folder"):
        asyncio.run(start_webhook(kopf.OperatorSettings(), config, api=None))  # type: ignore[arg-type]


def test_kopfs_error_line_for_a_refusal_is_dropped_and_real_errors_are_kept() -> None:
    registry = kopf.OperatorRegistry()
    register_admission(registry, IndexedPolicies(IMAGE), no_admission_audit)
    kopf_log = logging.getLogger("kopf.objects")
    refusal = kopf_log.makeRecord(
        "kopf.objects",
        logging.ERROR,
        __file__,
        1,
        "Webhook 'validate-model-deployment' failed permanently: refused",
        (),
        None,
    )
    crash = kopf_log.makeRecord(
        "kopf.objects", logging.ERROR, __file__, 1, "Handler 'x' failed with an exception", (), None
    )
    assert not kopf_log.filter(refusal)
    assert kopf_log.filter(crash)
    assert len(registry._webhooks.get_all_handlers()) == 1


def test_the_hook_reads_the_deployment_index_the_handlers_fill() -> None:
    assert DEPLOYMENT_INDEX == MD_INDEX
