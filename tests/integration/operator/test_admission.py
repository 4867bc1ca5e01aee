"""ModelPolicy at admission and in reconcile, on the local control plane.

The session operator serves its validating webhook on 127.0.0.1 (the API server runs on
this machine), registered by URL in the chart's ValidatingWebhookConfiguration with the CA
the operator issued. Users are real token identities of the API server: `alice` and
`mallory` are allowed to write ModelDeployments in the test's namespace (a RoleBinding),
and a ModelPolicy that selects only that namespace allows models from s3://approved/ only.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sovereign_operator.handlers.policies import STATUS_SECONDS
from sovereign_operator.local import RELEASE, OperatorProcess
from sovereign_operator.webhook_config import WEBHOOK_NAME
from tests.integration.helm import Helm
from tests.integration.operator.conftest import (
    DIGEST,
    GROUP,
    OPERATOR_USER,
    PLURAL,
    VERSION,
    Md,
    wait_for,
)

pytestmark = pytest.mark.integration

SCOPE_LABEL = "sovereign.dev/policy-scope"
# Quicker than the session operator's 20 s resync: a policy change must act on its own.
PROMPTLY = 15.0


def deployment(name: str, namespace: str, source: str, gpus: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "source": source,
                "digest": DIGEST,
                "s3": {"endpoint": "https://minio.model-store.svc:9000"},
            },
            "resources": {"gpus": gpus},
            "network": {"modelStoreCidrs": ["10.40.0.0/24"]},
        },
    }


def policy_body(name: str, namespace: str, prefix: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelPolicy",
        "metadata": {"name": name, "labels": {"sovereign.dev/test-namespace": namespace}},
        "spec": {
            "namespaceSelector": {"matchLabels": {SCOPE_LABEL: namespace}},
            "models": {"allowedSources": [{"scheme": "s3", "prefixes": [prefix]}]},
        },
    }


class Policy:
    def __init__(self, api: k8s.ApiClient, name: str, namespace: str) -> None:
        self.objects = k8s.CustomObjectsApi(api)
        self.name = name
        self.namespace = namespace

    def set_prefix(self, prefix: str) -> None:
        patch = {"spec": {"models": {"allowedSources": [{"scheme": "s3", "prefixes": [prefix]}]}}}
        self.objects.patch_cluster_custom_object(GROUP, VERSION, "modelpolicies", self.name, patch)

    def resource_version(self) -> str:
        body = self.objects.get_cluster_custom_object(GROUP, VERSION, "modelpolicies", self.name)
        return str(body["metadata"]["resourceVersion"])

    def wait_for_status(self, **expected: Any) -> dict[str, Any]:
        """The policy's status once its fields have `expected` values (the timer writes it)."""

        def matches() -> dict[str, Any] | None:
            body = self.objects.get_cluster_custom_object(
                GROUP, VERSION, "modelpolicies", self.name
            )
            status: dict[str, Any] = body.get("status") or {}
            return status if all(status.get(k) == v for k, v in expected.items()) else None

        return wait_for(matches, PROMPTLY, f"ModelPolicy {self.name} status {expected}")


@pytest.fixture
def policy(operator: OperatorProcess, api: k8s.ApiClient, namespace: str) -> Policy:
    """The namespace under an `approved-only` policy, writable by alice and mallory."""
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {SCOPE_LABEL: namespace}}})
    role: Any = {
        "metadata": {"name": "model-deployers"},
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [PLURAL],
                "verbs": ["create", "get", "list", "watch", "update", "patch", "delete"],
            }
        ],
    }
    binding: Any = {
        "metadata": {"name": "model-deployers"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "model-deployers",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
            for user in ("alice", "mallory")
        ],
    }
    rbac.create_namespaced_role(namespace, role)
    rbac.create_namespaced_role_binding(namespace, binding)
    name = f"approved-only-{namespace[-6:]}"  # policy names are at most 40 characters
    k8s.CustomObjectsApi(api).create_cluster_custom_object(
        GROUP, VERSION, "modelpolicies", policy_body(name, namespace, "s3://approved/")
    )
    # The namespace fixture deletes it (it carries the test-namespace label) after the
    # namespace's ModelDeployments.
    return Policy(api, name, namespace)


def create_as(client: k8s.ApiClient, body: dict[str, Any], *, dry_run: bool = False) -> None:
    kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
    k8s.CustomObjectsApi(client).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body, **kwargs
    )


