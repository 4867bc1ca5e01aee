"""The chart gives the webhook exactly what it needs: read policies and namespace labels,
patch one named webhook configuration, and nothing that would let it create or delete one."""

from __future__ import annotations

import pytest

from sovereign_operator.settings import WebhookSettings
from tests.unit.operator.test_chart import CHART, cluster_role_rules, grants

pytestmark = pytest.mark.unit


def test_policies_and_namespace_labels_are_read_never_written() -> None:
    rules = cluster_role_rules()
    assert grants(rules, "sovereign.dev", "modelpolicies") == {"list", "watch"}
    assert grants(rules, "", "namespaces") == {"list", "watch"}


def test_only_the_charts_own_webhook_configuration_may_be_patched() -> None:
    rules = [r for r in cluster_role_rules() if "validatingwebhookconfigurations" in r["resources"]]
    assert len(rules) == 1
    (rule,) = rules
    assert set(rule["verbs"]) == {"get", "patch"}
    assert rule["resourceNames"] == ['{{ include "sovereign-operator.fullname" . }}']


def test_the_chart_creates_the_configuration_without_webhooks_and_runs_the_operator_with_it() -> (
    None
):
    template = (CHART / "templates" / "webhook.yaml").read_text()
    assert "kind: ValidatingWebhookConfiguration" in template
    # An upgrade must not reset what the operator filled in.
    assert "webhooks:" not in template
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert '--webhook-configuration={{ include "sovereign-operator.fullname" . }}' in deployment
    assert "--webhook-cert-dir=" + str(WebhookSettings().cert_dir) in deployment
