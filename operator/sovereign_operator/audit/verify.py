"""Verify an audit log: prove it intact, or name the file, line and seq where it is not.

Each line is checked on its own (valid, canonical, hashes to itself), then against the
line before it (next seq, links to its hash), and checkpoints against the public keys.
The first failure ends verification: later lines are no longer evidence once the chain
is broken. Rotated files are one chain, checked in order by name (`segments.chain_order`);
every file but the last must end with its rotation checkpoint.

A log cut at a record boundary is itself a valid log; `require_sealed` (the log must end
with the seal of a clean shutdown) and an anchor (a signed checkpoint kept elsewhere, which
the log must reach unchanged) are what detect that; see `findings.Summary.describe`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sovereign_operator.audit.canonical import JsonValue
from sovereign_operator.audit.checkpoint import CheckpointReason, signature_problem
from sovereign_operator.audit.findings import (
    Anchor,
    AnchorError,
    CheckpointSeen,
    Failure,
    Location,
    Problem,
    Summary,
    VerifyResult,
)
from sovereign_operator.audit.record import GENESIS_HASH, RecordType, decode_line
from sovereign_operator.audit.segments import chain_order

_RECENT: Final = 256  # how far back a repeated seq can be traced to the line it repeats


@dataclass(frozen=True)
class _Seen:
    """What the verifier keeps of a record it has accepted."""

    location: Location
    seq: int
    hash: str
    prev_hash: str
    checkpoint: CheckpointSeen | None

    @property
    def checkpoint_reason(self) -> str | None:
        return self.checkpoint.reason if self.checkpoint else None


@dataclass
class _State:
    """The verifier's running state; `summary()` freezes it into a Summary."""

    anchor: Anchor | None
    files: list[str] = field(default_factory=list)
    records: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    previous: _Seen | None = None
    last_checkpoint: CheckpointSeen | None = None
    key_ids: list[str] = field(default_factory=list)
    fork: tuple[_Seen, _Seen] | None = None
    """Two consecutive records with the same seq and predecessor, waiting for the next line
    to tell which one the rest of the chain continues from (the other was inserted)."""
    recent: deque[_Seen] = field(default_factory=lambda: deque(maxlen=_RECENT))

    def summary(self) -> Summary:
        last = self.previous
        reached = self.anchor is not None and last is not None and last.seq >= self.anchor.seq
        return Summary(
            files=tuple(self.files),
            records=self.records,
            checkpoints=self.checkpoints,
            first_seq=self.first_seq,
            last=last.location if last else None,
            last_checkpoint=self.last_checkpoint,
            key_ids=tuple(self.key_ids),
            anchor=self.anchor if reached else None,
        )


