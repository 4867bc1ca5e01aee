"""Sinks that forward records elsewhere: stdout, syslog (RFC 5424 over TCP), HTTP POST.

Every forwarded record goes through a disk spool first (write-ahead), and a delivery
thread sends from the spool, retrying with exponential backoff while the destination is
down. So a slow or failed destination never blocks the operator, a restart resumes from
the spool, and nothing is dropped; the price is at-least-once delivery: a record sent
just before a crash or a lost connection may arrive twice. Receivers deduplicate by
`seq` (and can check the chain with `sovereign audit verify`).
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import sys
import threading
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import tenacity

from sovereign_operator.audit.health import SinkHealth
from sovereign_operator.audit.record import AuditRecord

_READ_CHUNK: Final = 256 * 1024
_COMPACT_BYTES: Final = 16 << 20
_REPLAY_BYTES: Final = 4 << 20
"""What a new syslog connection re-sends first: more than the socket buffers of both ends
usually hold, i.e. more than a receiver that went away can have left unread."""


def _replace_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file of its own. Each file needs its own:
    the cursor and the through-mark are written by different threads, and one shared
    `spool-NAME.tmp` let one thread rename the other's half-written file away."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


class DeliveryError(RuntimeError):
    """The destination refused a batch (e.g. HTTP 503); it will be retried."""


class Spool:
    """An append-only file of records not yet delivered, and a persisted read cursor.

    The cursor file holds the spool file's inode and a byte offset, replaced atomically
    after each delivered batch. When everything is delivered the cursor is reset first and
    the file truncated after, so a crash in between re-sends records (duplicates) rather
    than skipping any. Under steady load the file may never be fully drained at a commit,
    so once the delivered prefix is large the undelivered rest is copied to a new file
    that replaces the old one; a cursor naming the old inode then reads as 0.
    """

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / f"spool-{name}.jsonl"
        self._cursor_path = directory / f"spool-{name}.cursor"
        self._through_path = directory / f"spool-{name}.through"
        self._lock = threading.Lock()
        self._fd = self._open()
        size = os.fstat(self._fd).st_size
        complete = self._complete_size(size)
        if complete != size:
            # A torn append from a crash: those records are in the main log; the spool
            # must only ever hold whole lines.
            os.ftruncate(self._fd, complete)
        self._cursor = self._load_cursor(complete)
        self.pending = self._count_lines(self._cursor, complete)

    def append(self, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        with self._lock:
            size = os.fstat(self._fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                os.ftruncate(self._fd, size)  # never leave half a line for the next append
                raise
            self.pending += len(lines)

    def mark_through(self, seq: int) -> None:
        """Note the last seq accepted, so a restart can tell what a crash kept from it."""
        _replace_atomically(self._through_path, str(seq))

    def through(self) -> int | None:
        """The last seq this spool accepted; None for a spool that never accepted any."""
        try:
            return int(self._through_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def read(self, max_bytes: int) -> tuple[list[bytes], int]:
        """Whole lines from the cursor, up to the one that reaches `max_bytes` (at least one),
        and the offset after them."""
        with self._lock:
            fd, start, size = self._fd, self._cursor, os.fstat(self._fd).st_size
        data = b""
        while start + len(data) < size:
            data += os.pread(fd, max(max_bytes, _READ_CHUNK), start + len(data))
            if len(data) >= max_bytes and b"\n" in data:
                break
        cut = data.find(b"\n", max(0, max_bytes - 1))  # the line that reaches max_bytes
        end = (cut if cut != -1 else data.rfind(b"\n")) + 1
        return [line + b"\n" for line in data[: end - 1].split(b"\n")] if end else [], start + end

    def commit(self, offset: int, count: int) -> None:
        """Mark everything before `offset` delivered."""
        with self._lock:
            self.pending -= count
            size = os.fstat(self._fd).st_size
            if offset >= size:
                self._store_cursor(0)
                os.ftruncate(self._fd, 0)
                offset = 0
            elif offset >= _COMPACT_BYTES:
                self._compact(offset, size)
                offset = 0
            else:
                self._store_cursor(offset)
            self._cursor = offset

    def _compact(self, offset: int, size: int) -> None:
        temporary = self._path.with_suffix(".compact")
        with temporary.open("wb") as handle:
            position = offset
            while position < size:
                chunk = os.pread(self._fd, min(_READ_CHUNK, size - position), position)
                handle.write(chunk)
                position += len(chunk)
        temporary.replace(self._path)
        os.close(self._fd)
        self._fd = self._open()
        self._store_cursor(0)

    def close(self) -> None:
        os.close(self._fd)

    def _complete_size(self, size: int) -> int:
        """The size up to and including the last newline."""
        end = size
        while end > 0:
            start = max(0, end - _READ_CHUNK)
            newline = os.pread(self._fd, end - start, start).rfind(b"\n")
            if newline != -1:
                return start + newline + 1
            end = start
        return 0

    def _open(self) -> int:
        return os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)

    def _load_cursor(self, size: int) -> int:
        try:
            inode, offset = (int(part) for part in self._cursor_path.read_text().split())
        except (FileNotFoundError, ValueError):
            return 0
        same_file = inode == os.fstat(self._fd).st_ino
        return offset if same_file and 0 <= offset <= size else 0

    def _store_cursor(self, offset: int) -> None:
        _replace_atomically(self._cursor_path, f"{os.fstat(self._fd).st_ino} {offset}")

    def _count_lines(self, start: int, end: int) -> int:
        count, position = 0, start
        while position < end:
            chunk = os.pread(self._fd, min(_READ_CHUNK, end - position), position)
            count += chunk.count(b"\n")
            position += len(chunk)
        return count


@dataclass(frozen=True)
class Backoff:
    """Retry timing for a failing destination: exponential with jitter, capped."""

    initial: float = 0.5
    maximum: float = 30.0


class ForwardingSink(ABC):
    """A destination fed from a spool by its own delivery thread."""

    def __init__(
        self,
        name: str,
        spool_dir: Path,
        *,
        backoff: Backoff = Backoff(),
        batch_bytes: int = 256 * 1024,
    ) -> None:
        self.name = name
        self._spool = Spool(spool_dir, name)
        self._backoff = backoff
        self._batch_bytes = batch_bytes
        self._wake = threading.Event()
        self._draining = threading.Event()
        self._abort = threading.Event()
        self._last_error = ""
        self._unspooled: list[bytes] = []
        self._thread = threading.Thread(target=self._run, name=f"audit-{name}", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[AuditRecord]) -> None:
        """Queue records for delivery (safe from a process crash once this returns).

        When the spool itself cannot be written (disk full), records wait in memory and
        the sink reports unhealthy; the file sink still holds them.
        """
        self._unspooled.extend(record.line for record in records)
        try:
            self._spool.append(self._unspooled)
            if records:
                self._spool.mark_through(records[-1].seq)
        except OSError as error:
            self._last_error = f"{self.name}: spool not writable: {error}"
            return
        self._unspooled = []
        self._wake.set()

    def spooled_through(self) -> int | None:
        """The last seq handed to this sink before now (None: it never had one)."""
        return self._spool.through()

    def health(self) -> SinkHealth:
        return SinkHealth(self.name, not self._last_error, self._spool.pending, self._last_error)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is spooled for up to `timeout` seconds; the rest waits for a restart."""
        self._draining.set()
        self._wake.set()
        self._thread.join(timeout)
        self._abort.set()
        self._thread.join()
        self._disconnect()
        self._spool.close()

    @abstractmethod
    def _deliver(self, lines: list[bytes]) -> None:
        """Send a batch; raise OSError or DeliveryError when it did not arrive."""

    def _disconnect(self) -> None:  # noqa: B027 - optional hook: only connected sinks need it
        """Drop a connection after a failure, so the next attempt starts clean."""

    def _pause(self, seconds: float) -> None:
        self._abort.wait(seconds)  # close() cuts a backoff short

    def _run(self) -> None:
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential_jitter(
                multiplier=self._backoff.initial,
                max=self._backoff.maximum,
                jitter=self._backoff.initial,
            ),
            retry=tenacity.retry_if_exception_type((OSError, DeliveryError)),
            stop=lambda _state: self._abort.is_set(),
            sleep=self._pause,
            before_sleep=self._failed,
            reraise=True,
        )
        while not self._abort.is_set():
            self._wake.clear()
            lines, end = self._spool.read(self._batch_bytes)
            if not lines:
                if self._draining.is_set():
                    return
                self._wake.wait(timeout=1.0)
                continue
            try:
                retrying(self._deliver, lines)
            except (OSError, DeliveryError):
                return  # aborted while failing; the spool keeps the batch
            self._last_error = ""
            self._spool.commit(end, len(lines))

    def _failed(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._last_error = f"{self.name}: {error}" if error else f"{self.name}: delivery failed"
        self._disconnect()


class StdoutSink(ForwardingSink):
    """JSON lines on standard output, for the container log pipeline."""

    def __init__(
        self,
        spool_dir: Path,
        *,
        stream: BinaryIO | None = None,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        super().__init__("stdout", spool_dir, backoff=backoff)

    def _deliver(self, lines: list[bytes]) -> None:
        self._stream.write(b"".join(lines))
        self._stream.flush()


@dataclass(frozen=True)
class SyslogTarget:
    host: str
    port: int = 514
    app_name: str = "sovereign-operator"
    facility: int = 13
    """13 is "log audit" in RFC 5424's facility table."""
    timeout: float = 5.0


class SyslogSink(ForwardingSink):
    """RFC 5424 messages over TCP with octet-counting framing (RFC 6587 section 3.4.1).

    Octet counting rather than newline framing because the message is the record's JSON,
    and a framing byte that can occur inside the payload is a framing bug waiting to happen.
    Plain TCP cannot tell which bytes the receiver read before a connection died: the
    kernel accepts a batch, the receiver goes down with it unread, and `sendall` had
    returned. So before each batch the sink checks whether the peer closed the connection,
    and every new connection first re-sends the most recent records (up to 4 MiB) before
    the new ones: a receiver that went away and came back gets all of them, some twice.
    Only an application-level acknowledgement (RELP) would make that exact.
    """

    def __init__(
        self,
        target: SyslogTarget,
        spool_dir: Path,
        *,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._target = target
        self._socket: socket.socket | None = None
        self._recent: deque[bytes] = deque()
        self._recent_bytes = 0
        self._hostname = (socket.gethostname() or "-")[:255]
        self._procid = str(os.getpid())
        super().__init__("syslog", spool_dir, backoff=backoff)

    def message(self, line: bytes) -> bytes:
        """One RFC 5424 SYSLOG-MSG; MSG is the record's canonical JSON, without a BOM
        (MSG-ANY), because JSON consumers downstream treat a BOM as garbage."""
        record = json.loads(line)
        severity = 5 if record.get("outcome") == "denied" else 6  # notice / informational
        priority = self._target.facility * 8 + severity
        msgid = str(record.get("type", "audit"))[:32]
        header = (
            f"<{priority}>1 {record.get('time', '-')} {self._hostname} "
            f"{self._target.app_name[:48]} {self._procid} {msgid} - "
        )
        return header.encode("ascii", "replace") + line.rstrip(b"\n")

    def _deliver(self, lines: list[bytes]) -> None:
        connection, fresh = self._connection()
        frames = []
        for line in [*self._recent, *lines] if fresh else lines:
            message = self.message(line)
            frames.append(b"%d %s" % (len(message), message))
        connection.sendall(b"".join(frames))
        self._remember(lines)

    def _remember(self, lines: list[bytes]) -> None:
        """Keep the newest lines sent, for the next connection to send again."""
        self._recent.extend(lines)
        self._recent_bytes += sum(len(line) for line in lines)
        while self._recent_bytes > _REPLAY_BYTES and len(self._recent) > 1:
            self._recent_bytes -= len(self._recent.popleft())

    def _connection(self) -> tuple[socket.socket, bool]:
        """The open connection, or a new one (True) when there was none or the peer left."""
        if self._socket is not None and _peer_closed(self._socket):
            self._disconnect()
        if self._socket is not None:
            return self._socket, False
        self._socket = socket.create_connection(
            (self._target.host, self._target.port), timeout=self._target.timeout
        )
        return self._socket, True

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _peer_closed(connection: socket.socket) -> bool:
    """True when the receiver has closed its end (a syslog receiver never sends data)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@dataclass(frozen=True)
class HttpTarget:
    url: str
    token_file: Path | None = None
    """A bearer token read before every request, so a rotated token is picked up."""
    ca_file: Path | None = None
    timeout: float = 10.0


class HttpSink(ForwardingSink):
    """Batches of JSON lines POSTed as application/x-ndjson; any 2xx means delivered."""

    def __init__(
        self,
        target: HttpTarget,
        spool_dir: Path,
        *,
        backoff: Backoff = Backoff(),
    ) -> None:
        if not target.url.startswith(("http://", "https://")):
            raise ValueError(f"audit HTTP sink URL must be http(s)://, not {target.url!r}")
        self._target = target
        self._context = (
            ssl.create_default_context(cafile=str(target.ca_file)) if target.ca_file else None
        )
        super().__init__("http", spool_dir, backoff=backoff)

    def _deliver(self, lines: list[bytes]) -> None:
        headers = {"Content-Type": "application/x-ndjson"}
        if self._target.token_file is not None:
            headers["Authorization"] = "Bearer " + self._target.token_file.read_text().strip()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._target.url, data=b"".join(lines), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - http(s) only, checked in __init__
                request, timeout=self._target.timeout, context=self._context
            ) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            raise DeliveryError(f"HTTP {error.code} from {self._target.url}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status} from {self._target.url}")
