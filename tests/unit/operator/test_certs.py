"""Webhook certificates: issued right, verified by a real TLS handshake, rotated without gaps."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from sovereign_operator.webhook_certs import (
    CertStore,
    Lifetimes,
    WebhookCerts,
    next_check,
    rotate,
    sans_of,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SANS = ["sovereign-operator-webhook.sovereign-system.svc", "127.0.0.1"]
LIFE = Lifetimes(ca=timedelta(days=360), serving=timedelta(days=30))


def chain_ok(certs: WebhookCerts, at: datetime) -> bool:
    """The serving certificate verifies against the published bundle at `at`."""
    serving = certs.serving_cert
    for authority in certs.authorities:
        ca = authority.cert
        if ca.subject != serving.issuer:
            continue
        try:
            serving.verify_directly_issued_by(ca)
        except (ValueError, TypeError):
            return False
        valid = ca.not_valid_before_utc <= at <= ca.not_valid_after_utc
        return valid and serving.not_valid_before_utc <= at <= serving.not_valid_after_utc
    return False


def test_a_fresh_start_issues_a_ca_and_a_serving_certificate_for_the_names() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    assert len(certs.authorities) == 1
    assert sans_of(certs.serving_cert) == set(SANS)
    assert chain_ok(certs, T0)
    ca = certs.authorities[0].cert
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    serving = certs.serving_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert not serving.value.ca
    assert certs.serving_cert.not_valid_after_utc - T0 <= LIFE.serving


def test_nothing_changes_while_nothing_is_due() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    assert rotate(certs, SANS, T0 + timedelta(days=15), LIFE) is certs


def test_the_serving_certificate_is_renewed_with_a_third_of_its_life_left() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    later = T0 + timedelta(days=21)
    renewed = rotate(certs, SANS, later, LIFE)
    assert renewed.serving_cert != certs.serving_cert
    assert renewed.authorities == certs.authorities
    assert chain_ok(renewed, later)


def test_changed_names_get_a_new_serving_certificate() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    moved = rotate(certs, ["other.svc"], T0 + timedelta(days=1), LIFE)
    assert sans_of(moved.serving_cert) == {"other.svc"}


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(cert.signature_hash_algorithm)  # type: ignore[arg-type]


def test_two_years_of_checks_never_leave_the_api_server_unable_to_verify_us() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    first_seen = {fingerprint(certs.authorities[0].cert): T0}
    switches = 0
    for day in range(1, 2 * 360, 2):
        now = T0 + timedelta(days=day)
        previous = certs.issuer()
        certs = rotate(certs, SANS, now, LIFE)
        assert chain_ok(certs, now), f"day {day}: the serving certificate does not verify"
        for authority in certs.authorities:
            first_seen.setdefault(fingerprint(authority.cert), now)
        issuer = certs.issuer()
        assert issuer is not None
        if previous is not None and fingerprint(issuer.cert) != fingerprint(previous.cert):
            switches += 1
            # A CA signs only after months in the caBundle the API server trusts.
            assert now - first_seen[fingerprint(issuer.cert)] >= LIFE.serving
        assert len(certs.authorities) <= 2
    assert switches >= 1


def test_a_new_ca_is_published_long_before_it_signs() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    mid = T0 + timedelta(days=181)
    certs = rotate(certs, SANS, mid, LIFE)
    assert len(certs.authorities) == 2
    old, new = certs.authorities
    renewed = rotate(certs, SANS, mid + timedelta(days=25), LIFE)
    assert renewed.issuer() is old  # the old CA still has more than a serving lifetime left
    late = T0 + timedelta(days=356)
    for day in range(181, 357):
        certs = rotate(certs, SANS, T0 + timedelta(days=day), LIFE)
    assert certs.issuer() is new
    assert chain_ok(certs, late)
    gone = rotate(certs, SANS, T0 + timedelta(days=361), LIFE)
    assert old not in gone.authorities


def test_lifetimes_that_leave_no_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="at most half"):
        Lifetimes(ca=timedelta(days=30), serving=timedelta(days=20))


def test_next_check_is_the_next_moment_something_is_due() -> None:
    certs = rotate(None, SANS, T0, LIFE)
    wait = next_check(certs, T0, timedelta(days=365))
    assert timedelta(days=19) < wait <= timedelta(days=20, minutes=5)
    assert next_check(certs, T0, timedelta(hours=1)) == timedelta(hours=1)


def test_the_store_round_trips_and_only_writes_when_something_changed(tmp_path: Path) -> None:
    store = CertStore(tmp_path / "certs")
    first, changed = store.refresh(SANS, T0, LIFE)
    assert changed
    assert (store.directory / "tls.pem").stat().st_mode & 0o077 == 0
    loaded = store.load()
    assert loaded is not None
    assert loaded.serving_cert == first.serving_cert
    assert [a.cert for a in loaded.authorities] == [a.cert for a in first.authorities]
    mtime = store.serving_file.stat().st_mtime_ns
    _, changed = store.refresh(SANS, T0 + timedelta(days=1), LIFE)
    assert not changed
    assert store.serving_file.stat().st_mtime_ns == mtime


def test_unreadable_files_are_replaced(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    store.refresh(SANS, T0, LIFE)
    store.serving_file.write_bytes(b"garbage")
    certs, changed = store.refresh(SANS, T0, LIFE)
    assert changed
    assert chain_ok(certs, T0)


def test_a_tls_client_trusting_the_bundle_reaches_a_server_with_the_serving_file(
    tmp_path: Path,
) -> None:
    store = CertStore(tmp_path)
    store.refresh(["127.0.0.1"])  # now: the handshake checks validity against the real clock
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # One file for both: the way kopf's WebhookServer is given it (certfile=pkeyfile).
    server_ctx.load_cert_chain(store.serving_file, store.serving_file)
    client_ctx = ssl.create_default_context(cafile=str(store.ca_file))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(5)