class _Verifier:
    def __init__(
        self, keys: Mapping[str, Ed25519PublicKey], anchor: Anchor | None, require_sealed: bool
    ) -> None:
        self._keys = keys
        self._anchor = anchor
        self._require_sealed = require_sealed
        self.state = _State(anchor)

    def file(self, name: str, lines: Iterable[bytes], *, is_last: bool) -> Failure | None:
        number = 0
        for number, raw in enumerate(lines, start=1):
            failure = self._line(name, number, raw)
            if failure is not None:
                return failure
        self.state.files.append(name)
        previous = self.state.previous
        if number == 0:
            # The active file is empty right after a rotation; any other empty file lost its records.
            return (
                None
                if is_last
                else Failure(Problem.EMPTY_FILE, Location(name, 1), "file has no records")
            )
        if is_last or previous is None or self.state.fork is not None:
            return None
        if previous.checkpoint_reason != CheckpointReason.ROTATE.value:
            return Failure(
                Problem.SEGMENT_CUT,
                previous.location,
                "a rotated file must end with its rotation checkpoint, but ends here: records "
                "were cut from its end, or the next file given is not its successor",
            )
        return None

    def finish(self, first_file: str) -> Failure | None:
        state = self.state
        if state.fork is not None:
            first, second = state.fork
            return _fork_failure(second.location, first, second)
        summary = state.summary()
        last = summary.last
        if last is None or last.seq is None:
            return Failure(Problem.NO_RECORDS, Location(first_file, 0), "no records to verify")
        if self._anchor is not None and last.seq < self._anchor.seq:
            return Failure(
                Problem.TRUNCATED,
                last,
                f"the log ends here, but the anchor proves records through seq {self._anchor.seq} "
                f"existed: {self._anchor.seq - last.seq} record(s) after this line were cut off",
            )
        if self._require_sealed and not summary.sealed:
            return Failure(
                Problem.UNSEALED,
                last,
                f"the log ends here without a seal: {summary.unsigned_tail} record(s) after "
                "the last checkpoint are unsigned, and records after this line may have been cut "
                "off (or the operator is still running, or crashed)",
            )
        return None

    def _line(self, name: str, number: int, raw: bytes) -> Failure | None:
        state = self.state
        if not raw.endswith(b"\n"):
            return Failure(
                Problem.TORN,
                Location(name, number),
                "incomplete last record (no newline): a write interrupted by a crash, which the "
                "operator quarantines and records when it restarts, or a file cut mid-record",
            )
        decoded = decode_line(raw[:-1])
        record = decoded.record
        if decoded.problem is not None or record is None:
            problem = Problem(decoded.problem.value) if decoded.problem else Problem.MALFORMED
            claimed = record.get("seq") if record else None  # what the damaged line claims
            seq = claimed if isinstance(claimed, int) and not isinstance(claimed, bool) else None
            hint = _expected_hint(state.previous)
            return Failure(
                problem,
                Location(name, number, seq),
                f"{decoded.detail}: the line was modified{hint}",
            )
        seq, own, prev = decoded.seq, decoded.hash, decoded.prev_hash
        where = Location(name, number, seq)
        checkpoint: CheckpointSeen | None = None
        if record["type"] == RecordType.CHECKPOINT.value:
            section = record.get("checkpoint")
            section = section if isinstance(section, dict) else {}
            checkpoint = CheckpointSeen(
                where,
                seq,
                str(record["time"]),
                str(section.get("reason")),
                str(section.get("keyId")),
            )
        seen = _Seen(where, seq, own, prev, checkpoint)
        failure = self._link(seen)
        if failure is None and checkpoint is not None:
            failure = self._checkpoint(seen, record)
        if (
            failure is None
            and self._anchor is not None
            and seq == self._anchor.seq
            and own != self._anchor.hash
        ):
            failure = Failure(
                Problem.ANCHOR_MISMATCH,
                where,
                "this record differs from the anchor checkpoint of the same seq: the log was "
                "rewritten at or before this line",
            )
        if failure is not None:
            return failure
        self._accept(seen)
        return None

    def _link(self, seen: _Seen) -> Failure | None:
        """Sequence and hash link to the previous record, with a diagnosis when they break."""
        state = self.state
        previous = state.previous
        if state.fork is not None:
            return self._resolve_fork(seen, *state.fork)
        if previous is None:
            return _head_problem(seen)
        if seen.seq == previous.seq and seen.prev_hash == previous.prev_hash:
            return self._same_position(seen, previous)
        if seen.seq != previous.seq + 1:
            return self._sequence_problem(seen, previous)
        if seen.prev_hash != previous.hash:
            return Failure(
                Problem.BROKEN_LINK,
                seen.location,
                f"does not link to the record before it at {previous.location}: that record was "
                "rewritten (with a recomputed hash), or this one was",
            )
        return None

    def _same_position(self, seen: _Seen, previous: _Seen) -> Failure | None:
        """A record that hangs off the same predecessor as the one before it."""
        if seen.hash == previous.hash:
            return Failure(
                Problem.INSERTED, seen.location, f"repeats the record at {previous.location}"
            )
        self.state.fork = (previous, seen)  # the next line tells which one was inserted
        return None

    def _resolve_fork(self, seen: _Seen, first: _Seen, second: _Seen) -> Failure:
        """Two records claimed one seq; the one the chain continues from is the original."""
        self.state.fork = None
        if seen.prev_hash == second.hash:
            return _fork_failure(first.location, first, second, inserted=first)
        if seen.prev_hash == first.hash:
            return _fork_failure(second.location, first, second, inserted=second)
        return _fork_failure(second.location, first, second)

    def _sequence_problem(self, seen: _Seen, previous: _Seen) -> Failure:
        if seen.seq > previous.seq + 1:
            first, last = previous.seq + 1, seen.seq - 1
            missing = f"record {first} was" if first == last else f"records {first}..{last} were"
            return Failure(
                Problem.MISSING_RECORDS,
                seen.location,
                f"expected seq {first} after {previous.location}: {missing} deleted here, "
                "or this record was moved here from later",
            )
        earlier = next((s for s in self.state.recent if s.seq == seen.seq), None)
        at = f" (seq {seen.seq} is at {earlier.location})" if earlier else ""
        return Failure(
            Problem.OUT_OF_ORDER,
            seen.location,
            f"expected seq {previous.seq + 1} after {previous.location} but found "
            f"seq {seen.seq}: records were reordered or duplicated{at}",
        )

    def _checkpoint(self, seen: _Seen, record: dict[str, JsonValue]) -> Failure | None:
        problem = signature_problem(record, self._keys)
        if problem is None:
            return None
        since = self.state.last_checkpoint
        scope = (
            f"records after the checkpoint at {since.location} up to here"
            if since
            else "records before this line"
        )
        return Failure(
            Problem.BAD_CHECKPOINT,
            seen.location,
            f"{problem}; {scope} cannot be trusted (they may have been rewritten)",
        )

    def _accept(self, seen: _Seen) -> None:
        state = self.state
        state.records += 1
        if state.first_seq is None:
            state.first_seq = seen.seq
        if seen.checkpoint is not None:
            state.checkpoints += 1
            state.last_checkpoint = seen.checkpoint
            if seen.checkpoint.key_id not in state.key_ids:
                state.key_ids.append(seen.checkpoint.key_id)
        state.previous = seen
        state.recent.append(seen)