def refusal(call: Callable[[], object]) -> ApiException | None:
    try:
        call()
    except ApiException as error:
        return error
    return None


def wait_until_enforced(mallory: k8s.ApiClient, namespace: str) -> ApiException:
    """The webhook is registered and the policy indexed: a dry run of a bad spec is refused.
    (The policy reaches the operator's index through a watch, a moment after it is created.)"""
    bad = deployment("probe", namespace, "s3://elsewhere/probe")
    return wait_for(
        lambda: refusal(lambda: create_as(mallory, bad, dry_run=True)), 30, "the policy to apply"
    )


def api_server_audit(logs: Path) -> list[dict[str, Any]]:
    """The API server's audit events (ResponseComplete), rotated files included."""
    return [
        entry
        for path in sorted(logs.glob("audit*.log"))
        for line in path.read_text().splitlines()
        if (entry := json.loads(line)).get("stage") == "ResponseComplete"
    ]


def test_alice_is_admitted_and_mallory_refused_with_the_policy_and_field_named(
    cluster: Any,
    policy: Policy,
    namespace: str,
    api: k8s.ApiClient,
    api_as: Callable[[str], k8s.ApiClient],
    md: Md,
    operator: OperatorProcess,
) -> None:
    alice, mallory = api_as("alice"), api_as("mallory")
    dry = wait_until_enforced(mallory, namespace)
    assert dry.status == 403

    # A dry run of a compliant spec is admitted and creates nothing.
    create_as(alice, deployment("dry", namespace, "s3://approved/models/dry"), dry_run=True)
    assert refusal(lambda: md.get(namespace, "dry")) is not None

    create_as(alice, deployment("llm", namespace, "s3://approved/models/llama"))
    compliant = md.wait_condition(namespace, "llm", "PolicyCompliant")
    assert compliant["reason"] == "Compliant"
    assert policy.name in compliant["message"]

    refused = refusal(
        lambda: create_as(mallory, deployment("exfil", namespace, "s3://elsewhere/llama"))
    )
    assert refused is not None
    assert refused.status == 403
    message = json.loads(refused.body or "{}")["message"]
    assert policy.name in message
    assert "spec.model.source" in message
    assert "s3://approved/" in message  # what is allowed
    assert "s3://elsewhere/llama" in message

    # Nothing half-created: no object, no children.
    gone = refusal(lambda: md.get(namespace, "exfil"))
    assert gone is not None
    assert gone.status == 404
    assert all(not items for items in md.children(namespace, "exfil").values())
    # The decision carried the caller's identity, and its request uid is in the API
    # server's audit event for the request: the two logs point at each other.
    line = next(
        line
        for line in operator.log.read_text(errors="replace").splitlines()
        if f"refused CREATE of {namespace}/exfil by mallory" in line
    )
    if cluster.state is not None:
        (entry,) = [
            e
            for e in api_server_audit(cluster.state.logs)
            if e["verb"] == "create"
            and e["user"]["username"] == "mallory"
            and e.get("objectRef", {}).get("name") == "exfil"
        ]
        request_uid = entry["annotations"][f"{WEBHOOK_NAME}/request-uid"]
        assert f"(request {request_uid})" in line

    # The same rule holds for a change: alice cannot move her deployment off the list.
    moved = refusal(
        lambda: k8s.CustomObjectsApi(alice).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "llm",
            {"spec": {"model": {"source": "s3://elsewhere/llama"}}},
        )
    )
    assert moved is not None
    assert moved.status == 403
    assert md.get(namespace, "llm")["spec"]["model"]["source"] == "s3://approved/models/llama"


def engine_gpus(api: k8s.ApiClient, namespace: str, name: str) -> str:
    apps = k8s.AppsV1Api(api)
    found: Any
    (found,) = apps.list_namespaced_deployment(
        namespace, label_selector=f"sovereign.dev/deployment={name}"
    ).items
    limits = found.spec.template.spec.containers[0].resources.limits or {}
    return str(limits.get("nvidia.com/gpu"))


