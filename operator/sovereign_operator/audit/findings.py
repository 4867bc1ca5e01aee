"""What verifying an audit log found: where a failure is, and what an intact log proves.

What a log can and cannot prove about its end: a prefix of a valid log is itself a valid
log, so cutting records off the end is invisible to the log alone. Two things narrow it:
a seal (the checkpoint written at clean shutdown) and an anchor (a signed checkpoint kept
elsewhere, e.g. the operator's ConfigMap or a remote sink). `Summary.describe` states
exactly what was proven for a given log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Problem(StrEnum):
    """What kind of damage was found."""

    TORN = "torn"
    MALFORMED = "malformed"
    NOT_CANONICAL = "not-canonical"
    HASH_MISMATCH = "hash-mismatch"
    MISSING_HEAD = "missing-head"
    MISSING_RECORDS = "missing-records"
    OUT_OF_ORDER = "out-of-order"
    INSERTED = "inserted"
    BROKEN_LINK = "broken-link"
    BAD_CHECKPOINT = "bad-checkpoint"
    EMPTY_FILE = "empty-file"
    SEGMENT_CUT = "segment-cut"
    ANCHOR_MISMATCH = "anchor-mismatch"
    TRUNCATED = "truncated"
    UNSEALED = "unsealed"
    NO_RECORDS = "no-records"


@dataclass(frozen=True)
class Location:
    """A place in the log: file, 1-based line, and the seq of the record there when known."""

    file: str
    line: int
    seq: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return where if self.seq is None else f"{where} (seq {self.seq})"


@dataclass(frozen=True)
class Failure:
    """The first place the log stops being a valid chain, and what is wrong there."""

    problem: Problem
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.problem.value}: {self.message}"


@dataclass(frozen=True)
class CheckpointSeen:
    """A checkpoint whose signature verified."""

    location: Location
    seq: int
    time: str
    reason: str
    key_id: str


@dataclass(frozen=True)
class Anchor:
    """A signed checkpoint held outside the log; the log must contain it, byte for byte."""

    seq: int
    hash: str


class AnchorError(ValueError):
    """An anchor that is not a valid signed checkpoint."""


@dataclass(frozen=True)
class Summary:
    """What verification established about the log."""

    files: tuple[str, ...] = ()
    records: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    last: Location | None = None
    last_checkpoint: CheckpointSeen | None = None
    key_ids: tuple[str, ...] = ()
    anchor: Anchor | None = None

    @property
    def unsigned_tail(self) -> int:
        """Records after the last checkpoint (all of them when there is none)."""
        if self.last is None or self.last.seq is None:
            return 0
        signed_through = self.last_checkpoint.seq if self.last_checkpoint else -1
        return self.last.seq - signed_through

    @property
    def sealed(self) -> bool:
        checkpoint = self.last_checkpoint
        return self.unsigned_tail == 0 and checkpoint is not None and checkpoint.reason == "seal"

    def describe(self) -> list[str]:
        """Plain statements of what is proven and what is not."""
        if self.last is None or self.last.seq is None or self.first_seq is None:
            return ["no records"]
        last_seq = self.last.seq
        lines = [
            f"{self.records} records in {len(self.files)} file(s), seq {self.first_seq}..{last_seq}; "
            f"{self.checkpoints} signed checkpoint(s)"
            + (f" by {', '.join(self.key_ids)}" if self.key_ids else "")
        ]
        checkpoint = self.last_checkpoint
        if checkpoint is None:
            lines.append(
                "NOT PROVEN: no signed checkpoint. The hash chain shows the records are "
                "consistent with each other, but anyone able to write the file could have "
                "rewritten all of it and recomputed the hashes."
            )
        else:
            lines.append(
                f"PROVEN: records {self.first_seq}..{checkpoint.seq} are exactly as they were "
                f"when the {checkpoint.reason} checkpoint at {checkpoint.location} was signed "
                f"({checkpoint.time}): none was altered, removed, inserted or reordered since."
            )
        tail = self.unsigned_tail
        if checkpoint is not None and tail:
            lines.append(
                f"NOT PROVEN: the {tail} record(s) after it (seq {checkpoint.seq + 1}..{last_seq}) "
                "are linked to it by hash only. That catches damage and piecemeal edits, but "
                "someone able to write the file could rewrite or drop them and recompute the "
                "hashes. A later checkpoint (written every N records or T seconds) proves them."
            )
        if self.anchor is not None:
            lines.append(
                f"PROVEN: the log reaches the anchor checkpoint (seq {self.anchor.seq}), so "
                "nothing up to it was cut off."
            )
        if self.sealed:
            lines.append(
                "The log ends with a seal written at a clean shutdown. Records written after a "
                "later restart and then cut off would not show here; an anchor would show them."
            )
        else:
            lines.append(
                f"NOT PROVEN: whether records after seq {last_seq} existed and were cut off: a log "
                "cut at a record boundary is itself a valid log. Compare with an anchor "
                "(--anchor: the newest checkpoint from the ConfigMap or a remote sink)."
            )
        return lines


@dataclass(frozen=True)
class VerifyResult:
    """The summary of what verified, and the first failure (None for an intact log)."""

    summary: Summary
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None
