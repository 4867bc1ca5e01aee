"""The cluster's certificates and keys, made fresh for every cluster.

One CA signs the apiserver's serving certificate (also reused by the controller-manager and
scheduler for their health ports, so every TLS hop verifies against the same CA) and the
client certificates of the admin and the components. The apiserver maps a client
certificate's CN to the user name and its O values to groups.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# Names the apiserver is reached by: loopback for us, the in-cluster names and the
# first service IP for pods (rendered manifests point clients at kubernetes.default.svc).
SERVING_NAMES = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class ClientIdentity:
    """A certificate-based user: CN is the user name, O its group.

    trustme writes a single O attribute, so a certificate carries at most one group; the
    identities that need more use tokens (see config.py).
    """

    user: str
    group: str | None = None


@dataclass(frozen=True)
class Pki:
    """Paths of the PKI files in one folder; the layout is fixed so it can be re-derived."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.pem"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver-key.pem"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def front_proxy_ca(self) -> Path:
        return self.directory / "front-proxy-ca.pem"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.directory / "front-proxy-client.pem"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.directory / "front-proxy-client-key.pem"

    def client_cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.directory / f"{name}-key.pem"


def write_pki(
    directory: Path,
    clients: Mapping[str, ClientIdentity],
    extra_serving_names: Sequence[str] = (),
) -> Pki:
    """Create a CA, the serving certificate, one client certificate per entry, and SA keys."""
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sovereign-operator local cluster")
    ca.cert_pem.write_to_path(str(pki.ca_cert))

    serving = ca.issue_cert(*SERVING_NAMES, *extra_serving_names, common_name="kube-apiserver")
    serving.cert_chain_pems[0].write_to_path(str(pki.serving_cert))
    _write_private(pki.serving_key, serving.private_key_pem.bytes())

    for name, identity in clients.items():
        # Go's x509 parser treats an empty, critical SAN extension (what trustme writes for
        # a certificate with no identities) as unhandled and rejects the chain, so every
        # client certificate carries one harmless DNS name.
        leaf = ca.issue_cert(
            f"{_dns_label(name)}.clients.sovereign.local",
            common_name=identity.user,
            # trustme fills an absent O with its own name, which the apiserver would turn
            # into a stray group; every authenticated user is in this group anyway.
            organization_name=identity.group or "system:authenticated",
        )
        leaf.cert_chain_pems[0].write_to_path(str(pki.client_cert(name)))
        _write_private(pki.client_key(name), leaf.private_key_pem.bytes())

    _write_front_proxy(pki)
    _write_service_account_keys(pki)
    return pki


def _write_front_proxy(pki: Pki) -> None:
    # The aggregation layer's own CA, as kubeadm sets it up. Without it the apiserver
    # publishes no request-header CA, and the controller-manager and scheduler log an
    # error about it every few seconds; with it, aggregated API servers work too.
    ca = trustme.CA(organization_name="sovereign-operator front proxy")
    ca.cert_pem.write_to_path(str(pki.front_proxy_ca))
    leaf = ca.issue_cert("front-proxy-client.sovereign.local", common_name=FRONT_PROXY_CLIENT)
    leaf.cert_chain_pems[0].write_to_path(str(pki.front_proxy_client_cert))
    _write_private(pki.front_proxy_client_key, leaf.private_key_pem.bytes())


def _write_service_account_keys(pki: Pki) -> None:
    # The apiserver signs service-account tokens with the private key and verifies them
    # with the public one; the controller-manager signs legacy tokens with the same key.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(
        pki.service_account_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    pki.service_account_pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _dns_label(name: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in name.lower()).strip("-") or "x"
