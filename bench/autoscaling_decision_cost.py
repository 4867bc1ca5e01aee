"""Autoscaler cost per tick: decisions for 1,000 deployments, and a 1,000-pod scrape fan-out.

1. Decision cost: the real `AutoscalerLoop.tick()` over 1,000 autoscaled deployments (2-8
   replicas each, a mix of idle, steady, queueing and silent ones), with a scraper stub that
   hands back ready-made loads, so the figure is the loop's own CPU per tick: snapshots,
   history, evidence and policy, without network or parsing. Histories are warmed with 80
   ticks first so every scale-down window is full (the most work `decide` does).

2. Scrape fan-out: 1,000 pod URLs spread over a handful of aiohttp servers on 127.0.0.1
   (separate processes, so their CPU is not counted), each serving vLLM 0.32's real busy
   page (~50 KB), scraped by the real `Scraper` with its concurrency bound: wall time and
   the operator process's CPU per round (fetch + parse), first round (new connections) and
   warm rounds (connections reused).

    .venv/bin/python bench/autoscaling_decision_cost.py [--deployments 1000] [--pods 1000]

Writes bench/results/autoscaling_decision_cost.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sovereign_operator.api.model_deployment import ScalingSpec
from sovereign_operator.autoscaling.evidence import EngineLoad, ReplicaSample, Snapshot
from sovereign_operator.autoscaling.history import HistoryStore
from sovereign_operator.autoscaling.loop import (
    AutoscaledDeployment,
    AutoscalerLoop,
    ReplicaEndpoint,
)
from sovereign_operator.autoscaling.policy import Decision, decide
from sovereign_operator.autoscaling.scraper import Scraper, ScrapeResult, ScrapeTarget

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "tests" / "fixtures" / "vllm" / "vllm-metrics-busy.txt"
TICK = 5.0


# --- 1. decision cost ------------------------------------------------------------------


class CannedScrapes:
    """Answers every target at once from a table: no network, no parsing. The answers are
    built once, so the stub's own work does not count as the loop's."""

    def __init__(self) -> None:
        self.loads: dict[str, EngineLoad | None] = {}
        self._answers: list[ScrapeResult] | None = None

    async def scrape(self, targets: Sequence[ScrapeTarget]) -> list[ScrapeResult]:
        if self._answers is None or len(self._answers) != len(targets):
            self._answers = [
                ScrapeResult(t, load, None if load else "no answer", 0.0)
                for t in targets
                for load in (self.loads.get(t.url),)
            ]
        return self._answers


def fleet(count: int, rng: random.Random) -> tuple[list[AutoscaledDeployment], CannedScrapes]:
    scrapes = CannedScrapes()
    deployments = []
    for index in range(count):
        replicas = rng.randint(2, 8)
        kind = index % 4  # idle, steady, queueing, silent (scrapes failing)
        name = f"model-{index}"
        endpoints = []
        for r in range(replicas):
            url = f"http://10.0.{index // 250}.{index % 250}:8000/{r}/metrics"
            endpoints.append(ReplicaEndpoint(f"{name}-{r}", url, True, -10_000.0))
            scrapes.loads[url] = (
                EngineLoad(0, 0, 0),
                EngineLoad(rng.randint(0, 2), rng.randint(4, 8), 0.5),
                EngineLoad(rng.randint(20, 40), 8, 0.9),
                None,
            )[kind]
        deployments.append(
            AutoscaledDeployment(
                namespace=f"team-{index % 20}",
                name=name,
                uid=f"uid-{index}",
                scaling=ScalingSpec(min_replicas=1, max_replicas=16, target=4),
                replicas=replicas,
                endpoints=tuple(endpoints),
            )
        )
    return deployments, scrapes


async def decision_cost(count: int, warm_ticks: int, measured_ticks: int) -> dict[str, Any]:
    deployments, scrapes = fleet(count, random.Random(7))
    by_name = {d.name: d for d in deployments}
    now = [0.0]

    async def listing() -> Sequence[AutoscaledDeployment]:
        return list(by_name.values())

    async def scale(_: str, name: str, replicas: int, __: Decision) -> None:
        # The cluster follows: new pods answer like their siblings, Ready from now on.
        old = by_name[name]
        template = old.endpoints[0]
        endpoints = old.endpoints[:replicas] + tuple(
            ReplicaEndpoint(f"{name}-new-{now[0]:.0f}-{i}", template.metrics_url, True, now[0])
            for i in range(replicas - len(old.endpoints))
        )
        by_name[name] = replace(old, replicas=replicas, endpoints=endpoints)

    loop = AutoscalerLoop(
        list_deployments=listing, apply_scale=scale, scraper=scrapes, clock=lambda: now[0]
    )
    for _ in range(warm_ticks):
        await loop.tick()
        now[0] += TICK
    cpu_ms = []
    decisions = scaled = 0
    for _ in range(measured_ticks):
        started = time.process_time()
        report = await loop.tick()
        cpu_ms.append((time.process_time() - started) * 1000)
        decisions += len(report.decisions)
        scaled += len(report.scaled)
        now[0] += TICK
    cpu_ms.sort()
    return {
        "deployments": count,
        "pods": sum(len(d.endpoints) for d in by_name.values()),
        "warm_ticks": warm_ticks,
        "measured_ticks": measured_ticks,
        "cpu_ms_per_tick_min": round(cpu_ms[0], 2),
        "cpu_ms_per_tick_median": round(statistics.median(cpu_ms), 2),
        "cpu_ms_per_tick_p90": round(cpu_ms[int(0.9 * (len(cpu_ms) - 1))], 2),
        "cpu_ms_per_tick_max": round(cpu_ms[-1], 2),
        "decisions_per_tick": decisions / measured_ticks,
        "scale_calls_while_measured": scaled,
    }


async def policy_cost(count: int, warm_ticks: int, measured_ticks: int) -> dict[str, Any]:
    """Only `DeploymentHistory.record` and `decide`, on snapshots built beforehand."""
    deployments, scrapes = fleet(count, random.Random(7))
    rounds = [
        (
            d,
            tuple(
                ReplicaSample(e.name, e.ready, e.ready_since, scrapes.loads[e.metrics_url])
                for e in d.endpoints
            ),
        )
        for d in deployments
    ]
    store = HistoryStore()
    cpu_ms = []
    for tick in range(warm_ticks + measured_ticks):
        at = tick * TICK
        snapshots = [(d, Snapshot(at, d.replicas, samples)) for d, samples in rounds]
        started = time.process_time()
        for deployment, snapshot in snapshots:
            history = store.get(deployment.key)
            history.record(snapshot, deployment.scaling)
            decide(
                history.evidence(), current=deployment.replicas, scaling=deployment.scaling, now=at
            )
        if tick >= warm_ticks:
            cpu_ms.append((time.process_time() - started) * 1000)
    return {
        "deployments": count,
        "pods": sum(len(samples) for _, samples in rounds),
        "cpu_ms_per_tick_min": round(min(cpu_ms), 2),
        "cpu_ms_per_tick_median": round(statistics.median(cpu_ms), 2),
        "cpu_ms_per_tick_max": round(max(cpu_ms), 2),
    }


# --- 2. scrape fan-out -----------------------------------------------------------------


def serve(page: str, ports: Any) -> None:
    """One server process: /pod/{n}/metrics answers the page, until terminated."""
    from aiohttp import web  # noqa: PLC0415 - imported in the child process only

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/pod/{n}/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def fan_out(
    ports: list[int], pods: int, concurrency: int, rounds: int
) -> list[dict[str, Any]]:
    targets = [
        ScrapeTarget(f"pod-{i}", f"http://127.0.0.1:{ports[i % len(ports)]}/pod/{i}/metrics")
        for i in range(pods)
    ]
    measured = []
    async with Scraper(timeout_seconds=5, concurrency=concurrency) as scraper:
        for number in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            results = await scraper.scrape(targets)
            measured.append(
                {
                    "round": number + 1,
                    "wall_s": round(time.perf_counter() - wall, 3),
                    "cpu_s": round(time.process_time() - cpu, 3),
                    "errors": sum(r.error is not None for r in results),
                    "waiting_total": sum(r.load.waiting for r in results if r.load),
                }
            )
    return measured


def scrape_cost(pods: int, servers: int, concurrency: int, rounds: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ports_queue = context.Queue()
    page = PAGE.read_text()
    processes = [context.Process(target=serve, args=(page, ports_queue)) for _ in range(servers)]
    for process in processes:
        process.start()
    try:
        ports = [ports_queue.get(timeout=60) for _ in processes]
        measured = asyncio.run(fan_out(ports, pods, concurrency, rounds))
    finally:
        for process in processes:
            process.terminate()
            process.join(timeout=10)
    warm = measured[1:] or measured
    return {
        "pods": pods,
        "servers": servers,
        "concurrency": concurrency,
        "page_bytes": len(page.encode()),
        "rounds": measured,
        "warm_wall_s_median": statistics.median(r["wall_s"] for r in warm),
        "warm_cpu_s_median": statistics.median(r["cpu_s"] for r in warm),
    }


def markdown(decisions: dict[str, Any], scrapes: dict[str, Any]) -> str:
    policy = decisions["policy_only"]
    lines = [
        "# Autoscaler cost per tick",
        "",
        (
            "Generated by `bench/autoscaling_decision_cost.py` on "
            f"{platform.machine()} with {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}; load average {decisions['load_average']} when it "
            "started (CPU time inflates on a busy machine)."
        ),
        "",
        "## Decisions",
        "",
        "| deployments | pods | what | CPU per tick: min | median | max |",
        "|---:|---:|---|---:|---:|---:|",
        (
            f"| {decisions['deployments']} | {decisions['pods']} | whole loop tick "
            f"| {decisions['cpu_ms_per_tick_min']} ms | {decisions['cpu_ms_per_tick_median']} ms "
            f"| {decisions['cpu_ms_per_tick_max']} ms |"
        ),
        (
            f"| {policy['deployments']} | {policy['pods']} | history + policy only "
            f"| {policy['cpu_ms_per_tick_min']} ms | {policy['cpu_ms_per_tick_median']} ms "
            f"| {policy['cpu_ms_per_tick_max']} ms |"
        ),
        "",
        (
            "Whole loop tick: `AutoscalerLoop.tick()` with scrapes answered by a stub (their "
            "cost is below): snapshots, history, evidence, policy and bookkeeping; the fleet "
            "is a quarter idle, steady, queueing and silent each, and scale calls change the "
            "listing. History + policy only: `DeploymentHistory.record` and `decide` on "
            "prebuilt snapshots of the same fleet, every idle deployment deciding a "
            "scale-down every tick (the most work `decide` does). 20 measured ticks after 80 "
            "warm-up ticks; the minimum is the least disturbed by other processes."
        ),
        "",
        "## Scrape fan-out",
        "",
        (
            f"{scrapes['pods']} pods over {scrapes['servers']} local aiohttp servers, "
            f"{scrapes['page_bytes']} bytes per page (vLLM 0.32's real busy page), "
            f"concurrency {scrapes['concurrency']}."
        ),
        "",
        "| round | wall | operator CPU (fetch + parse) | errors |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['round']} | {r['wall_s']} s | {r['cpu_s']} s | {r['errors']} |"
        for r in scrapes["rounds"]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    load_average = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    decisions = asyncio.run(decision_cost(args.deployments, warm_ticks=80, measured_ticks=20))
    decisions["load_average"] = load_average
    decisions["policy_only"] = asyncio.run(policy_cost(args.deployments, 80, 20))
    scrapes = scrape_cost(args.pods, args.servers, args.concurrency, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    document = {"python": platform.python_version(), "decisions": decisions, "scrapes": scrapes}
    (RESULTS / "autoscaling_decision_cost.json").write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(decisions, scrapes)
    (RESULTS / "autoscaling_decision_cost.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
