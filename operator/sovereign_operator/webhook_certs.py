"""The admission webhook's TLS: a private CA and a serving certificate, issued and rotated
by the operator itself, kept as files kopf's WebhookServer reads.

Why not kopf's self-signed mode: it makes a new certificate at every start with no
renewal, and its caBundle is the serving certificate itself. Here a CA signs short-lived
serving certificates, and rotation never leaves the API server unable to verify us:

- a new CA joins the bundle (`ca.crt`, the webhook's caBundle) at half its predecessor's
  life, long before it signs anything;
- a serving certificate is renewed when a third of its life is left, and is issued by the
  oldest CA in the bundle that outlives it, so the signer switches to the new CA only after
  it has been published for months;
- a CA leaves the bundle when it expires.

`rotate` is pure (time is a parameter); `CertStore` writes files atomically. Issuance is
written against `cryptography` directly: `trustme` (used for the local cluster's PKI) is a
test-CA library without control over validity windows, and only a dev dependency. The serving
key and chain share one file (`tls.pem`, given to kopf as both certfile and pkeyfile), so
kopf's file watcher can never load a key with the wrong certificate.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE: Final = "ca.crt"
CA_KEYS_FILE: Final = "ca-keys.pem"
SERVING_FILE: Final = "tls.pem"
_KEY_PEM: Final = re.compile(
    rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----\n?", re.DOTALL
)
# Certificates are valid from a little before they are made: clocks differ between nodes.
_BACKDATE: Final = timedelta(minutes=5)


class CertError(ValueError):
    """Stored certificates that cannot be used; the store starts over with new ones."""


@dataclass(frozen=True)
class Lifetimes:
    ca: timedelta = timedelta(days=365)
    serving: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if self.serving * 2 > self.ca:
            raise ValueError(
                f"the serving certificate lifetime ({self.serving}) must be at most half the "
                f"CA lifetime ({self.ca}), so a new CA is published before it signs"
            )


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class WebhookCerts:
    """Every CA the API server should trust (oldest first) and the serving certificate."""

    authorities: tuple[Authority, ...]
    serving_cert: x509.Certificate
    serving_key: ec.EllipticCurvePrivateKey

    def bundle_pem(self) -> bytes:
        return b"".join(_cert_pem(a.cert) for a in self.authorities)

    def serving_pem(self) -> bytes:
        """Key first, then the certificate: one file for ssl's load_cert_chain."""
        return _key_pem(self.serving_key) + _cert_pem(self.serving_cert)

    def issuer(self) -> Authority | None:
        for authority in self.authorities:
            if authority.cert.subject == self.serving_cert.issuer:
                return authority
        return None


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def new_authority(now: datetime, lifetimes: Lifetimes, common_name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    # A unique subject per CA: the serving certificate's issuer names exactly one of them.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sovereign-operator"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} {now:%Y%m%dT%H%M%S%f}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetimes.ca)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue_serving(
    authority: Authority, sans: Sequence[str], now: datetime, lifetimes: Lifetimes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A serving certificate for `sans` (DNS names or IP addresses), never outliving its CA."""
    if not sans:
        raise ValueError("the serving certificate needs at least one DNS name or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + lifetimes.serving, authority.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0][:64])]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return cert, key


def sans_of(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return {*dns, *ips}


def _remaining(cert: x509.Certificate, now: datetime) -> timedelta:
    return cert.not_valid_after_utc - now


def _life(cert: x509.Certificate) -> timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def rotate(
    current: WebhookCerts | None,
    sans: Sequence[str],
    now: datetime,
    lifetimes: Lifetimes | None = None,
    *,
    common_name: str = "sovereign-operator webhook CA",
) -> WebhookCerts:
    """The certificates to serve at `now`: `current` itself when nothing is due."""
    lifetimes = lifetimes or Lifetimes()
    if current is None:
        authority = new_authority(now, lifetimes, common_name)
        cert, key = issue_serving(authority, sans, now, lifetimes)
        return WebhookCerts((authority,), cert, key)

    authorities = [a for a in current.authorities if _remaining(a.cert, now) > timedelta(0)]
    newest = authorities[-1] if authorities else None
    if newest is None or _remaining(newest.cert, now) < _life(newest.cert) / 2:
        authorities.append(new_authority(now, lifetimes, common_name))

    serving = current.serving_cert
    due = (
        current.issuer() not in authorities
        or _remaining(serving, now) < _life(serving) / 3
        or sans_of(serving) != set(sans)
    )
    if not due and authorities == list(current.authorities):
        return current
    if not due:
        return WebhookCerts(tuple(authorities), serving, current.serving_key)
    signer = next(
        (a for a in authorities if _remaining(a.cert, now) >= lifetimes.serving),
        authorities[-1],
    )
    cert, key = issue_serving(signer, sans, now, lifetimes)
    return WebhookCerts(tuple(authorities), cert, key)


def next_check(certs: WebhookCerts, now: datetime, ceiling: timedelta) -> timedelta:
    """How long until `rotate` may have something to do, at most `ceiling`."""
    serving = certs.serving_cert
    moments = [serving.not_valid_after_utc - _life(serving) / 3]
    for authority in certs.authorities:
        moments.append(authority.cert.not_valid_after_utc - _life(authority.cert) / 2)
        moments.append(authority.cert.not_valid_after_utc)
    soonest = min(m - now for m in moments if m > now) if any(m > now for m in moments) else ceiling
    return max(min(soonest, ceiling), timedelta(seconds=1))


# -- files ----------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


@dataclass(frozen=True)
class CertStore:
    """The certificates as files in `directory` (an emptyDir in the chart)."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    @property
    def serving_file(self) -> Path:
        return self.directory / SERVING_FILE

    def load(self) -> WebhookCerts | None:
        """What is stored, or None when nothing is; CertError when it is unusable."""
        paths = [self.ca_file, self.directory / CA_KEYS_FILE, self.serving_file]
        if not all(p.is_file() for p in paths):
            return None
        try:
            cas = x509.load_pem_x509_certificates(paths[0].read_bytes())
            ca_keys = [
                serialization.load_pem_private_key(m.group(0), None)
                for m in _KEY_PEM.finditer(paths[1].read_bytes())
            ]
            serving_pem = paths[2].read_bytes()
            serving_key = serialization.load_pem_private_key(
                _KEY_PEM.search(serving_pem).group(0),  # type: ignore[union-attr]
                None,
            )
            serving_cert = x509.load_pem_x509_certificate(serving_pem)
        except (ValueError, AttributeError, TypeError) as error:
            raise CertError(
                f"unreadable webhook certificates in {self.directory}: {error}"
            ) from error
        keys = [k for k in ca_keys if isinstance(k, ec.EllipticCurvePrivateKey)]
        if len(keys) != len(cas) or not isinstance(serving_key, ec.EllipticCurvePrivateKey):
            raise CertError(f"webhook CA certificates and keys in {self.directory} do not pair up")
        return WebhookCerts(
            tuple(Authority(c, k) for c, k in zip(cas, keys, strict=True)),
            serving_cert,
            serving_key,
        )

    def save(self, certs: WebhookCerts) -> None:
        """The bundle first: a watcher that reads between the writes sees the new CAs with
        the old serving certificate, which they still include."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomically(
            self.directory / CA_KEYS_FILE,
            b"".join(_key_pem(a.key) for a in certs.authorities),
            0o600,
        )
        _write_atomically(self.ca_file, certs.bundle_pem(), 0o644)
        _write_atomically(self.serving_file, certs.serving_pem(), 0o600)

    def refresh(
        self, sans: Sequence[str], now: datetime | None = None, lifetimes: Lifetimes | None = None
    ) -> tuple[WebhookCerts, bool]:
        """Load, rotate what is due, save when anything changed; (certs, changed)."""
        now = now or datetime.now(UTC)
        try:
            current = self.load()
        except CertError:
            current = None
        certs = rotate(current, sans, now, lifetimes)
        if certs is not current:
            self.save(certs)
        return certs, certs is not current
