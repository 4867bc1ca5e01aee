"""The ValidatingWebhookConfiguration the operator keeps pointing at its webhook server.

kopf's managed mode (`settings.admission.managed`) registers URLs only, cannot express
`matchConditions`, and removes its webhooks on exit; the operator needs a Service
reference in a cluster, must exempt its own ServiceAccount (its finalizer removal and
bookkeeping patches would otherwise wait on itself: a deadlock when it is down), and keeps
the webhook when it restarts (a gap would admit unchecked specs). So the configuration is
built here (`build`, pure) and server-side applied (`apply`) whenever kopf's server
reports a new client config (a new CA bundle after rotation, a new port).

The chart creates the object empty and deletes it on uninstall, so an uninstalled
operator never blocks edits; the operator only patches that one object by name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from sovereign_operator.api.base import GROUP, VERSION

logger = logging.getLogger(__name__)

FIELD_MANAGER: Final = "sovereign-operator"
DEFAULT_NAME: Final = "sovereign-operator"
WEBHOOK_NAME: Final = "modeldeployments.validate.sovereign.dev"
HANDLER_PATH: Final = "validate-model-deployment"
"""kopf routes `<root>/<handler id>` to that handler; the id of `handlers/admission.py`."""
_PATH: Final = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


@dataclass(frozen=True)
class WebhookTarget:
    """Where the API server reaches the webhook: a Service in a cluster, a URL elsewhere."""

    service_namespace: str | None = None
    service_name: str | None = None
    service_port: int = 443

    @property
    def uses_service(self) -> bool:
        return self.service_name is not None


def client_config(
    target: WebhookTarget, served: Mapping[str, Any], handler: str = HANDLER_PATH
) -> dict[str, Any]:
    """The clientConfig for kopf's reported one (`url`, `caBundle`): kept as a URL, or
    turned into a Service reference with the same CA bundle."""
    config: dict[str, Any] = {}
    if target.uses_service:
        config["service"] = {
            "namespace": target.service_namespace,
            "name": target.service_name,
            "port": target.service_port,
            "path": f"/{handler}",
        }
    else:
        config["url"] = f"{str(served['url']).rstrip('/')}/{handler}"
    if served.get("caBundle"):
        config["caBundle"] = served["caBundle"]
    return config


def build(
    name: str,
    config: Mapping[str, Any],
    *,
    exempt_users: Sequence[str],
    namespaces: Sequence[str] = (),
    timeout_seconds: int = 10,
) -> dict[str, Any]:
    """The whole ValidatingWebhookConfiguration, for server-side apply."""
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": dict(config),
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "resources": ["modeldeployments"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "scope": "Namespaced",
            }
        ],
        # Fail closed: a spec the webhook could not check is not admitted.
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        # The webhook records decisions to the audit trail, but never for dry runs.
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": timeout_seconds,
        "namespaceSelector": {},
        "objectSelector": {},
    }
    if namespaces:
        webhook["namespaceSelector"] = {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": sorted(namespaces),
                }
            ]
        }
    if exempt_users:
        webhook["matchConditions"] = [
            {
                "name": f"not-the-operator-{i}" if i else "not-the-operator",
                "expression": f"request.userInfo.username != {json.dumps(user)}",
            }
            for i, user in enumerate(sorted(set(exempt_users)))
        ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "sovereign-operator"},
        },
        "webhooks": [webhook],
    }


async def apply(api: client.ApiClient, body: Mapping[str, Any]) -> None:
    """Server-side apply of the configuration (only the named object is touched)."""
    name = body["metadata"]["name"]
    await api.call_api(
        f"{_PATH}/{name}",
        "PATCH",
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={
            "Accept": "application/json",
            "Content-Type": "application/apply-patch+yaml",
        },
        body=dict(body),
        response_types_map={200: "object", 201: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=30,
    )
    logger.info("webhook configuration %s points at %s", name, _where(body))


def _where(body: Mapping[str, Any]) -> str:
    config = body["webhooks"][0]["clientConfig"]
    if "url" in config:
        return str(config["url"])
    service = config["service"]
    return f"service {service['namespace']}/{service['name']}:{service['port']}{service['path']}"


async def whoami(api: client.ApiClient) -> str | None:
    """The operator's own username, from a SelfSubjectReview (any authenticated identity
    may ask); None when the API server does not answer it."""
    try:
        review = await api.call_api(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "POST",
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=30,
        )
    except ApiException as error:
        logger.warning("cannot tell the operator's own username: %s", error.reason)
        return None
    username = ((review or {}).get("status") or {}).get("userInfo", {}).get("username")
    return str(username) if username else None
