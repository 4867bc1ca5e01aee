"""Audit logs built in memory exactly as the writer lays them out, and ways to damage them."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from sovereign_operator.audit.chain import Chain, ChainHead
from sovereign_operator.audit.checkpoint import CheckpointReason, Signer, signing_payload
from sovereign_operator.audit.diff import FieldChange
from sovereign_operator.audit.findings import Anchor, VerifyResult
from sovereign_operator.audit.record import (
    Action,
    Actor,
    ActorKind,
    AuditEvent,
    ModelIdentity,
    ObjectRef,
    load_json,
    seal_record,
)
from sovereign_operator.audit.segments import segment_path
from sovereign_operator.audit.verify import verify_logs

KEY: Final = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
KEYS: Final = {KEY.key_id: KEY.public_key}
ATTACKER: Final = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
T0: Final = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ACTIVE: Final = "audit.log"

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
actors = st.builds(
    Actor,
    kind=st.sampled_from(ActorKind),
    username=st.text(min_size=1, max_size=12),
    uid=st.none() | st.uuids().map(str),
    groups=st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple),
)
objects = st.builds(
    ObjectRef,
    kind=st.sampled_from(["ModelDeployment", "ModelPolicy", "Deployment"]),
    name=st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
    namespace=st.none() | st.just("clinical-ai"),
    generation=st.none() | st.integers(1, 50),
)
changes = st.builds(
    FieldChange,
    path=st.sampled_from(["spec.replicas", "spec.model.source"]),
    old=json_values,
    new=json_values,
)
events = st.builds(
    AuditEvent,
    actor=actors,
    action=st.sampled_from([a.value for a in Action]),
    object=st.none() | objects,
    change=st.lists(changes, max_size=2).map(tuple),
    model=st.none()
    | st.builds(
        ModelIdentity, source=st.just("pvc://models/llama"), digest=st.just("sha256:" + "ab" * 32)
    ),
    reason=st.text(max_size=20),
    outcome=st.none() | st.sampled_from(["allowed", "denied"]),
    audit_id=st.none() | st.uuids().map(str),
    details=st.dictionaries(st.text(max_size=6), json_values, max_size=3),
)


@dataclass
class Log:
    """Files in chain order, each a list of lines (with newlines)."""

    files: list[tuple[str, list[bytes]]] = field(default_factory=list)

    def positions(self) -> list[tuple[int, int]]:
        """Every line as (file index, line index), in chain order."""
        return [(f, i) for f, (_, lines) in enumerate(self.files) for i in range(len(lines))]

    def location(self, position: tuple[int, int]) -> tuple[str, int]:
        """(file name, 1-based line) as verify reports it."""
        return self.files[position[0]][0], position[1] + 1

    def copy(self) -> Log:
        return Log([(name, list(lines)) for name, lines in self.files])

    def flat(self) -> list[bytes]:
        return [line for _, lines in self.files for line in lines]

    def with_flat(self, lines: list[bytes]) -> Log:
        """The same file layout filled with `lines` (as many as before)."""
        files, start = [], 0
        for name, old in self.files:
            files.append((name, lines[start : start + len(old)]))
            start += len(old)
        return Log(files)

    def verify(self, *, anchor: Anchor | None = None, require_sealed: bool = True) -> VerifyResult:
        sources = [(name, io.BytesIO(b"".join(lines))) for name, lines in self.files]
        return verify_logs(sources, KEYS, anchor=anchor, require_sealed=require_sealed)


def build_log(
    items: list[AuditEvent],
    *,
    checkpoint_every: int,
    rotate_every: int | None,
    sealed: bool = True,
    head: ChainHead | None = None,
) -> Log:
    """Lay records out as AuditTrail does: periodic checkpoints, a rotation checkpoint ending
    each rotated file, a seal at the end."""
    chain = Chain(head or ChainHead(), KEY)
    files: list[list[bytes]] = [[]]
    first_seqs = [chain.head.next_seq]
    for event in items:
        files[-1].append(chain.append(event, T0).line)
        if rotate_every and len(files[-1]) >= rotate_every:
            files[-1].append(chain.checkpoint(CheckpointReason.ROTATE, T0).line)
            files.append([])
            first_seqs.append(chain.head.next_seq)
        elif chain.records_since_checkpoint >= checkpoint_every:
            files[-1].append(chain.checkpoint(CheckpointReason.PERIODIC, T0).line)
    if sealed:
        files[-1].append(chain.checkpoint(CheckpointReason.SEAL, T0).line)
    names = [segment_path(Path(ACTIVE), seq).name for seq in first_seqs[:-1]] + [ACTIVE]
    return Log(list(zip(names, files, strict=True)))


def parse(line: bytes) -> dict[str, Any]:
    value = load_json(line)
    assert isinstance(value, dict)
    return value


def reseal(body: dict[str, Any]) -> bytes:
    """The line for a body after recomputing its hash, as an attacker can."""
    body = {k: v for k, v in body.items() if k != "hash"}
    return seal_record(body).line


def resign(body: dict[str, Any], signer: Signer, *, claim_key: str | None = None) -> bytes:
    """A checkpoint re-signed by `signer` (claiming `claim_key`'s id), hash recomputed."""
    body = {k: v for k, v in body.items() if k not in {"hash", "signature"}}
    body["checkpoint"] = {**body["checkpoint"], "keyId": claim_key or signer.key_id}
    body["signature"] = signer.sign(signing_payload(body))
    return reseal(body)


def forged_event(previous_line: bytes | None, event: AuditEvent) -> bytes:
    """A well-formed event that links to `previous_line`: what an attacker can fabricate."""
    previous = parse(previous_line) if previous_line else None
    head = ChainHead(previous["seq"] + 1, previous["hash"]) if previous else ChainHead()
    return Chain(head, None).append(event, T0).line


def rechain(lines: list[bytes], start: int) -> list[bytes]:
    """Recompute prevHash and hash of every line from `start` on (checkpoint signatures stay
    as they were, so they no longer verify): rewriting a log without the key."""
    out = list(lines[:start])
    previous_hash = parse(out[-1])["hash"] if out else None
    for line in lines[start:]:
        body = parse(line)
        if previous_hash is not None:
            body["prevHash"] = previous_hash
        fixed = reseal(body)
        previous_hash = parse(fixed)["hash"]
        out.append(fixed)
    return out


def failure_location(log: Log) -> tuple[str, int]:
    """(file, line) of the failure verify reports; fails the test when verify passes."""
    result = log.verify()
    assert result.failure is not None, "verification passed a damaged log"
    return result.failure.location.file, result.failure.location.line
