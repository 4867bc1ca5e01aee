"""The group link between a native group's leader and members, on loopback sockets inside
one event loop: forming, bounded waits, refusals and losses; and how a child's failure is
named. Fast (no vLLM, no Ray); the engine tests run the same code in real pods' processes."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sovereign_worker.multinode import link
from sovereign_worker.multinode.link import GroupError, LeaderLink, MemberLink, first_of
from sovereign_worker.multinode.process import start_child

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats and retries ten times faster than in pods, so each test takes well under
    a second; the protocol is the same."""
    monkeypatch.setattr(link, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(link, "RETRY_SECONDS", 0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(scenario: Callable[[int], Awaitable[Any]]) -> Any:
    """Run `scenario(port)` with a bound on the whole test."""

    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(free_port()), 20)

    return asyncio.run(bounded())


def member(port: int, rank: int, nnodes: int = 3) -> MemberLink:
    return MemberLink("127.0.0.1", port, rank, nnodes)


def test_the_group_forms_once_every_member_joined() -> None:
    async def scenario(port: int) -> list[str]:
        leader = LeaderLink(3, port, host="127.0.0.1")
        await leader.start()
        members = [member(port, 1), member(port, 2)]
        joins = [asyncio.create_task(m.join(10)) for m in members]
        await leader.wait_for_members(10)
        assert not any(join.done() for join in joins)  # nobody starts before `go`
        await leader.release()
        await asyncio.gather(*joins)
        leader.state = "serving"
        await asyncio.sleep(0.3)  # the next heartbeat carries the state
        states = [m.leader_state for m in members]
        for m in members:
            await m.close()
        await leader.close()
        return states

    assert run(scenario) == ["serving", "serving"]


def test_a_member_started_before_its_leader_waits_and_joins() -> None:
    async def scenario(port: int) -> None:
        join = asyncio.create_task(member(port, 1, nnodes=2).join(10))
        await asyncio.sleep(0.3)  # a few refused attempts
        assert not join.done()
        leader = LeaderLink(2, port, host="127.0.0.1")
        await leader.start()
        await leader.wait_for_members(10)
        await leader.release()
        await join
        await leader.close()

    run(scenario)


def test_a_leader_names_the_members_that_never_came() -> None:
    async def scenario(port: int) -> None:
        leader = LeaderLink(4, port, host="127.0.0.1")
        await leader.start()
        join = asyncio.create_task(member(port, 2, nnodes=4).join(10))
        with pytest.raises(GroupError, match=r"only 1 of 3 members joined the group within 0 s "
                           r"\(missing ranks: 1, 3\); every member must reach this leader on TCP "
                           rf"port {port}"):  # fmt: skip
            await leader.wait_for_members(0.3)
        join.cancel()
        await leader.close()

    run(scenario)


def test_a_member_without_a_leader_gives_up_with_the_reason() -> None:
    async def scenario(port: int) -> None:
        with pytest.raises(
            GroupError,
            match=rf"could not join the group leader at 127.0.0.1:{port} within 0 s \(last error: ",
        ):
            await member(port, 1).join(0.3)

    run(scenario)


@pytest.mark.parametrize(
    ("rank", "nnodes", "reason"),
    [
        (1, 3, "rank 1 already joined from 127.0.0.1"),
        (5, 3, "rank 5 is not a member rank of a 3-node group"),
        (0, 3, "rank 0 is not a member rank"),
        (2, 4, "the member expects 4 nodes, this leader 3"),
    ],
)
def test_the_leader_refuses_members_that_do_not_belong(rank: int, nnodes: int, reason: str) -> None:
    async def scenario(port: int) -> None:
        leader = LeaderLink(3, port, host="127.0.0.1")
        await leader.start()
        first = member(port, 1)
        first_join = asyncio.create_task(first.join(10))
        await asyncio.sleep(0.2)
        with pytest.raises(GroupError, match=f"the group leader refused rank {rank}: {reason}"):
            await member(port, rank, nnodes).join(2)
        first_join.cancel()
        await leader.close()

    run(scenario)


def test_a_member_that_leaves_before_the_group_forms_may_come_back() -> None:
    async def scenario(port: int) -> None:
        leader = LeaderLink(2, port, host="127.0.0.1")
        await leader.start()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"type": "hello", "rank": 1, "nnodes": 2}\n')
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # the member's pod restarts before the group formed
        await asyncio.sleep(0.1)
        again = asyncio.create_task(member(port, 1, nnodes=2).join(10))
        await leader.wait_for_members(5)
        await leader.release()
        await again
        assert not leader.lost.done()
        await leader.close()

    run(scenario)


def test_losing_a_member_after_the_group_formed_is_reported_to_the_leader() -> None:
    async def scenario(port: int) -> str:
        leader = LeaderLink(2, port, host="127.0.0.1")
        await leader.start()
        joining = member(port, 1, nnodes=2)
        join = asyncio.create_task(joining.join(10))
        await leader.wait_for_members(5)
        await leader.release()
        await join
        await joining.close()  # the member's pod dies: its connection closes
        message = await asyncio.wait_for(leader.lost, 5)
        await leader.close()
        return message

    assert run(scenario) == "member rank 1 (127.0.0.1) left the group: connection closed"


def test_losing_the_leader_is_reported_to_the_members() -> None:
    async def scenario(port: int) -> str:
        leader = LeaderLink(2, port, host="127.0.0.1")
        await leader.start()
        joining = member(port, 1, nnodes=2)
        join = asyncio.create_task(joining.join(10))
        await leader.wait_for_members(5)
        await leader.release()
        await join
        await leader.close()
        assert joining.lost is not None
        message = await asyncio.wait_for(joining.lost, 5)
        await joining.close()
        return message

    assert run(scenario) == "the group leader 127.0.0.1 left the group: connection closed"


def test_first_of_prefers_the_first_named_when_several_are_done() -> None:
    async def scenario(_port: int) -> str:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("lost")
        stop = asyncio.Event()
        stop.set()
        name, _ = await first_of(stop=stop.wait(), lost=done)
        return name

    assert run(scenario) == "stop"


def test_a_failed_child_is_named_by_its_root_cause() -> None:
    """vLLM's failed start: the cause, then a wrapper that points back at it, then noise."""
    script = (
        "import sys\n"
        "print('(EngineCore pid=1) ERROR [core.py:1] ValueError: current platform cpu "
        "does not support ray.', file=sys.stderr)\n"
        "for i in range(200): print('  File \"x.py\", line', i, file=sys.stderr)\n"
        "print('RuntimeError: Engine core initialization failed. See root cause above.', "
        "file=sys.stderr)\n"
        "sys.exit(1)\n"
    )

    async def scenario(_port: int) -> tuple[int, str | None]:
        child = await start_child("vLLM", [sys.executable, "-c", script], {})
        code = await child.wait()
        return code, child.last_error()

    assert run(scenario) == (1, "ValueError: current platform cpu does not support ray.")