def _head_problem(seen: _Seen) -> Failure | None:
    if seen.seq == 0 and seen.prev_hash == GENESIS_HASH:
        return None
    return Failure(
        Problem.MISSING_HEAD,
        seen.location,
        f"the chain must start at seq 0 but starts at seq {seen.seq}: earlier records were "
        "deleted, or pass every rotated file (audit.log*)",
    )


def _expected_hint(previous: _Seen | None) -> str:
    if previous is None:
        return ""
    return f" (expected seq {previous.seq + 1} here, after {previous.location})"


def _fork_failure(
    where: Location, first: _Seen, second: _Seen, *, inserted: _Seen | None = None
) -> Failure:
    if inserted is not None:
        other = second if inserted is first else first
        message = (
            f"this record was inserted: it claims seq {inserted.seq} like {other.location}, "
            "and the chain continues from that one"
        )
    else:
        message = (
            f"{first.location} and {second.location} both claim seq {first.seq} after the same "
            "record: one of them was inserted"
        )
    return Failure(Problem.INSERTED, where, message)


def load_anchor(text: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Anchor:
    """An anchor from a checkpoint line (the ConfigMap's latest-checkpoint.json)."""
    lines = [line for line in text.strip().split(b"\n") if line.strip()]
    if not lines:
        raise AnchorError("the anchor is empty; give a checkpoint record (one JSON line)")
    decoded = decode_line(lines[-1].strip())
    record = decoded.record
    if decoded.problem is not None or record is None:
        raise AnchorError(f"the anchor is not a valid record: {decoded.detail}")
    if record["type"] != RecordType.CHECKPOINT.value:
        raise AnchorError("the anchor must be a checkpoint record, not an event")
    problem = signature_problem(record, keys)
    if problem is not None:
        raise AnchorError(f"the anchor checkpoint does not verify: {problem}")
    return Anchor(int(str(record["seq"])), str(record["hash"]))


def verify_logs(
    sources: Sequence[tuple[str, Iterable[bytes]]],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    anchor: Anchor | None = None,
    require_sealed: bool = False,
) -> VerifyResult:
    """Verify files already in chain order; each source yields its lines with their newlines."""
    verifier = _Verifier(keys, anchor, require_sealed)
    for index, (name, lines) in enumerate(sources):
        failure = verifier.file(name, lines, is_last=index == len(sources) - 1)
        if failure is not None:
            return VerifyResult(verifier.state.summary(), failure)
    first = sources[0][0] if sources else "(no files)"
    failure = verifier.finish(first)
    return VerifyResult(verifier.state.summary(), failure)


def verify_files(
    paths: Sequence[Path],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    anchor: Anchor | None = None,
    require_sealed: bool = False,
) -> VerifyResult:
    """Verify log files (rotated ones included, in any order) as one chain."""
    ordered = chain_order(paths)
    handles = [path.open("rb") for path in ordered]
    try:
        return verify_logs(
            [(str(path), handle) for path, handle in zip(ordered, handles, strict=True)],
            keys,
            anchor=anchor,
            require_sealed=require_sealed,
        )
    finally:
        for handle in handles:
            handle.close()
