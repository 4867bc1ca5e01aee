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
