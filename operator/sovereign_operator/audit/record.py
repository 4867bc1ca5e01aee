"""The audit record: who did what to which object, when, why, and the hash that chains it.

A record on the wire is one line of RFC 8785 canonical JSON (camelCase keys, like the
Kubernetes audit log) followed by a newline:

    {"action":"create","actor":{...},"change":[...],"hash":"sha256:...","object":{...},
     "prevHash":"sha256:...","seq":41,"time":"2025-01-31T09:00:00.000000Z","type":"event","v":1}

`hash` is sha256 over the canonical JSON of every other field, so it covers `prevHash`
and `seq`: changing, removing or reordering a record breaks the chain at that point.
Checkpoint records (`type: checkpoint`) live in the same chain and carry an ed25519
signature (see `checkpoint.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from sovereign_operator.audit.canonical import (
    HASH_PREFIX,
    SAFE_INTEGER,
    JsonValue,
    NotCanonical,
    canonical_json,
    content_hash,
    encode_subset,
)
from sovereign_operator.audit.diff import FieldChange

FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = HASH_PREFIX + "0" * 64
"""The `prevHash` of the first record of a chain (seq 0)."""


class ActorKind(StrEnum):
    """Which part of the system acted."""

    ADMISSION = "admission"
    """A person or tool, seen by the validating webhook; identity is the apiserver's userInfo."""
    OPERATOR = "operator"
    AUTOSCALER = "autoscaler"
    WORKER = "worker"


class RecordType(StrEnum):
    """An event, or a signed checkpoint over everything before it."""

    EVENT = "event"
    CHECKPOINT = "checkpoint"


class Action(StrEnum):
    """The actions the operator records; other strings are accepted for new kinds of event."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    APPLY = "apply"
    PATCH = "patch"
    SCALE = "scale"
    VERIFY_MODEL = "verify-model"
    POLICY_DENY = "policy-deny"
    AUDIT_RECOVER = "audit-recover"


@dataclass(frozen=True)
class Actor:
    """Who acted: an authenticated identity and the part of the system it acted through."""

    kind: ActorKind
    username: str
    uid: str | None = None
    groups: tuple[str, ...] = ()

    @classmethod
    def from_user_info(cls, kind: ActorKind, user_info: Mapping[str, object]) -> Actor:
        """From an AdmissionReview's `request.userInfo` (username, uid, groups).

        `extra` is left out on purpose: it can carry credential-adjacent data (token ids,
        pod names of service-account tokens) that an audit log shipped to a SIEM should not.
        """
        groups = user_info.get("groups") or ()
        uid = user_info.get("uid")
        return cls(
            kind=kind,
            username=str(user_info.get("username") or "system:unknown"),
            uid=str(uid) if uid else None,
            groups=tuple(str(g) for g in groups) if isinstance(groups, list | tuple) else (),
        )

    def to_wire(self) -> dict[str, JsonValue]:
        wire: dict[str, JsonValue] = {"kind": self.kind.value, "username": self.username}
        if self.uid is not None:
            wire["uid"] = self.uid
        if self.groups:
            wire["groups"] = list(self.groups)
        return wire


@dataclass(frozen=True)
class ObjectRef:
    """The object acted on. `namespace` is None for cluster-scoped kinds (ModelPolicy)."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, object]) -> ObjectRef:
        """From a Kubernetes object (kind + metadata), as kopf or an AdmissionReview passes it."""
        raw_metadata = manifest.get("metadata")
        metadata: Mapping[str, object] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
        generation = metadata.get("generation")
        namespace, uid = metadata.get("namespace"), metadata.get("uid")
        return cls(
            kind=str(manifest.get("kind") or ""),
            name=str(metadata.get("name") or ""),
            namespace=str(namespace) if namespace else None,
            uid=str(uid) if uid else None,
            generation=generation if isinstance(generation, int) else None,
        )

    def to_wire(self) -> dict[str, JsonValue]:
        wire: dict[str, JsonValue] = {"kind": self.kind, "name": self.name}
        if self.namespace is not None:
            wire["namespace"] = self.namespace
        if self.uid is not None:
            wire["uid"] = self.uid
        if self.generation is not None:
            wire["generation"] = self.generation
        return wire


@dataclass(frozen=True)
class ModelIdentity:
    """Which model bytes an event concerns: the source URI and the manifest digest."""

    source: str
    digest: str | None = None

    def to_wire(self) -> dict[str, JsonValue]:
        wire: dict[str, JsonValue] = {"source": self.source}
        if self.digest is not None:
            wire["digest"] = self.digest
        return wire


@dataclass(frozen=True)
class AuditEvent:
    """What a caller asks to record; the chain adds seq, time, prevHash and hash."""

    actor: Actor
    action: str
    object: ObjectRef | None = None
    change: tuple[FieldChange, ...] = ()
    model: ModelIdentity | None = None
    reason: str = ""
    outcome: str | None = None
    """allowed / denied (admission), succeeded / failed (operator actions)."""
    audit_id: str | None = None
    """The apiserver's Audit-ID of the request, to join with the Kubernetes audit log."""
    details: Mapping[str, JsonValue] = field(default_factory=dict)
    """Further evidence, e.g. an autoscaling decision's metric values and bounds."""

    def to_wire(self) -> dict[str, JsonValue]:
        """The event's own fields; empty optional fields are left out, not written null."""
        wire: dict[str, JsonValue] = {"actor": self.actor.to_wire(), "action": str(self.action)}
        optional: dict[str, JsonValue] = {
            "object": self.object.to_wire() if self.object else None,
            "change": [c.to_wire() for c in self.change] if self.change else None,
            "model": self.model.to_wire() if self.model else None,
            "reason": self.reason or None,
            "outcome": self.outcome,
            "auditId": self.audit_id,
            "details": dict(self.details) if self.details else None,
        }
        wire.update({key: value for key, value in optional.items() if value is not None})
        return wire


@dataclass(frozen=True)
class AuditRecord:
    """A record as written: its chain position, hash, and the exact line bytes."""

    seq: int
    time: str
    type: RecordType
    prev_hash: str
    hash: str
    line: bytes
    """Canonical JSON plus the terminating newline; what every sink receives."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a `Z`, e.g. 2025-01-31T09:00:00.000000Z."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_fields(
    seq: int, moment: datetime, kind: RecordType, prev_hash: str
) -> dict[str, JsonValue]:
    """The fields every record carries besides its own content and hash."""
    return {
        "v": FORMAT_VERSION,
        "seq": seq,
        "time": format_time(moment),
        "type": kind.value,
        "prevHash": prev_hash,
    }


def seal_record(body: Mapping[str, JsonValue]) -> AuditRecord:
    """Hash `body` (every field but `hash`) and return the finished record."""
    if "hash" in body:
        raise ValueError("the body of a record must not carry its own hash yet")
    digest = content_hash(canonical_json(body))
    line = canonical_json({**body, "hash": digest}) + b"\n"
    seq, time, kind, prev = body["seq"], body["time"], body["type"], body["prevHash"]
    if not (
        isinstance(seq, int)
        and isinstance(time, str)
        and isinstance(kind, str)
        and isinstance(prev, str)
    ):
        raise TypeError("a record body needs integer seq and string time, type and prevHash")
    return AuditRecord(seq, time, RecordType(kind), prev, digest, line)


class LineProblem(StrEnum):
    """Why one line of a log is not a valid record on its own."""

    MALFORMED = "malformed"
    NOT_CANONICAL = "not-canonical"
    HASH_MISMATCH = "hash-mismatch"


@dataclass(frozen=True)
class DecodedLine:
    """A parsed line and, when it is not a valid record, what is wrong with it."""

    record: dict[str, JsonValue] | None
    problem: LineProblem | None = None
    detail: str = ""
    seq: int = -1
    """The record's chain fields, typed, once the line is valid."""
    hash: str = ""
    prev_hash: str = ""


_HASH_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
_REQUIRED: Final = {"v": int, "seq": int, "time": str, "type": str, "prevHash": str, "hash": str}


