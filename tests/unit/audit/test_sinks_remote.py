"""Forwarding sinks against real receivers on loopback, and a writer killed mid-way.

These run real sockets, an aiohttp server and a child process (no cluster), so they take
a second or two each and are marked `integration` rather than `unit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from sovereign_operator.audit.checkpoint import CheckpointPolicy
from sovereign_operator.audit.forwarding import (
    Backoff,
    HttpSink,
    HttpTarget,
    StdoutSink,
    SyslogSink,
    SyslogTarget,
)
from sovereign_operator.audit.record import Action, Actor, ActorKind, ObjectRef
from sovereign_operator.audit.segments import rotated_segments
from sovereign_operator.audit.sinks import FileSink
from sovereign_operator.audit.trail import AuditTrail
from sovereign_operator.audit.verify import verify_files
from tests.unit.audit.logs import KEY, KEYS, parse

pytestmark = pytest.mark.integration

ALICE = Actor(ActorKind.ADMISSION, "alice")
TARGET = ObjectRef("ModelDeployment", "llama", "clinical-ai")
FAST = Backoff(initial=0.02, maximum=0.2)
RFC5424 = re.compile(rb"^<(\d+)>1 (\S+) (\S+) (\S+) (\d+) (\S+) - (\{.*\})$")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class SyslogReceiver:
    """A TCP syslog receiver that parses octet-counted frames (RFC 6587 3.4.1)."""

    def __init__(self, port: int) -> None:
        self.messages: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._server.settimeout(0.1)
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                try:
                    chunk = connection.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if len(rest) < int(length):
                        break
                    self.messages.append(rest[: int(length)])
                    buffer = rest[int(length) :]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):  # already closed by the sender
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def seqs(self) -> list[int]:
        return [json.loads(RFC5424.match(m)[7])["seq"] for m in self.messages]  # type: ignore[index]

    def wait_for_seqs(self, count: int) -> None:
        """Every record 0..count-1 arrived, in order. The sender returns once the bytes are
        in the kernel; this receiver's thread parses them a moment later. Duplicates are
        allowed: on reconnect the sink replays recent records (at-least-once delivery)."""
        wanted = list(range(count))
        wait_for(lambda: list(dict.fromkeys(self.seqs())) == wanted, timeout=10)


def test_syslog_receives_every_record_in_order_after_an_outage(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: the receiver is down
    syslog = SyslogSink(
        SyslogTarget("127.0.0.1", port, timeout=1.0), tmp_path / "spool", backoff=FAST
    )
    trail = AuditTrail(
        file_sink=FileSink(tmp_path / "audit.log"),
        forwarders=[syslog],
        signer=KEY,
        checkpoints=CheckpointPolicy(every_records=4, every_seconds=3600),
    )
    receiver: SyslogReceiver | None = None
    try:
        for _ in range(10):
            trail.record(ALICE, Action.CREATE, TARGET)  # durable in the file meanwhile
        wait_for(lambda: not trail.health().healthy)
        assert trail.should_pause_changes()
        assert syslog.health().pending >= 10
        receiver = up = SyslogReceiver(port)  # the receiver comes up
        for _ in range(5):
            trail.record(ALICE, Action.PATCH, TARGET, outcome="denied")
        total = trail.head.next_seq
        wait_for(lambda: set(range(total)) <= set(up.seqs()))
        # In order; a connection lost under load is re-sent in part (at least once).
        assert list(dict.fromkeys(receiver.seqs())) == list(range(total))
        wait_for(lambda: trail.health().healthy)
        log_lines = (tmp_path / "audit.log").read_bytes().splitlines()
        unique = dict(zip(receiver.seqs(), receiver.messages, strict=True))  # by seq
        for message, line in zip(unique.values(), log_lines, strict=True):
            match = RFC5424.match(message)
            assert match is not None, message
            assert match[7] == line  # the exact canonical record, verifiable downstream
            record = parse(line)
            severity = int(match[1]) % 8
            assert int(match[1]) // 8 == 13  # facility: log audit
            assert severity == (5 if record.get("outcome") == "denied" else 6)
            assert match[2].decode() == record["time"]
            assert match[6].decode() == record["type"]

        # The receiver restarts: the sink notices the closed connection and reconnects.
        receiver.close()
        before = receiver.seqs()
        for _ in range(3):
            trail.record(ALICE, Action.DELETE, TARGET)
        receiver = again = SyslogReceiver(port)
        total = trail.head.next_seq
        wait_for(lambda: again.seqs()[-1:] == [total - 1])
        # A new connection re-sends the recent records first (at least once, in order).
        after = receiver.seqs()
        assert after == sorted(set(after))
        assert set(before) | set(after) == set(range(total))
    finally:
        trail.close()
        if receiver is not None:
            receiver.close()


def test_records_a_receiver_accepted_but_never_read_are_sent_again(tmp_path: Path) -> None:
    port = free_port()
    deaf = socket.create_server(("127.0.0.1", port))  # accepts, never reads, then dies
    deaf.settimeout(10)
    syslog = SyslogSink(
        SyslogTarget("127.0.0.1", port, timeout=1.0), tmp_path / "spool", backoff=FAST
    )
    trail = AuditTrail(file_sink=FileSink(tmp_path / "audit.log"), forwarders=[syslog])
    receiver: SyslogReceiver | None = None
    try:
        for _ in range(5):
            trail.record(ALICE, Action.PATCH, TARGET)
        connection, _ = deaf.accept()
        wait_for(lambda: syslog.health().pending == 0)  # sent: the kernel took every byte
        # Close with unread data: a reset, and what was sent so far is gone.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
        deaf.close()
        receiver = up = SyslogReceiver(port)
        trail.record(ALICE, Action.DELETE, TARGET)
        total = trail.head.next_seq
        wait_for(lambda: set(range(total)) <= set(up.seqs()))
    finally:
        trail.close()
        deaf.close()
        if receiver is not None:
            receiver.close()


class HttpReceiver:
    """An aiohttp server that refuses the first `refuse` requests with 503."""

    def __init__(self, refuse: int, token: str) -> None:
        self.bodies: list[bytes] = []
        self.refuse = refuse
        self.token = token
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if request.headers.get("Content-Type") != "application/x-ndjson":
            return web.Response(status=415)
        if self.refuse:
            self.refuse -= 1
            return web.Response(status=503)
        self.bodies.append(await request.read())
        return web.Response(status=204)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/audit", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}/audit"
        self._loop.run_until_complete(web.SockSite(self._runner, listener).start())
        self._ready.set()
        self._loop.run_forever()

    def records(self) -> list[dict[str, object]]:
        return [parse(line) for body in self.bodies for line in body.splitlines()]

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(refuse=2, token="s3cret")
    yield receiver
    receiver.close()


def test_http_posts_every_record_in_order_retrying_refusals(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    http = HttpSink(
        HttpTarget(http_receiver.url, token_file=token), tmp_path / "spool", backoff=FAST
    )
    stdout = io.BytesIO()
    trail = AuditTrail(
        file_sink=FileSink(tmp_path / "audit.log"),
        forwarders=[http, StdoutSink(tmp_path / "spool", stream=stdout, backoff=FAST)],
        signer=KEY,
    )
    with trail:
        for index in range(20):
            trail.record(ALICE, Action.SCALE, TARGET, details={"to": index})
        wait_for(lambda: len(http_receiver.records()) >= 20)
        assert http.health().healthy
    seqs = [r["seq"] for r in http_receiver.records()]
    assert seqs == list(range(len(seqs)))
    assert stdout.getvalue() == (tmp_path / "audit.log").read_bytes()


def test_records_spooled_during_an_outage_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    target = SyslogTarget("127.0.0.1", port, timeout=1.0)
    trail = AuditTrail(
        file_sink=FileSink(tmp_path / "audit.log"),
        forwarders=[SyslogSink(target, tmp_path / "spool", backoff=FAST)],
        signer=KEY,
    )
    for _ in range(5):
        trail.record(ALICE, Action.CREATE, TARGET)
    trail.close(drain_timeout=0.2)  # the receiver is still down: the spool keeps them
    receiver = SyslogReceiver(port)
    try:
        restarted = AuditTrail(
            file_sink=FileSink(tmp_path / "audit.log"),
            forwarders=[SyslogSink(target, tmp_path / "spool", backoff=FAST)],
            signer=KEY,
        )
        with restarted:
            restarted.record(ALICE, Action.PATCH, TARGET)
        # close() delivered the rest, the seal included, before returning
        receiver.wait_for_seqs(restarted.head.next_seq)
    finally:
        receiver.close()


def test_records_a_crash_left_in_the_log_but_not_in_the_spool_are_forwarded(
    tmp_path: Path,
) -> None:
    port = free_port()
    target = SyslogTarget("127.0.0.1", port, timeout=1.0)
    log = tmp_path / "audit.log"
    first = AuditTrail(
        file_sink=FileSink(log),
        forwarders=[SyslogSink(target, tmp_path / "spool", backoff=FAST)],
        signer=KEY,
    )
    for _ in range(3):
        first.record(ALICE, Action.CREATE, TARGET)
    first.close(drain_timeout=0.2)  # receiver down: spooled
    # A process killed between writing the file and the spool: only the file has these.
    unforwarded = AuditTrail(file_sink=FileSink(log), signer=KEY)
    for _ in range(3):
        unforwarded.record(ALICE, Action.PATCH, TARGET)
    unforwarded.close()
    receiver = SyslogReceiver(port)
    try:
        restarted = AuditTrail(
            file_sink=FileSink(log),
            forwarders=[SyslogSink(target, tmp_path / "spool", backoff=FAST)],
            signer=KEY,
        )
        with restarted:
            restarted.record(ALICE, Action.DELETE, TARGET)
        receiver.wait_for_seqs(restarted.head.next_seq)
    finally:
        receiver.close()


CHILD = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sovereign_operator.audit.checkpoint import CheckpointPolicy, Signer
from sovereign_operator.audit.record import Actor, ActorKind
from sovereign_operator.audit.sinks import FileSink
from sovereign_operator.audit.trail import AuditTrail
trail = AuditTrail(file_sink=FileSink(Path(sys.argv[1])),
                   signer=Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32)))),
                   checkpoints=CheckpointPolicy(every_records=7, every_seconds=3600))
n = 0
while True:
    trail.record(Actor(ActorKind.OPERATOR, "op"), "apply")
    n += 1
    if n == 30:
        print("ready", flush=True)
"""


def _kill_mid_way(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    child.kill()  # SIGKILL: no seal, no flush, no cleanup
    child.wait()
    child.stdout.close()


def test_a_killed_writer_leaves_a_log_the_next_one_continues_without_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _kill_mid_way(path)
    files = [*rotated_segments(path), path]
    killed = verify_files(files, KEYS)
    assert killed.ok, killed.failure  # nothing acknowledged is missing or damaged
    assert killed.summary.records >= 30
    _kill_mid_way(path)  # the second run resumed the killed log, then was killed too
    with AuditTrail(file_sink=FileSink(path), signer=KEY) as trail:
        trail.record(ALICE, Action.CREATE, TARGET)
    result = verify_files(files, KEYS, require_sealed=True)
    assert result.ok, result.failure
    seqs = [parse(line)["seq"] for line in path.read_bytes().splitlines()]
    assert seqs == list(range(len(seqs)))
    resumes = [parse(line) for line in path.read_bytes().splitlines() if b'"resume"' in line]
    assert len(resumes) == 2  # each restart signed the tail the killed run left unsigned
