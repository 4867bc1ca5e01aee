"""Signed checkpoints: an ed25519 signature over the chain head, as a record in the chain.

A hash chain alone proves nothing against someone who can rewrite the file: they can
recompute every hash. A checkpoint signs `prevHash` (the hash of the record before it,
which transitively fixes every earlier record) with a key that lives only in the
operator's Secret, so rewriting anything it covers needs that key. The public key is
published in a ConfigMap (`public_key_configmap`) for auditors and `sovereign audit verify`.

What is signed: a fixed context string, then the canonical JSON of the checkpoint record
without its `hash` and `signature` fields. The context keeps these signatures from ever
being valid for any other message the same key might sign.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sovereign_operator.audit.canonical import JsonValue, canonical_json
from sovereign_operator.audit.record import RecordType, chain_fields

SIGNATURE_CONTEXT: Final = b"sovereign.dev/audit-checkpoint/v1\n"
CONFIGMAP_PUBLIC_KEY: Final = "audit-public-key.pem"
CONFIGMAP_KEY_ID: Final = "key-id"
CONFIGMAP_LATEST_CHECKPOINT: Final = "latest-checkpoint.json"


class CheckpointReason(StrEnum):
    """Why a checkpoint was written."""

    PERIODIC = "periodic"
    """Every N records or T seconds."""
    ROTATE = "rotate"
    """The last record of a file before it is rotated: every rotated file ends signed."""
    SEAL = "seal"
    """The last record written at a clean shutdown: nothing follows until a restart."""
    RESUME = "resume"
    """Written at start-up when the log did not end with a checkpoint (after a crash)."""


class AuditKeyError(ValueError):
    """A key file that cannot be used; the message says why."""


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to sign: after `every_records` records or `every_seconds`, whichever comes first."""

    every_records: int = 1000
    every_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.every_records < 1 or self.every_seconds <= 0:
            raise ValueError("checkpoints need every_records >= 1 and every_seconds > 0")

    def due(self, records_since: int, seconds_since: float) -> bool:
        """Whether unsigned records have waited long enough; never for an empty tail."""
        if records_since == 0:
            return False
        return records_since >= self.every_records or seconds_since >= self.every_seconds


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: `ed25519:` + 32 hex of sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Signer:
    """The operator's checkpoint key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """Load a PEM (PKCS#8) ed25519 private key, e.g. mounted from a Secret."""
        return cls.from_pem(path.read_bytes(), source=str(path))

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str) -> Signer:
        """Load a PEM (PKCS#8) ed25519 private key; `source` names it in errors."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise AuditKeyError(f"{source}: not an unencrypted PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(
                f"{source}: the audit key must be ed25519, not {type(key).__name__}"
            )
        return cls(key)

    def public_pem(self) -> bytes:
        return public_pem(self.public_key)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private_key.sign(message)).decode("ascii")


def generate_key_files(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (private key mode 0600); return its key id. Never overwrites."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL: refuse to clobber an existing key, whose loss would orphan every signature.
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(public_pem(key.public_key()))
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        public_path.unlink()
        raise
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    return key_id(key.public_key())


def load_public_keys(pem: bytes, *, source: str = "public key") -> dict[str, Ed25519PublicKey]:
    """Every ed25519 public key in a PEM bundle, by key id (old keys verify old checkpoints)."""
    keys: dict[str, Ed25519PublicKey] = {}
    marker = b"-----END PUBLIC KEY-----"
    for block in pem.split(marker)[:-1]:
        try:
            key = serialization.load_pem_public_key(block.strip() + b"\n" + marker + b"\n")
        except ValueError as error:
            raise AuditKeyError(f"{source}: not a PEM public key ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError(f"{source}: audit keys are ed25519, not {type(key).__name__}")
        keys[key_id(key)] = key
    if not keys:
        raise AuditKeyError(f"{source}: no PEM public key found")
    return keys


def signing_payload(record: Mapping[str, JsonValue]) -> bytes:
    """What a checkpoint's signature covers: the record without `hash` and `signature`."""
    unsigned = {k: v for k, v in record.items() if k not in {"hash", "signature"}}
    return SIGNATURE_CONTEXT + canonical_json(unsigned)


def checkpoint_body(
    seq: int, moment: datetime, prev_hash: str, reason: CheckpointReason, signer: Signer
) -> dict[str, JsonValue]:
    """A signed checkpoint record body (everything but `hash`), covering records 0..seq-1."""
    body = chain_fields(seq, moment, RecordType.CHECKPOINT, prev_hash)
    body["checkpoint"] = {"reason": reason.value, "keyId": signer.key_id, "records": seq}
    body["signature"] = signer.sign(signing_payload(body))
    return body


def signature_problem(
    record: Mapping[str, JsonValue], keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Why a checkpoint record's signature does not hold, or None when it does."""
    section = record.get("checkpoint")
    signature = record.get("signature")
    if not isinstance(section, Mapping) or not isinstance(signature, str):
        return "checkpoint without a checkpoint section or signature"
    reason, signer_id, count = section.get("reason"), section.get("keyId"), section.get("records")
    if reason not in {r.value for r in CheckpointReason} or not isinstance(signer_id, str):
        return "checkpoint with an unknown reason or no keyId"
    if count != record.get("seq"):
        return f"checkpoint claims to cover {count} records but sits at seq {record.get('seq')}"
    key = keys.get(signer_id)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        return f"signed by unknown key {signer_id} (known: {known}): forged, or pass its public key"
    try:
        key.verify(base64.b64decode(signature, validate=True), signing_payload(record))
    except (InvalidSignature, binascii.Error, ValueError):
        return (
            f"signature does not verify with key {signer_id}: the checkpoint was forged or altered"
        )
    return None


def public_key_configmap(
    name: str, namespace: str, signer: Signer, latest_checkpoint: bytes | None = None
) -> dict[str, object]:
    """The ConfigMap auditors read the verification key (and the newest checkpoint) from.

    Publishing the newest checkpoint outside the log makes it an anchor: `audit verify
    --anchor` then detects a log cut off anywhere before it, which the log alone cannot.
    """
    data = {
        CONFIGMAP_PUBLIC_KEY: signer.public_pem().decode("ascii"),
        CONFIGMAP_KEY_ID: signer.key_id,
    }
    if latest_checkpoint is not None:
        data[CONFIGMAP_LATEST_CHECKPOINT] = latest_checkpoint.decode("utf-8")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "sovereign-operator"},
        },
        "data": data,
    }
