"""Small helpers for talking to a local cluster: a client, the admin TLS context, node facts."""

import ssl
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from .pki import Pki
from .state import StateDir


def api_client(kubeconfig: Path) -> k8s.ApiClient:
    """A sync client for one kubeconfig file (the caller closes it: `with api_client(...)`)."""
    client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return client


def node_ready(node: k8s.V1Node) -> bool:
    conditions = (node.status and node.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def object_name(obj: k8s.V1Node | k8s.V1ServiceAccount) -> str:
    return str(obj.metadata and obj.metadata.name)


def admin_tls_context(state: StateDir) -> ssl.SSLContext:
    """Verifies servers against the cluster CA and presents the admin certificate."""
    pki = Pki(state.pki)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
    return context
