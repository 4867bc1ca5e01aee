"""Runtime: orderly deletion, and what a pass reports as Events and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.runtime import Runtime
from sovereign_operator.settings import OperatorConfig
from tests.unit.operator.fakes import MD_UID, FakeCluster, md_body

pytestmark = pytest.mark.unit


def runtime_for(cluster: FakeCluster, events: list[tuple[str, str, str]] | None = None) -> Runtime:
    def post(_body: Any, kind: str, reason: str, message: str) -> None:
        if events is not None:
            events.append((kind, reason, message))

    return Runtime(
        config=OperatorConfig(), writer=cluster, metrics=OperatorMetrics(), post_event=post
    )


def test_deletion_removes_the_workload_first_then_the_rest() -> None:
    cluster = FakeCluster()
    runtime = runtime_for(cluster)

    async def scenario() -> list[list[str]]:
        await runtime.reconcile(md_body(), cluster.observe())
        cluster.writes.clear()
        # Sequential on purpose: each round sees what the previous one left.
        return [
            await runtime.finalize("clinical-ai", "llama", MD_UID, cluster.observe().children)
            for _ in range(3)
        ]

    rounds = asyncio.run(scenario())
    assert rounds[0] == ["Deployment/llama-engine"]
    assert len(rounds[1]) == 4
    assert rounds[2] == []
    assert cluster.writes[0] == ("delete-foreground", "Deployment/llama-engine")
    assert {kind for kind, _ in cluster.writes[1:]} == {"delete"}


def test_children_of_another_owner_are_never_deleted() -> None:
    cluster = FakeCluster()
    runtime = runtime_for(cluster)

    async def scenario() -> list[str]:
        await runtime.reconcile(md_body(), cluster.observe())
        return await runtime.finalize(
            "clinical-ai", "llama", "another-uid", cluster.observe().children
        )

    assert asyncio.run(scenario()) == []
    assert [w for w in cluster.writes if w[0].startswith("delete")] == []


def test_drift_repairs_are_posted_as_events() -> None:
    cluster = FakeCluster()
    events: list[tuple[str, str, str]] = []
    runtime = runtime_for(cluster, events)

    async def scenario() -> None:
        await runtime.reconcile(md_body(), cluster.observe())
        cluster.deployment()["spec"]["replicas"] = 5
        runtime.written.clear()  # the edit is someone else's, long after our write
        await runtime.reconcile(md_body(), cluster.observe())

    asyncio.run(scenario())
    assert ("Normal", "DriftRepaired", "Deployment/llama-engine: restored .spec.replicas") in events
    assert cluster.deployment()["spec"]["replicas"] == 1


def test_a_wake_reconciles_again_without_any_event_and_keeps_the_earliest() -> None:
    cluster = FakeCluster()
    runtime = runtime_for(cluster)
    body = md_body()
    passes: list[str] = []

    def lookup(namespace: str, name: str) -> tuple[Any, Any]:
        passes.append(f"{namespace}/{name}")
        return body, cluster.observe()

    async def scenario() -> None:
        runtime.wake_after("clinical-ai", "llama", 0.05)  # before the lookup: ignored
        await asyncio.sleep(0.1)
        assert passes == []
        runtime.lookup = lookup
        runtime.wake_after("clinical-ai", "llama", 0.05)
        runtime.wake_after("clinical-ai", "llama", 30)  # later than the pending one: kept
        await asyncio.sleep(0.6)  # the wake, then the nudge's settle time

    asyncio.run(scenario())
    assert passes == ["clinical-ai/llama"]
    assert cluster.status  # the pass ran and wrote a status


def test_a_pass_that_waited_reads_the_cluster_as_it_is_when_it_starts() -> None:
    cluster = FakeCluster()
    runtime = runtime_for(cluster)
    reads: list[str] = []

    def observe() -> Any:
        reads.append("read")
        return cluster.observe()

    async def scenario() -> None:
        lock_holder = asyncio.Event()

        async def hold() -> None:
            async with asyncio.timeout(5):
                lock_holder.set()
                await asyncio.sleep(0.1)

        first = asyncio.create_task(runtime.coalescer.run(("clinical-ai", "llama"), hold))
        await lock_holder.wait()
        second = asyncio.create_task(runtime.reconcile(md_body(), observe))
        await asyncio.sleep(0.05)
        assert reads == []  # still waiting for the first pass: nothing read yet
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    assert reads == ["read"]
