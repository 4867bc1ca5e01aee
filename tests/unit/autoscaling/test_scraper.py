"""The scraper against real aiohttp servers on 127.0.0.1 (loopback only, each test < 1 s)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sovereign_operator.autoscaling.scraper import Scraper, ScrapeResult, ScrapeTarget
from tests.unit.autoscaling.servers import FakeEngines, closed_port, serving

pytestmark = pytest.mark.unit


def scrape(
    engines: FakeEngines, paths: list[str], **options: Any
) -> tuple[list[ScrapeResult], float]:
    async def go() -> tuple[list[ScrapeResult], float]:
        async with serving(engines) as base:
            targets = [
                ScrapeTarget(f"pod-{i}", path if "://" in path else base + path)
                for i, path in enumerate(paths)
            ]
            async with Scraper(**options) as scraper:
                started = asyncio.get_running_loop().time()
                results = await scraper.scrape(targets)
                return results, asyncio.get_running_loop().time() - started

    return asyncio.run(go())


def test_real_exposition_is_read_into_loads_in_target_order() -> None:
    results, _ = scrape(FakeEngines(), ["/metrics/busy", "/metrics/idle", "/metrics/after"])

    assert [r.target.replica for r in results] == ["pod-0", "pod-1", "pod-2"]
    assert all(r.error is None for r in results)
    busy = results[0].load
    assert busy is not None
    assert (busy.running, busy.waiting) == (4, 8)
    assert results[1].load is not None
    assert results[1].load.waiting == 0


def test_a_slow_engine_times_out_without_holding_up_the_others() -> None:
    results, elapsed = scrape(
        FakeEngines(), ["/slow", "/metrics/busy"], timeout_seconds=0.3, concurrency=4
    )

    slow, fast = results
    assert slow.load is None
    assert slow.error is not None
    assert "timed out after 0.3 s" in slow.error
    assert fast.load is not None
    assert elapsed < 2  # the slow server sleeps 5 s


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/error", "HTTP 500"),
        ("/garbage", "no vllm:num_requests_running"),
        ("/huge", "larger than"),
        ("/missing", "HTTP 404"),
    ],
)
def test_a_broken_endpoint_is_a_per_pod_error(path: str, message: str) -> None:
    results, _ = scrape(FakeEngines(), [path, "/metrics/busy"], max_body_bytes=200_000)

    assert results[0].load is None
    assert results[0].error is not None
    assert message in results[0].error
    assert results[1].load is not None


def test_a_pod_that_refuses_connections_is_a_per_pod_error() -> None:
    results, _ = scrape(FakeEngines(), [f"http://127.0.0.1:{closed_port()}/metrics"])

    assert results[0].load is None
    assert results[0].error is not None
    assert "ClientConnectorError" in results[0].error


def test_concurrency_is_bounded() -> None:
    engines = FakeEngines()
    results, _ = scrape(engines, ["/metrics/busy"] * 24, concurrency=3)

    assert all(r.load is not None for r in results)
    assert engines.hits == 24
    assert 1 < engines.most_in_flight <= 3


def test_the_served_model_name_filters_samples() -> None:
    async def go() -> list[ScrapeResult]:
        async with serving(FakeEngines()) as base, Scraper() as scraper:
            return await scraper.scrape(
                [
                    ScrapeTarget("a", base + "/metrics/busy", model_name="tiny"),
                    ScrapeTarget("b", base + "/metrics/busy", model_name="other"),
                ]
            )

    tiny, other = asyncio.run(go())

    assert tiny.load is not None
    assert other.load is None
    assert other.error is not None
    assert "'other'" in other.error
