"""The group link: how a native group forms, and how it learns that one of its pods is gone.

vLLM's native multi-node mode has no membership of its own that fails fast: a leader whose
member died can sit in a collective operation until torch's timeout (many minutes), and a
member started long before its leader gives up on its own schedule. So the group commands
keep one TCP connection per member to the leader, beside vLLM:

- a member connects (retrying until its join deadline: the leader may start later, or its
  DNS record may not exist yet), says `hello` with its rank, and waits for `go`;
- the leader waits (bounded) until every rank has said hello, then sends `go` to all and
  only then starts vLLM, so vLLM's own rendezvous never waits on a pod that is not there;
- both sides send a heartbeat every second; a closed connection or a silent peer means
  the other pod is gone, and each side then stops its vLLM and exits non-zero, so the
  group restarts as a whole instead of hanging half-alive.

Messages are JSON lines. The link carries no model data and no requests; it is reachable
only from the group's own pods (the group NetworkPolicy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS: Final = 1.0
# A peer silent this long is gone: long enough for a stalled scheduler on a busy node,
# short enough that a dead node does not leave its group hanging for minutes.
SILENCE_SECONDS: Final = 10.0
HELLO_SECONDS: Final = 10.0
RETRY_SECONDS: Final = 1.0
MAX_LINE: Final = 4096


class GroupError(Exception):
    """The group could not form, or lost a pod; the message says which and what to check."""


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def _receive(reader: asyncio.StreamReader, seconds: float) -> dict[str, Any]:
    """The next message; raises ConnectionError on EOF or garbage, TimeoutError on silence."""
    try:
        line = await asyncio.wait_for(reader.readline(), seconds)
    except (ConnectionResetError, BrokenPipeError):
        line = b""  # a reset is a close too; one message for both
    if not line:
        raise ConnectionError("connection closed")
    try:
        message = json.loads(line[:MAX_LINE])
    except ValueError:
        raise ConnectionError(f"unreadable message {line[:80]!r}") from None
    if not isinstance(message, dict):
        raise ConnectionError(f"unreadable message {line[:80]!r}")
    return message


async def _heartbeat(writer: asyncio.StreamWriter, state: Callable[[], str]) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            await _send(writer, {"type": "beat", "state": state()})
            await asyncio.sleep(HEARTBEAT_SECONDS)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


@dataclass
class _Member:
    rank: int
    peer: str
    writer: asyncio.StreamWriter


@dataclass
class LeaderLink:
    """The leader's end: accepts members, releases the group, watches every member."""

    nnodes: int
    port: int
    host: str = "0.0.0.0"  # noqa: S104 - members connect to the pod IP; the NetworkPolicy limits who
    state: str = "starting"
    """Sent with each heartbeat; members report ready only once it is `serving`."""
    lost: asyncio.Future[str] = field(init=False)
    """Resolves with a message when a member leaves after the group formed."""
    _members: dict[int, _Member] = field(default_factory=dict, init=False)
    _all_joined: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _released: bool = field(default=False, init=False)
    _closing: bool = field(default=False, init=False)
    _server: asyncio.Server | None = field(default=None, init=False)
    _connections: set[asyncio.StreamWriter] = field(default_factory=set, init=False)
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        log.info(
            "group link listening on %s:%d for %d members", self.host, self.port, self.nnodes - 1
        )

    async def wait_for_members(self, seconds: float) -> None:
        """Return once every member said hello; GroupError naming the missing ranks if not."""
        try:
            await asyncio.wait_for(self._all_joined.wait(), seconds)
        except TimeoutError:
            missing = sorted(set(range(1, self.nnodes)) - self._members.keys())
            joined = self.nnodes - 1 - len(missing)
            raise GroupError(
                f"only {joined} of {self.nnodes - 1} members joined the group within "
                f"{seconds:.0f} s (missing ranks: {', '.join(map(str, missing))}); every "
                f"member must reach this leader on TCP port {self.port}: check that all of "
                "the group's pods are scheduled and running (kubectl get pods -l "
                "sovereign.dev/group=GROUP) and what the missing ones log"
            ) from None

    async def release(self) -> None:
        """Tell every member to start vLLM; from now on a lost member ends the group."""
        self._released = True
        for member in list(self._members.values()):
            with contextlib.suppress(ConnectionError):
                await _send(member.writer, {"type": "go"})
        log.info("group formed: ranks %s joined", sorted(self._members))

    async def close(self) -> None:
        """Stop watching (a shutdown is not a loss) and drop every member's connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        # Closing the connections ends every handler on its own (they read EOF); cancelling
        # the handlers instead makes asyncio log each as an error.
        for writer in list(self._connections):
            _close(writer)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=HELLO_SECONDS)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        if (task := asyncio.current_task()) is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            await self._serve_member(reader, writer)
        finally:
            self._connections.discard(writer)

    async def _serve_member(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = str(writer.get_extra_info("peername", ("?",))[0])
        try:
            member = await self._register(reader, writer, peer)
        except (ConnectionError, TimeoutError, GroupError) as error:
            log.warning("refused a member connection from %s: %s", peer, error)
            with contextlib.suppress(ConnectionError):
                await _send(writer, {"type": "refused", "reason": str(error)})
            _close(writer)
            return
        await self._watch(member, reader)

    async def _register(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> _Member:
        hello = await _receive(reader, HELLO_SECONDS)
        rank, nnodes = hello.get("rank"), hello.get("nnodes")
        if hello.get("type") != "hello" or not isinstance(rank, int):
            raise GroupError("the first message must be a hello with the member's rank")
        if nnodes != self.nnodes:
            raise GroupError(f"the member expects {nnodes} nodes, this leader {self.nnodes}")
        if not 1 <= rank < self.nnodes:
            raise GroupError(f"rank {rank} is not a member rank of a {self.nnodes}-node group")
        if rank in self._members:
            raise GroupError(f"rank {rank} already joined from {self._members[rank].peer}")
        if self._released:
            raise GroupError("the group has already formed; a member that restarts "
                             "restarts the whole group")  # fmt: skip
        member = _Member(rank, peer, writer)
        self._members[rank] = member
        log.info(
            "member rank %d joined from %s (%d of %d)",
            rank,
            peer,
            len(self._members),
            self.nnodes - 1,
        )
        if len(self._members) == self.nnodes - 1:
            self._all_joined.set()
        return member

    async def _watch(self, member: _Member, reader: asyncio.StreamReader) -> None:
        beats = asyncio.create_task(_heartbeat(member.writer, lambda: self.state))
        try:
            while True:
                await _receive(reader, SILENCE_SECONDS)
        except (ConnectionError, TimeoutError) as error:
            why = "went silent" if isinstance(error, TimeoutError) else str(error)
            self._member_gone(member, why)
        finally:
            beats.cancel()
            _close(member.writer)

    def _member_gone(self, member: _Member, why: str) -> None:
        if self._closing:
            return
        message = f"member rank {member.rank} ({member.peer}) left the group: {why}"
        if not self._released:
            # Before the group formed nothing runs yet: let the member come back.
            log.warning("%s; waiting for it to join again", message)
            del self._members[member.rank]
            self._all_joined.clear()
            return
        if not self.lost.done():
            self.lost.set_result(message)


@dataclass
class MemberLink:
    """A member's end: joins the leader, then watches it."""

    leader: str
    port: int
    rank: int
    nnodes: int
    leader_state: str = "unknown"
    lost: asyncio.Future[str] | None = None
    _writer: asyncio.StreamWriter | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def join(self, seconds: float) -> None:
        """Connect, say hello and wait for `go`, retrying until `seconds` have passed."""
        deadline = time.monotonic() + seconds
        last_error = "no attempt"
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.leader, self.port), RETRY_SECONDS * 5
                )
            except (OSError, TimeoutError) as error:
                last_error = str(error) or type(error).__name__
                await asyncio.sleep(RETRY_SECONDS)
                continue
            try:
                await self._handshake(reader, writer, deadline)
            except (ConnectionError, TimeoutError) as error:
                last_error = f"the leader dropped the connection ({error or 'timeout'})"
                _close(writer)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            return
        raise GroupError(
            f"could not join the group leader at {self.leader}:{self.port} within "
            f"{seconds:.0f} s (last error: {last_error}); check that the leader pod (rank 0) "
            "is running and what it logs"
        )

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> None:
        await _send(writer, {"type": "hello", "rank": self.rank, "nnodes": self.nnodes})
        log.info(
            "connected to the group leader %s:%d as rank %d; waiting for the group",
            self.leader,
            self.port,
            self.rank,
        )
        while True:
            remaining = max(deadline - time.monotonic(), 0.1)
            message = await _receive(reader, min(remaining, SILENCE_SECONDS))
            kind = message.get("type")
            if kind == "refused":
                raise GroupError(
                    f"the group leader refused rank {self.rank}: {message.get('reason')}"
                )
            if kind == "beat":
                self.leader_state = str(message.get("state"))
            if kind == "go":
                break
        self._writer = writer
        self.lost = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(_heartbeat(writer, lambda: "member")),
            asyncio.create_task(self._watch(reader)),
        ]

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await _receive(reader, SILENCE_SECONDS)
                if message.get("type") == "beat":
                    self.leader_state = str(message.get("state"))
        except (ConnectionError, TimeoutError) as error:
            why = "went silent" if isinstance(error, TimeoutError) else str(error)
            if self.lost is not None and not self.lost.done():
                self.lost.set_result(f"the group leader {self.leader} left the group: {why}")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            _close(self._writer)


async def first_of(**waits: Awaitable[Any]) -> tuple[str, Any]:
    """(name, result) of the first awaitable to finish; the others are left running.

    When several finish together, the one named first wins: callers name `stop` first, so
    a pod being stopped never reports the loss its own shutdown causes in the group.
    """
    tasks = {name: asyncio.ensure_future(wait) for name, wait in waits.items()}
    done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
    name = next(name for name, task in tasks.items() if task in done)
    return name, tasks[name].result()
