"""One pass per ModelDeployment at a time; bursts of watch events collapse into one more."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.reconcile import Observation
from sovereign_operator.runtime import Coalescer, Runtime
from sovereign_operator.settings import OperatorConfig
from tests.unit.operator.fakes import MD_UID, FakeCluster, md_body

pytestmark = pytest.mark.unit


def test_nudges_during_a_pass_collapse_into_one_more_pass() -> None:
    async def scenario() -> int:
        coalescer = Coalescer()
        passes = 0
        release = asyncio.Event()

        async def job() -> None:
            nonlocal passes
            passes += 1
            if passes == 1:
                await release.wait()

        first = asyncio.create_task(coalescer.nudge("k", job))
        await asyncio.sleep(0)
        for _ in range(10):  # a burst while the first pass runs
            await coalescer.nudge("k", job)
        release.set()
        await first
        return passes

    assert asyncio.run(scenario()) == 2


def test_run_waits_for_the_running_pass_and_keys_are_independent() -> None:
    async def scenario() -> list[str]:
        coalescer = Coalescer()
        order: list[str] = []
        gate = asyncio.Event()

        async def slow() -> None:
            order.append("a-start")
            await gate.wait()
            order.append("a-end")

        async def quick(name: str) -> str:
            order.append(name)
            return name

        a = asyncio.create_task(coalescer.run("a", slow))
        await asyncio.sleep(0)
        b = await coalescer.run("b", lambda: quick("b"))
        a2 = asyncio.create_task(coalescer.run("a", lambda: quick("a-second")))
        await asyncio.sleep(0)
        gate.set()
        await a
        assert await a2 == "a-second"
        assert b == "b"
        return order

    assert asyncio.run(scenario()) == ["a-start", "b", "a-end", "a-second"]


def test_locks_do_not_accumulate() -> None:
    async def scenario() -> int:
        coalescer = Coalescer()

        async def job() -> None:
            return None

        for key in range(100):
            await coalescer.nudge(key, job)
            await coalescer.run(key, job)
        return len(coalescer._locks)

    assert asyncio.run(scenario()) == 0


def test_a_burst_of_nudges_before_the_pass_starts_is_one_pass() -> None:
    async def scenario() -> int:
        coalescer = Coalescer(settle=0.05)
        passes = 0

        async def job() -> None:
            nonlocal passes
            passes += 1

        first = asyncio.create_task(coalescer.nudge("k", job))
        await asyncio.sleep(0)
        for _ in range(5):  # e.g. a Deployment's ADDED event and its status updates
            await coalescer.nudge("k", job)
        await first
        return passes

    assert asyncio.run(scenario()) == 1


def test_finalize_and_watch_driven_passes_do_not_deadlock() -> None:
    # One slot: a watch-driven pass holds the deployment's lock and waits for the slot,
    # while deletion of the same deployment must not hold the slot and wait for the lock.
    async def scenario() -> list[str]:
        writer = FakeCluster()
        runtime = Runtime(
            config=OperatorConfig(reconcile_concurrency=1), writer=writer, metrics=OperatorMetrics()
        )
        runtime.coalescer.settle = 0.05  # the nudge holds the lock while events settle
        body = md_body()

        def lookup(namespace: str, name: str) -> tuple[Any, Observation]:
            return body, writer.observe()

        await runtime.reconcile(body, writer.observe())
        tasks = [
            asyncio.create_task(runtime.nudge("clinical-ai", "llama", lookup)),
            asyncio.create_task(
                runtime.finalize("clinical-ai", "llama", MD_UID, writer.observe().children)
            ),
            asyncio.create_task(runtime.nudge("clinical-ai", "llama", lookup)),
        ]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        # Deletion in order: the workload went first; the rest goes on the next call.
        return await runtime.finalize("clinical-ai", "llama", MD_UID, writer.observe().children)

    remaining = asyncio.run(scenario())
    assert remaining == [
        "ServiceAccount/llama-engine",
        "NetworkPolicy/llama-engine",
        "Service/llama",
        "PodDisruptionBudget/llama-engine",
    ]


def test_a_nudge_during_a_handlers_pass_runs_after_it() -> None:
    # kopf's create handler is reconciling when the pod's Ready event arrives: the event
    # must still be reconciled, not lost until the next resync.
    async def scenario() -> list[str]:
        coalescer = Coalescer()
        order: list[str] = []
        gate = asyncio.Event()

        async def handler_pass() -> str:
            order.append("handler")
            await gate.wait()
            return "done"

        async def event_pass() -> None:
            order.append("event")

        handler = asyncio.create_task(coalescer.run("k", handler_pass))
        await asyncio.sleep(0)
        await coalescer.nudge("k", event_pass)
        gate.set()
        assert await handler == "done"
        return order

    assert asyncio.run(scenario()) == ["handler", "event"]
