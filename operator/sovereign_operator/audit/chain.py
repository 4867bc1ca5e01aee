"""The hash chain: sequence numbers and links, and where an existing log left off.

`Chain` is the in-memory writer state (pure); `read_tail` and `head_of` find the head of
a log on disk so a restarted operator continues it: the next record gets the next
sequence number and links to the last record's hash. No gap, no fork.

A torn last line. Sinks write each batch with one write() and acknowledge records only
after the newline and fsync, so bytes after the last newline were never acknowledged to
anyone: they are what a crash (or power loss) mid-write leaves. They are *not* silently
dropped: `FileSink` moves them to a quarantine file and the trail records an
`audit-recover` event naming its size and sha256, so the discard is itself in the chain.
`sovereign audit verify` on a log that still has a torn tail (nobody restarted the
writer yet) fails at that line, since a file cut mid-record looks exactly the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from sovereign_operator.audit.checkpoint import CheckpointReason, Signer, checkpoint_body
from sovereign_operator.audit.record import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    RecordType,
    chain_fields,
    decode_line,
    seal_record,
)

_READ_BLOCK: Final = 64 * 1024


class ChainError(RuntimeError):
    """The existing log cannot be continued safely; the message says where and why."""


@dataclass(frozen=True)
class ChainHead:
    """Where the chain stands: the next sequence number and the hash to link to."""

    next_seq: int = 0
    last_hash: str = GENESIS_HASH
    last_checkpoint_reason: CheckpointReason | None = None
    """The reason of the last record when it is a checkpoint; None for an event or empty log."""

    @property
    def is_empty(self) -> bool:
        return self.next_seq == 0


class Chain:
    """Appends records in order. Not thread-safe: the trail serialises calls under a lock."""

    def __init__(self, head: ChainHead, signer: Signer | None) -> None:
        self._head = head
        self._signer = signer
        self.records_since_checkpoint = 0 if head.last_checkpoint_reason or head.is_empty else 1

    @property
    def head(self) -> ChainHead:
        return self._head

    @property
    def signs(self) -> bool:
        return self._signer is not None

    def append(self, event: AuditEvent, moment: datetime) -> AuditRecord:
        """The next event record."""
        body = chain_fields(self._head.next_seq, moment, RecordType.EVENT, self._head.last_hash)
        body.update(event.to_wire())
        record = seal_record(body)
        self._advance(record, None)
        self.records_since_checkpoint += 1
        return record

    def checkpoint(self, reason: CheckpointReason, moment: datetime) -> AuditRecord:
        """A signed checkpoint over every record so far."""
        if self._signer is None:
            raise ChainError("checkpoints need a signing key; none is configured")
        body = checkpoint_body(
            self._head.next_seq, moment, self._head.last_hash, reason, self._signer
        )
        record = seal_record(body)
        self._advance(record, reason)
        self.records_since_checkpoint = 0
        return record

    def _advance(self, record: AuditRecord, reason: CheckpointReason | None) -> None:
        self._head = ChainHead(record.seq + 1, record.hash, reason)


@dataclass(frozen=True)
class LogTail:
    """The end of a log file: its last complete line and any bytes after the last newline."""

    last_line: bytes | None
    complete_size: int
    torn: bytes


def read_tail(path: Path) -> LogTail:
    """Read backwards from the end until the last complete line is found."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        buffer = b""
        position = size
        while position > 0:
            step = min(_READ_BLOCK, position)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer
            last_newline = buffer.rfind(b"\n")
            if last_newline == -1:
                continue
            previous = buffer.rfind(b"\n", 0, last_newline)
            if previous != -1 or position == 0:
                torn = buffer[last_newline + 1 :]
                return LogTail(buffer[previous + 1 : last_newline], size - len(torn), torn)
        return LogTail(None, 0, buffer)


def head_of(line: bytes, *, where: str) -> ChainHead:
    """The chain head after `line`, which must be a valid record (the writer checks its own tail)."""
    decoded = decode_line(line)
    if decoded.problem is not None or decoded.record is None:
        raise ChainError(
            f"{where}: the last record is not valid ({decoded.detail}); refusing to continue "
            "a chain whose head was altered. Run `sovereign audit verify` on the log."
        )
    record = decoded.record
    reason: CheckpointReason | None = None
    if record["type"] == RecordType.CHECKPOINT.value:
        section = record.get("checkpoint")
        raw_reason = section.get("reason") if isinstance(section, dict) else None
        try:
            reason = CheckpointReason(str(raw_reason))
        except ValueError:
            raise ChainError(f"{where}: the last checkpoint has no known reason") from None
    seq = record["seq"]
    if not isinstance(seq, int):
        raise ChainError(f"{where}: the last record has no integer seq")
    return ChainHead(seq + 1, str(record["hash"]), reason)


def first_seq(path: Path) -> int | None:
    """The sequence number of a file's first record, or None when it has none."""
    with path.open("rb") as handle:
        line = handle.readline()
    if not line.endswith(b"\n"):
        return None
    decoded = decode_line(line[:-1])
    seq = decoded.record.get("seq") if decoded.record else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def records_after(files: list[Path], seq: int) -> list[AuditRecord]:
    """The complete, valid records with a sequence number above `seq`, from `files` in
    chain order (used to re-forward what a crash left written but never handed on)."""
    found: list[AuditRecord] = []
    for path in files:
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                decoded = decode_line(raw[:-1])
                record = decoded.record
                if decoded.problem is None and record is not None and decoded.seq > seq:
                    kind = RecordType(str(record["type"]))
                    found.append(
                        AuditRecord(
                            decoded.seq,
                            str(record["time"]),
                            kind,
                            decoded.prev_hash,
                            decoded.hash,
                            raw,
                        )
                    )
    return found
