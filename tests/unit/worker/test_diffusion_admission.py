"""The admission gate: bounded running, bounded waiting, FIFO, and the drain."""

from __future__ import annotations

import asyncio

import pytest

from sovereign_worker.diffusion.admission import AdmissionGate, QueueFull, ShuttingDown

pytestmark = pytest.mark.unit


async def _hold(gate: AdmissionGate, release: asyncio.Event, order: list[int], tag: int) -> None:
    async with gate.slot():
        order.append(tag)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_running_and_waiting_are_bounded_and_served_in_order() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_running=1, max_waiting=2)
        release = asyncio.Event()
        order: list[int] = []
        tasks = [asyncio.create_task(_hold(gate, release, order, tag)) for tag in range(3)]
        await _settle()
        assert (gate.running, gate.waiting) == (1, 2)
        with pytest.raises(QueueFull, match="1 requests are running and 2 waiting"):
            async with gate.slot():
                pass
        release.set()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(scenario())


def test_no_queue_means_refusal_as_soon_as_slots_are_full() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_running=2, max_waiting=0)
        release = asyncio.Event()
        tasks = [asyncio.create_task(_hold(gate, release, [], tag)) for tag in range(2)]
        await _settle()
        assert gate.running == 2
        with pytest.raises(QueueFull):
            async with gate.slot():
                pass
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_running=1, max_waiting=1)
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(gate, release, [], 0))
        waiter = asyncio.create_task(_hold(gate, release, [], 1))
        await _settle()
        assert gate.waiting == 1
        waiter.cancel()
        await _settle()
        assert (gate.running, gate.waiting) == (1, 0)
        release.set()
        await holder
        await asyncio.wait_for(gate.wait_idle(), 1)

    asyncio.run(scenario())


def test_close_refuses_new_requests_and_lets_admitted_ones_finish() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_running=1, max_waiting=1)
        release = asyncio.Event()
        order: list[int] = []
        tasks = [asyncio.create_task(_hold(gate, release, order, tag)) for tag in range(2)]
        await _settle()
        gate.close()
        with pytest.raises(ShuttingDown):
            async with gate.slot():
                pass
        idle = asyncio.create_task(gate.wait_idle())
        await _settle()
        assert not idle.done()
        release.set()
        await asyncio.wait_for(idle, 1)
        assert order == [0, 1]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_running"):
        AdmissionGate(max_running=0, max_waiting=1)