def _shape_problem(value: object) -> str | None:
    """Why a parsed line is not shaped like a record, or None."""
    if not isinstance(value, dict):
        return "not a JSON object"
    for key, kind in _REQUIRED.items():
        if not isinstance(value.get(key), kind) or isinstance(value.get(key), bool):
            return f"field {key!r} missing or mistyped"
    if value["v"] != FORMAT_VERSION or value["type"] not in {t.value for t in RecordType}:
        return "unknown format version or type"
    if not (_HASH_PATTERN.match(value["hash"]) and _HASH_PATTERN.match(value["prevHash"])):
        return "hash or prevHash is not sha256:<hex>"
    return None


def _content_problem(
    record: dict[str, JsonValue], raw: bytes, *, subset: bool
) -> tuple[LineProblem, str] | None:
    """Whether the bytes are the canonical form of the record and its hash matches.

    `subset`: the line is ASCII with no float and no unsafe integer, so the fast encoder
    is exactly RFC 8785 (see canonical.py) and no walk over the record is needed.
    """
    body = {k: v for k, v in record.items() if k != "hash"}
    try:
        canonical = encode_subset(record).encode() if subset else canonical_json(record)
        body_bytes = encode_subset(body).encode() if subset else canonical_json(body)
    except NotCanonical as error:
        return LineProblem.NOT_CANONICAL, str(error)
    if canonical != raw:
        # Same data, different bytes (spacing, escapes, key order): only an edit does that.
        return LineProblem.NOT_CANONICAL, "bytes differ from canonical JSON"
    if content_hash(body_bytes) != record["hash"]:
        return LineProblem.HASH_MISMATCH, "content does not match its hash"
    return None


class _Numbers:
    """json.loads hooks that note literals the fast encoder may not reproduce (floats)."""

    def __init__(self) -> None:
        self.floats = False

    def parse_float(self, text: str) -> float:
        self.floats = True
        return float(text)

    def parse_constant(self, text: str) -> float:
        self.floats = True  # NaN and Infinity: RFC 8785 refuses them
        return float(text)

    def load(self, raw: bytes | str) -> object:
        return json.loads(raw, parse_float=self.parse_float, parse_constant=self.parse_constant)


def _ints_as_doubles(value: JsonValue) -> JsonValue:
    """RFC 8785 numbers are IEEE doubles: the canonical form of the double 2.0**53 is
    "9007199254740992", which Python reads back as an int that rfc8785 refuses as an int.
    Reading such literals as the double they denote keeps the round trip exact."""
    if type(value) is int and not -SAFE_INTEGER <= value <= SAFE_INTEGER:
        return float(value)
    if isinstance(value, dict):
        return {k: _ints_as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_as_doubles(v) for v in value]
    return value


def load_json(raw: bytes | str) -> object:
    """Parse JSON the way records are verified (integers beyond 2**53 as doubles)."""
    value: JsonValue = json.loads(raw)
    return _ints_as_doubles(value)


def decode_line(raw: bytes) -> DecodedLine:
    """Parse one line (without its newline) and check it is canonical and hashes to itself."""
    numbers = _Numbers()
    try:
        value = numbers.load(raw)
    except (UnicodeDecodeError, ValueError) as error:
        return DecodedLine(None, LineProblem.MALFORMED, f"not valid JSON ({error})")
    shape = _shape_problem(value)
    if shape is not None or not isinstance(value, dict):
        partial = value if isinstance(value, dict) else None
        return DecodedLine(partial, LineProblem.MALFORMED, shape or "not a JSON object")
    # ASCII, no float literal: the fast encoder reproduces this line exactly when it is
    # canonical, integers of any size included (it prints them digit for digit).
    subset = raw.isascii() and not numbers.floats
    record: dict[str, JsonValue] = value
    if not subset:
        record = {key: _ints_as_doubles(item) for key, item in record.items()}
    content = _content_problem(record, raw, subset=subset)
    if content is not None:
        return DecodedLine(record, *content)
    return DecodedLine(record, seq=value["seq"], hash=value["hash"], prev_hash=value["prevHash"])
