"""The file sink: the durable, authoritative copy of the audit log.

Records reach the file before anyone is told they were recorded: a batch is one write()
followed by one fdatasync, so many concurrent records share one disk flush (group
commit) and none is acknowledged before it is on disk. Rotation renames the active file
to `audit.log.<first seq>` after its last record, a signed rotation checkpoint, so every
rotated file ends proven and the next file continues the same chain.

Only one process may write a log: an exclusive flock on `.audit.log.lock` refuses a
second writer (two writers would fork the chain).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sovereign_operator.audit.chain import ChainError, ChainHead, first_seq, head_of, read_tail
from sovereign_operator.audit.checkpoint import CheckpointReason
from sovereign_operator.audit.health import SinkHealth
from sovereign_operator.audit.record import AuditRecord
from sovereign_operator.audit.segments import (
    lock_path,
    quarantine_path,
    rotated_segments,
    segment_path,
)


@dataclass(frozen=True)
class TornTail:
    """Bytes after the last newline found at start-up, moved aside (see chain.py)."""

    offset: int
    size: int
    sha256: str
    quarantine: str


@dataclass(frozen=True)
class OpenedLog:
    head: ChainHead
    torn: TornTail | None


class AuditLockError(RuntimeError):
    """Another process is writing this log."""


def _fsync_dir(directory: Path) -> None:
    # A rename or a new file is durable only once its directory entry is.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSink:
    """Append-only JSON-lines file with fsync batching and chain-keeping rotation."""

    name = "file"

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self._first_seq: int | None = None
        self._last_error = ""

    @property
    def size(self) -> int:
        """Bytes in the active file."""
        return self._size

    def open(self) -> OpenedLog:
        """Lock the log, set aside a torn tail, finish an interrupted rotation, find the head."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            return self._open_locked()
        except Exception:
            self.close()
            raise

    def _open_locked(self) -> OpenedLog:
        torn = self._recover_torn_tail() if self.path.exists() else None
        head = self._head_of_active()
        if head is not None and head.last_checkpoint_reason is CheckpointReason.ROTATE:
            # The rotation checkpoint is written, the rename did not happen: do it now.
            self._rename_active()
        if head is None:
            segments = rotated_segments(self.path)
            head = self._head_of_segment(segments[-1]) if segments else ChainHead()
        self._open_active()
        return OpenedLog(head, torn)

    def write(self, records: Sequence[AuditRecord], *, rotate_after: bool = False) -> None:
        """Append records and flush them to disk; on failure the file is left as it was."""
        if self._lock_fd is None:
            raise RuntimeError("the file sink is not open")
        data = b"".join(record.line for record in records)
        try:
            fd = self._fd if self._fd is not None else self._reopen()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fdatasync(fd)
        except OSError as error:
            self._last_error = f"{self.path}: {error}"
            self._restore()
            raise
        self._last_error = ""
        if self._first_seq is None and records:
            self._first_seq = records[0].seq
        self._size += len(data)
        if rotate_after:
            self._rotate()

    def health(self) -> SinkHealth:
        return SinkHealth(self.name, not self._last_error, 0, self._last_error)

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditLockError(f"{self.path} is being written by another process") from None
        self._lock_fd = fd

    def _recover_torn_tail(self) -> TornTail | None:
        tail = read_tail(self.path)
        if not tail.torn:
            return None
        digest = "sha256:" + hashlib.sha256(tail.torn).hexdigest()
        quarantine = quarantine_path(self.path, tail.complete_size, digest)
        with quarantine.open("wb") as handle:
            handle.write(tail.torn)
            handle.flush()
            os.fsync(handle.fileno())
        with self.path.open("r+b") as handle:
            handle.truncate(tail.complete_size)
            os.fsync(handle.fileno())
        _fsync_dir(self.path.parent)
        return TornTail(tail.complete_size, len(tail.torn), digest, quarantine.name)

    def _head_of_active(self) -> ChainHead | None:
        if not self.path.exists():
            return None
        tail = read_tail(self.path)
        return head_of(tail.last_line, where=str(self.path)) if tail.last_line else None

    def _head_of_segment(self, segment: Path) -> ChainHead:
        tail = read_tail(segment)
        if tail.torn or tail.last_line is None:
            raise ChainError(f"{segment}: a rotated file must end with a complete record")
        return head_of(tail.last_line, where=str(segment))

    def _open_active(self) -> None:
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if created:
            _fsync_dir(self.path.parent)
        self._size = os.fstat(self._fd).st_size
        self._first_seq = first_seq(self.path) if self._size else None

    def _rename_active(self) -> None:
        seq = first_seq(self.path)
        if seq is None:
            raise ChainError(f"{self.path}: cannot rotate a file without a first record")
        self.path.rename(segment_path(self.path, seq))
        _fsync_dir(self.path.parent)

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._rename_active()
        self._open_active()

    def _restore(self) -> None:
        """Cut a partly written batch off, so a retry rewrites it whole.

        After a failed fsync the page cache may hold pages the kernel has given up on;
        reopening and truncating to the last size known to be durable is the safe retry.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self._reopen()
        except OSError:
            self._fd = None  # the next write tries again

    def _reopen(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd
