"""Liveness fails when a watch stream goes silent; readiness waits for start-up."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kopf._cogs.clients import watching

from sovereign_operator.handlers import watch_probe
from sovereign_operator.health import Health, WatchActivity, health_app

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_stream_fails_liveness() -> None:
    clock = Clock()
    activity = WatchActivity(clock)
    health = Health(activity, window=60, expected=frozenset({"pods"}), started=True)
    activity.touch("pods@*")
    assert health.liveness() == (True, "ok")
    clock.now += 61
    ok, text = health.liveness()
    assert not ok
    assert "pods@* (61 s)" in text
    activity.touch("pods@*")
    assert health.liveness()[0]


def test_readiness_waits_for_start_up_and_every_stream() -> None:
    activity = WatchActivity(Clock())
    health = Health(activity, window=60, expected=frozenset({"pods", "nodes"}))
    assert health.readiness()[0] is False
    health.started = True
    activity.touch("pods@ns1")
    ok, text = health.readiness()
    assert not ok
    assert "nodes" in text
    activity.touch("nodes@*")
    assert health.readiness() == (True, "ok")


def test_endpoints_answer_503_when_unhealthy() -> None:
    clock = Clock()
    activity = WatchActivity(clock)
    health = Health(activity, window=10, expected=frozenset({"pods"}), started=True)
    activity.touch("pods@*")

    async def probe() -> list[int]:
        async with TestClient(TestServer(health_app(health))) as client:
            codes = [(await client.get("/healthz")).status, (await client.get("/readyz")).status]
            clock.now += 11
            codes += [(await client.get("/healthz")).status, (await client.get("/readyz")).status]
            return codes

    assert asyncio.run(probe()) == [200, 200, 503, 503]


def test_kopfs_watch_function_still_has_the_signature_the_probe_wraps() -> None:
    # Fails on a kopf upgrade that moves or changes the function, before production does.
    original = getattr(watching.watch_objs, "__sovereign_watch_probe__", watching.watch_objs)
    assert tuple(inspect.signature(original).parameters) == watch_probe.EXPECTED_PARAMETERS


def test_the_probe_records_every_event_and_passes_it_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def fake_watch_objs(
        *,
        settings: Any,
        resource: Any,
        namespace: Any,
        since: Any = None,
        operator_pause_waiter: Any,
    ) -> AsyncIterator[dict[str, str]]:
        yield {"type": "BOOKMARK"}
        yield {"type": "ADDED"}

    monkeypatch.setattr(watching, "watch_objs", fake_watch_objs)
    clock = Clock()
    activity = WatchActivity(clock)
    watch_probe.install(activity)

    class Resource:
        plural, group = "deployments", "apps"

    async def consume() -> list[dict[str, str]]:
        wrapped: Any = watching.watch_objs
        return [
            e
            async for e in wrapped(
                settings=None,
                resource=Resource(),
                namespace=None,
                since=None,
                operator_pause_waiter=None,
            )
        ]

    assert asyncio.run(consume()) == [{"type": "BOOKMARK"}, {"type": "ADDED"}]
    assert activity.seen() == {"deployments.apps@*"}


def test_a_stalled_reconcile_pipeline_fails_liveness() -> None:
    clock = Clock()
    activity = WatchActivity(clock)
    activity.touch("pods@*")
    stall = {"seconds": 0.0}
    health = Health(activity, window=60, expected=frozenset({"pods"}), started=True)
    health.stalled_for = lambda: stall["seconds"]
    assert health.liveness()[0]
    stall["seconds"] = 61
    ok, text = health.liveness()
    assert not ok
    assert "reconcile passes waiting" in text
