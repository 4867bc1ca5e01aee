"""The loop's core through its injected callables, scraping real loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from sovereign_operator.autoscaling.external import ExternalLoadCollector
from sovereign_operator.autoscaling.loop import (
    Activity,
    AutoscaledDeployment,
    AutoscalerLoop,
    ReplicaEndpoint,
    TickReport,
)
from sovereign_operator.autoscaling.policy import Decision, Direction
from sovereign_operator.autoscaling.scraper import Scraper
from tests.unit.autoscaling.histories import scaling
from tests.unit.autoscaling.servers import FakeEngines, serving, vllm_page

pytestmark = pytest.mark.unit

START = 1_000_000.0


@dataclass
class Cluster:
    """What the operator would read from and write to the API server."""

    deployments: list[AutoscaledDeployment]
    scaled: list[tuple[str, str, int, Decision]] = field(default_factory=list)
    activity: list[tuple[str, Activity]] = field(default_factory=list)
    fail_scaling: bool = False
    apply_to_listing: bool = False

    async def list(self) -> Sequence[AutoscaledDeployment]:
        return list(self.deployments)

    async def scale(self, namespace: str, name: str, replicas: int, decision: Decision) -> None:
        if self.fail_scaling:
            raise RuntimeError("the API server said no")
        self.scaled.append((namespace, name, replicas, decision))
        if self.apply_to_listing:
            self.deployments = [
                replace(d, replicas=replicas) if d.name == name else d for d in self.deployments
            ]

    async def report(self, namespace: str, name: str, activity: Activity) -> None:
        self.activity.append((f"{namespace}/{name}", activity))


def deployment(base: str, name: str, pods: int, **spec: object) -> AutoscaledDeployment:
    return AutoscaledDeployment(
        namespace="ns",
        name=name,
        uid=f"uid-{name}",
        scaling=scaling(**spec),
        replicas=pods,
        endpoints=tuple(
            ReplicaEndpoint(f"{name}-{i}", f"{base}/metrics/{name}", True, START - 1000)
            for i in range(pods)
        ),
        served_model_name="tiny",
    )


def drive(
    engines: FakeEngines,
    build: Callable[[str], Cluster],
    seconds: float,
    external: ExternalLoadCollector | None = None,
) -> tuple[Cluster, list[TickReport]]:
    """Tick the loop every 5 s of fake time for `seconds`."""
    now = [START]

    async def go() -> tuple[Cluster, list[TickReport]]:
        async with serving(engines) as base, Scraper(timeout_seconds=1) as scraper:
            cluster = build(base)
            loop = AutoscalerLoop(
                list_deployments=cluster.list,
                apply_scale=cluster.scale,
                scraper=scraper,
                report_activity=cluster.report,
                external=external,
                clock=lambda: now[0],
            )
            reports = []
            while now[0] <= START + seconds:
                reports.append(await loop.tick())
                now[0] += 5
            return cluster, reports

    return asyncio.run(go())


def test_sustained_queueing_scales_once_through_the_injected_call() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=8, waiting=20)})

    cluster, reports = drive(engines, lambda base: Cluster([deployment(base, "llama", 2)]), 55)

    # Sustained for the 30 s up window: (2 x 8 running + 40 waiting) / 8 = 7 replicas, one
    # step allows 2 + 4. The listing does not show the change here, so for the next 30 s
    # the loop decides from the 6 it asked for instead of sending again.
    assert [(ns, name, n) for ns, name, n, _ in cluster.scaled] == [("ns", "llama", 6)]
    decision = cluster.scaled[0][3]
    assert decision.reason.direction is Direction.UP
    assert "2 -> 6" in decision.reason.message
    assert "needing 7" in decision.reason.message
    assert sum(len(r.scaled) for r in reports) == 1
    assert cluster.activity[0][1].active
    assert cluster.activity[0][1].reason == "Active"


def test_a_request_the_listing_never_shows_is_sent_again_after_a_while() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=8, waiting=20)})

    cluster, _ = drive(engines, lambda base: Cluster([deployment(base, "llama", 2)]), 60)

    assert [n for _, _, n, _ in cluster.scaled] == [6, 6]  # at +30 s and, lost, at +60 s


def test_once_the_listing_shows_the_change_nothing_more_is_sent() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=8, waiting=20)})

    def build(base: str) -> Cluster:
        return Cluster([deployment(base, "llama", 2)], apply_to_listing=True)

    cluster, _ = drive(engines, build, 50)

    # Scaled to 6; the 4 new pods are not in the listing's endpoints (not created in this
    # fake), so they count as starting and the loop waits for them instead of piling on.
    assert [n for _, _, n, _ in cluster.scaled] == [6]


def test_external_mode_publishes_the_load_and_never_scales() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=8, waiting=20)})
    collector = ExternalLoadCollector(clock=lambda: START + 60)

    cluster, reports = drive(
        engines,
        lambda base: Cluster([deployment(base, "llama", 2, mode="external")]),
        60,
        external=collector,
    )

    assert cluster.scaled == []
    assert all(not r.decisions for r in reports)
    assert [a.reason for _, a in cluster.activity] == ["External"]
    assert not cluster.activity[0][1].active
    families = {f.name: f for f in collector.collect()}
    waiting = families["sovereign_modeldeployment_requests_waiting"].samples
    assert [(s.labels, s.value) for s in waiting] == [
        ({"namespace": "ns", "modeldeployment": "llama"}, 40.0)
    ]


def test_failing_scrapes_hold_and_say_why_once() -> None:
    engines = FakeEngines()  # /metrics/gone is not a fixture: the server answers 500

    cluster, reports = drive(engines, lambda base: Cluster([deployment(base, "gone", 3)]), 30)

    assert cluster.scaled == []
    assert all(r.scrape_errors == 3 for r in reports)
    assert len(cluster.activity) == 1  # reported when it changed, not every tick
    activity = cluster.activity[0][1]
    assert (activity.active, activity.reason) == (False, "NoMetrics")
    assert "HTTP 500" in activity.message


def test_a_failed_scale_is_reported_and_tried_again() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=8, waiting=20)})

    def build(base: str) -> Cluster:
        return Cluster([deployment(base, "llama", 2)], fail_scaling=True)

    cluster, reports = drive(engines, build, 45)

    assert cluster.scaled == []
    failed = [a for _, a in cluster.activity if a.reason == "ScaleFailed"]
    assert failed
    assert "the API server said no" in failed[0].message
    attempts = [r for r in reports if r.decisions and next(iter(r.decisions.values())).changed]
    assert len(attempts) >= 2  # every tick asks again while the answer stands


def test_a_hanging_scale_call_times_out_and_is_reported() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=8, waiting=20)})
    now = [START]
    reported: list[Activity] = []

    async def hang(*_: object) -> None:
        await asyncio.sleep(30)

    async def report(_: str, __: str, activity: Activity) -> None:
        reported.append(activity)

    async def go() -> None:
        async with serving(engines) as base, Scraper() as scraper:
            deployments = [deployment(base, "llama", 2)]

            async def listing() -> Sequence[AutoscaledDeployment]:
                return deployments

            loop = AutoscalerLoop(
                list_deployments=listing,
                apply_scale=hang,
                scraper=scraper,
                report_activity=report,
                scale_timeout_seconds=0.1,
                clock=lambda: now[0],
            )
            for _ in range(8):
                await loop.tick()
                now[0] += 5

    asyncio.run(go())

    assert [a.reason for a in reported] == ["Active", "ScaleFailed"]
    assert "TimeoutError" in reported[1].message


def test_a_failed_activity_report_is_sent_again() -> None:
    engines = FakeEngines(pages={"llama": vllm_page(running=1, waiting=0)})
    calls: list[Activity] = []

    class Flaky(Cluster):
        async def report(self, namespace: str, name: str, activity: Activity) -> None:
            calls.append(activity)
            if len(calls) == 1:
                raise RuntimeError(f"conflict writing {namespace}/{name}")

    _, _ = drive(engines, lambda base: Flaky([deployment(base, "llama", 1)]), 10)

    assert [a.reason for a in calls] == ["Active", "Active"]


def test_deployments_no_longer_listed_are_forgotten() -> None:
    engines = FakeEngines(pages={"a": vllm_page(1, 0), "b": vllm_page(1, 0)})
    now = [START]

    async def go() -> tuple[int, int]:
        async with serving(engines) as base, Scraper() as scraper:
            cluster = Cluster([deployment(base, "a", 1), deployment(base, "b", 1)])
            loop = AutoscalerLoop(
                list_deployments=cluster.list,
                apply_scale=cluster.scale,
                scraper=scraper,
                clock=lambda: now[0],
            )
            first = await loop.tick()
            cluster.deployments = cluster.deployments[:1]
            second = await loop.tick()
            return len(first.decisions), len(second.decisions)

    assert asyncio.run(go()) == (2, 1)


def test_run_keeps_ticking_after_a_failing_listing() -> None:
    calls = []
    third_call = asyncio.Event()

    async def listing() -> Sequence[AutoscaledDeployment]:
        calls.append(1)
        if len(calls) == 3:
            third_call.set()
        if len(calls) == 1:
            raise RuntimeError("apiserver unavailable")
        return []

    async def never(*_: object) -> None:
        raise AssertionError

    async def go() -> None:
        async with Scraper() as scraper:
            loop = AutoscalerLoop(
                list_deployments=listing,
                apply_scale=never,
                scraper=scraper,
                interval_seconds=0.01,
            )
            task = asyncio.create_task(loop.run())
            await asyncio.wait_for(third_call.wait(), timeout=5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert len(calls) >= 3