def test_a_policy_tightened_later_marks_the_deployment_and_holds_new_rollouts(
    policy: Policy,
    namespace: str,
    kubectl: Any,
    api: k8s.ApiClient,
    api_as: Callable[[str], k8s.ApiClient],
    md: Md,
) -> None:
    alice = api_as("alice")
    wait_until_enforced(api_as("mallory"), namespace)
    create_as(alice, deployment("llm", namespace, "s3://approved/models/llama"))
    md.wait_condition(namespace, "llm", "Ready", timeout=90)
    assert engine_gpus(api, namespace, "llm") == "1"

    policy.set_prefix("s3://approved/eu-only/")
    broken = md.wait_condition(namespace, "llm", "PolicyCompliant", "False", timeout=PROMPTLY)
    assert broken["reason"] == "PolicyViolation"
    assert policy.name in broken["message"]
    assert "spec.model.source" in broken["message"]
    assert "s3://approved/eu-only/" in broken["message"]
    # What runs is kept.
    assert engine_gpus(api, namespace, "llm") == "1"
    # The policy's own status names what breaks it; `kubectl get mpol` counts it.
    status = policy.wait_for_status(selectedNamespaces=1, nonCompliantDeployments=1)
    compliant = {c["type"]: c for c in status["conditions"]}["DeploymentsCompliant"]
    assert compliant["status"] == "False"
    assert f"{namespace}/llm: " in compliant["message"]
    row = kubectl("get", "mpol", policy.name, "--no-headers").stdout.split()
    assert row[1:3] == ["1", "1"], row

    # A change that bypasses admission (the webhook skips the operator's own identity, as
    # its configuration says) still is not rolled out: reconcile checks policy again.
    config = k8s.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(RELEASE)
    (webhook,) = [w for w in config.webhooks or [] if w.name == WEBHOOK_NAME]
    assert webhook.failure_policy == "Fail"
    assert webhook.side_effects == "NoneOnDryRun"
    assert any(OPERATOR_USER in c.expression for c in webhook.match_conditions or [])
    as_operator = k8s.ApiClient(api.configuration)
    as_operator.set_default_header("Impersonate-User", OPERATOR_USER)
    try:
        k8s.CustomObjectsApi(as_operator).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "llm", {"spec": {"resources": {"gpus": 2}}}
        )
    finally:
        as_operator.close()  # type: ignore[no-untyped-call]
    generation = md.get(namespace, "llm")["metadata"]["generation"]
    wait_for(
        lambda: md.get(namespace, "llm")["status"].get("observedGeneration") == generation,
        PROMPTLY,
        "the operator to look at the new generation",
    )
    assert md.condition(namespace, "llm", "PolicyCompliant")["status"] == "False"  # type: ignore[index]
    assert engine_gpus(api, namespace, "llm") == "1"

    # Relabelling the namespace into and out of the policy's selector acts at once too.
    core = k8s.CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {SCOPE_LABEL: None}}})
    free = md.wait_condition(namespace, "llm", "PolicyCompliant", "True", timeout=PROMPTLY)
    assert free["reason"] == "NoPolicy"
    # No policy holds it any more: the held change rolls out.
    wait_for(lambda: engine_gpus(api, namespace, "llm") == "2", PROMPTLY, "the rollout to 2 GPUs")
    core.patch_namespace(namespace, {"metadata": {"labels": {SCOPE_LABEL: namespace}}})
    md.wait_condition(namespace, "llm", "PolicyCompliant", "False", timeout=PROMPTLY)

    # Relaxing the policy makes it compliant again, without waiting for a resync.
    policy.set_prefix("s3://approved/")
    relaxed = md.wait_condition(namespace, "llm", "PolicyCompliant", "True", timeout=PROMPTLY)
    assert relaxed["reason"] == "Compliant"
    policy.wait_for_status(selectedNamespaces=1, nonCompliantDeployments=0)
    # A round that finds nothing new writes nothing (the operator watches its own writes).
    version = policy.resource_version()
    time.sleep(STATUS_SECONDS + 2)
    assert policy.resource_version() == version


def test_a_chart_upgrade_keeps_what_the_operator_registered(
    operator: OperatorProcess, session_helm: Helm, api: k8s.ApiClient
) -> None:
    admission = k8s.AdmissionregistrationV1Api(api)

    def registered() -> Any:
        found = admission.read_validating_webhook_configuration(RELEASE).webhooks or []
        return next((w for w in found if w.name == WEBHOOK_NAME), None)

    before = wait_for(registered, 30, "the operator to register its webhook")
    session_helm.install_operator_chart()  # the chart leaves `webhooks` to the operator
    after = registered()
    assert after is not None
    assert after.client_config.ca_bundle == before.client_config.ca_bundle
    assert base64.b64decode(after.client_config.ca_bundle).startswith(b"-----BEGIN CERTIFICATE")
