"""Self-contained kubeconfig files (certificates embedded, so a copied file keeps working)."""

import base64
import os
from pathlib import Path
from typing import Any

import yaml


def render_kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    token: str | None = None,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    cluster_name: str = "sovereign-local",
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one current context."""
    if (token is None) == (client_cert_pem is None):
        raise ValueError("give exactly one of token or client_cert_pem")
    credentials: dict[str, str]
    if token is not None:
        credentials = {"token": token}
    else:
        if client_cert_pem is None or client_key_pem is None:
            raise ValueError("a client certificate needs both client_cert_pem and client_key_pem")
        credentials = {
            "client-certificate-data": _b64(client_cert_pem),
            "client-key-data": _b64(client_key_pem),
        }
    context = f"{user}@{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> None:
    """Write with mode 0600: the file holds a credential."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
