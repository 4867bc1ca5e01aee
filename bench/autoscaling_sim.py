"""Trace-driven autoscaling simulator: our policy against an HPA-style baseline.

A discrete-event model of vLLM replicas behind the gateway's least-loaded routing: each
replica runs at most `concurrency` requests at once (vLLM's --max-num-seqs), queues the
rest in its own waiting queue (vLLM has no work stealing between replicas), serves a
request in a gamma-distributed time (shape 2, mean `mean_service_seconds`), and needs
`cold_start_seconds` from creation to Ready (image pull, weights, CUDA graphs). A replica
that is scaled away stops receiving requests, finishes what it holds (vLLM drains on
SIGTERM), and holds its GPUs until then. Arrivals are Poisson with a time-varying rate.

Every `tick` seconds both autoscalers see the same samples (running, waiting, KV usage of
every Ready replica; starting replicas have no metrics) and answer a replica count:

- ours: `sovereign_operator.autoscaling.policy` with its default tuning, through the same
  `DeploymentHistory` the operator's loop uses;
- hpa: Kubernetes' HPA algorithm on the same metric and target, ported from
  pkg/controller/podautoscaler: desired = ceil(ready pods x average / target) with a 10 %
  tolerance, pods without metrics counted as 0 when scaling up and as the target when
  scaling down, a 300 s scale-down stabilisation window taking the largest recommendation,
  no scale-up stabilisation, and the default rate limits (up: max(+4 pods, +100 %) per
  15 s; down: 100 % per 15 s). It syncs on the same tick as ours (the real HPA syncs every
  15 s behind a Prometheus scrape and an adapter, which would only make it slower).

Reported per run: replica changes, queueing seconds (the time all requests spent waiting
in an engine queue), p99 queue wait, seconds over target (wall time during which the
metric averaged over Ready replicas exceeded its target), and GPU-hours (creation to
drained, one GPU per replica). Each cell is the mean over seeds.

    .venv/bin/python bench/autoscaling_sim.py [--seeds 3]

Writes bench/results/autoscaling.json and bench/results/autoscaling.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import platform
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sovereign_operator.api.model_deployment import ScalingMetric, ScalingSpec
from sovereign_operator.autoscaling.evidence import (
    DEFAULT_TUNING,
    EngineLoad,
    ReplicaSample,
    Snapshot,
    Tuning,
    replica_metric,
)
from sovereign_operator.autoscaling.history import DeploymentHistory
from sovereign_operator.autoscaling.policy import ScaleChange, decide

RESULTS = Path(__file__).resolve().parent / "results"
HOUR = 3600.0


@dataclass(frozen=True)
class ReplicaModel:
    concurrency: int = 8
    mean_service_seconds: float = 8.0
    cold_start_seconds: float = 120.0
    tick_seconds: float = 5.0


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration: float
    peak_rate: float
    rate: Callable[[float], float]


def make_traces(seed: int) -> list[Trace]:
    rng = random.Random(seed * 7919 + 1)
    bursts: list[tuple[float, float]] = []
    t = rng.expovariate(1 / 600)
    while t < 3 * HOUR:
        length = rng.uniform(60, 180)
        bursts.append((t, t + length))
        t += length + rng.expovariate(1 / 600)

    def bursty(now: float) -> float:
        return 1.5 + (8.0 if any(a <= now < b for a, b in bursts) else 0.0)

    return [
        Trace("steady", "3.2 req/s for 3 h", 3 * HOUR, 3.2, lambda _: 3.2),
        Trace(
            "step",
            "1 req/s, 6 req/s from 1 h, 2 req/s from 2 h",
            3 * HOUR,
            6.0,
            lambda now: 1.0 if now < HOUR else 6.0 if now < 2 * HOUR else 2.0,
        ),
        Trace(
            "diurnal",
            "0.5 to 6 req/s and back over 6 h",
            6 * HOUR,
            6.0,
            lambda now: 0.5 + 5.5 * (1 - math.cos(2 * math.pi * now / (6 * HOUR))) / 2,
        ),
        Trace(
            "bursty",
            "1.5 req/s plus 8 req/s bursts of 1-3 min, ~10 min apart",
            3 * HOUR,
            9.5,
            bursty,
        ),
    ]


@dataclass(eq=False)
class Replica:
    ident: int
    created: float
    ready_at: float
    running: int = 0
    queue: deque[float] = field(default_factory=deque)
    draining: bool = False
    removed: float | None = None

    def ready(self, now: float) -> bool:
        return now >= self.ready_at

    @property
    def in_flight(self) -> int:
        return self.running + len(self.queue)


class Autoscaler(Protocol):
    def recommend(self, now: float, current: int, samples: Sequence[ReplicaSample]) -> int: ...


class Ours:
    """Our policy, fed through the operator's own DeploymentHistory."""

    def __init__(self, scaling: ScalingSpec, tuning: Tuning) -> None:
        self.scaling = scaling
        self.tuning = tuning
        self.history = DeploymentHistory()
        self.last: ScaleChange | None = None

    def recommend(self, now: float, current: int, samples: Sequence[ReplicaSample]) -> int:
        self.history.record(Snapshot(now, current, tuple(samples)), self.scaling, self.tuning)
        decision = decide(
            self.history.evidence(),
            current=current,
            scaling=self.scaling,
            now=now,
            last_change=self.last,
            tuning=self.tuning,
        )
        if decision.changed:
            self.last = ScaleChange(now, current, decision.replicas)
        return decision.replicas


class Hpa:
    """The HPA's replica calculation, stabilisation and default rate limits."""

    tolerance = 0.1
    down_window = 300.0
    period = 15.0

    def __init__(self, scaling: ScalingSpec) -> None:
        self.scaling = scaling
        self.recommendations: deque[tuple[float, int]] = deque()
        self.events: deque[tuple[float, int]] = deque()  # (time, replica delta)

    def recommend(self, now: float, current: int, samples: Sequence[ReplicaSample]) -> int:
        raw = self._replica_calculation(current, samples)
        self.recommendations.append((now, raw))
        while self.recommendations[0][0] < now - self.down_window:
            self.recommendations.popleft()
        # Scale-down stabilisation: the largest recommendation of the window; up: none.
        stabilized = (
            raw if raw >= current else min(current, max(r for _, r in self.recommendations))
        )
        while self.events and self.events[0][0] < now - self.period:
            self.events.popleft()
        added = sum(d for _, d in self.events if d > 0)
        if stabilized > current:
            start = current - added
            stabilized = min(stabilized, max(start + 4, math.ceil(start * 2.0)))
        # The default scale-down policy (100 % per 15 s) never binds, so it is left out.
        desired = max(self.scaling.min_replicas, min(self.scaling.max_replicas, stabilized))
        if desired != current:
            self.events.append((now, desired - current))
        return desired

    def _replica_calculation(self, current: int, samples: Sequence[ReplicaSample]) -> int:
        target = self.scaling.target
        values = {s.replica: replica_metric(self.scaling.metric, s.load) for s in samples if s.load}
        missing = [s.replica for s in samples if s.load is None]
        if not values:
            return current
        ratio = sum(values.values()) / (len(values) * target)
        if not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return current
            return math.ceil(ratio * len(values))
        fill = target if ratio < 1.0 else 0.0
        total = sum(values.values()) + fill * len(missing)
        count = len(values) + len(missing)
        new_ratio = total / (count * target)
        if (
            abs(1.0 - new_ratio) <= self.tolerance
            or (ratio < 1.0 < new_ratio)
            or (ratio > 1.0 > new_ratio)
        ):
            return current
        new = math.ceil(new_ratio * count)
        if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
            return current
        return new


@dataclass
class Outcome:
    changes: int = 0
    queueing_seconds: float = 0.0
    p99_wait_seconds: float = 0.0
    seconds_over_target: float = 0.0
    gpu_hours: float = 0.0
    requests: int = 0
    max_replicas: int = 0


class Simulation:
    """One trace against one autoscaler."""

    def __init__(
        self,
        trace: Trace,
        scaling: ScalingSpec,
        autoscaler: Autoscaler,
        model: ReplicaModel,
        seed: int,
    ) -> None:
        self.trace, self.scaling, self.autoscaler, self.model = trace, scaling, autoscaler, model
        self.service = random.Random(seed)
        self.arrivals = random.Random(seed + 1)
        # Start warm, with what the opening rate needs at 80 % utilisation, so runs compare
        # operation rather than a cold start from minReplicas.
        per_replica = model.concurrency / model.mean_service_seconds
        initial = max(scaling.min_replicas, math.ceil(trace.rate(0.0) / per_replica / 0.8))
        self.replicas = [Replica(i, -model.cold_start_seconds, 0.0) for i in range(initial)]
        self.events: list[tuple[float, int, str, Replica | None]] = []
        self.order = 0
        self.waits: list[float] = []
        self.outcome = Outcome(max_replicas=initial)

    def run(self) -> Outcome:
        self.next_arrival(0.0)
        self.push(self.model.tick_seconds, "tick")
        now = 0.0
        while self.events:
            now, _, kind, replica = heapq.heappop(self.events)
            if kind == "arrival":
                self.arrive(now)
            elif kind == "tick":
                self.tick(now)
            elif replica is not None and kind == "done":
                replica.running -= 1
                self.serve_queue(replica, now)
            elif replica is not None:  # ready
                self.serve_queue(replica, now)
        end = max(now, self.trace.duration)
        out = self.outcome
        out.gpu_hours = sum((r.removed or end) - max(r.created, 0.0) for r in self.replicas) / HOUR
        out.queueing_seconds = sum(self.waits)
        self.waits.sort()
        out.p99_wait_seconds = self.waits[int(0.99 * (len(self.waits) - 1))] if self.waits else 0
        return out

    def push(self, at: float, kind: str, replica: Replica | None = None) -> None:
        self.order += 1
        heapq.heappush(self.events, (at, self.order, kind, replica))

    def next_arrival(self, now: float) -> None:
        rate, peak = self.trace.rate, self.trace.peak_rate
        t = now
        while True:  # thinning against the peak rate
            t += self.arrivals.expovariate(peak)
            if t >= self.trace.duration:
                return
            if self.arrivals.random() * peak <= rate(t):
                self.push(t, "arrival")
                return

    def active(self) -> list[Replica]:
        return [r for r in self.replicas if not r.draining and r.removed is None]

    def start(self, replica: Replica, now: float) -> None:
        replica.running += 1
        duration = self.service.gammavariate(2.0, self.model.mean_service_seconds / 2.0)
        self.push(now + duration, "done", replica)

    def arrive(self, now: float) -> None:
        self.outcome.requests += 1
        # The gateway routes to the least-loaded Ready replica; with none, a starting one
        # holds the request.
        candidates = [r for r in self.active() if r.ready(now)] or self.active()
        chosen = min(candidates, key=lambda r: (r.in_flight, r.ident))
        if chosen.ready(now) and chosen.running < self.model.concurrency:
            self.waits.append(0.0)
            self.start(chosen, now)
        else:
            chosen.queue.append(now)
        self.next_arrival(now)

    def serve_queue(self, replica: Replica, now: float) -> None:
        while replica.queue and replica.running < self.model.concurrency:
            self.waits.append(now - replica.queue.popleft())
            self.start(replica, now)
        if replica.draining and replica.in_flight == 0:
            replica.removed = now

    def tick(self, now: float) -> None:
        if now >= self.trace.duration:
            return
        alive = self.active()
        samples = [
            ReplicaSample(
                replica=str(r.ident),
                ready=r.ready(now),
                ready_since=r.ready_at,
                load=EngineLoad(len(r.queue), r.running, 0.9 * r.running / self.model.concurrency)
                if r.ready(now)
                else None,
            )
            for r in alive
        ]
        loads = [s.load for s in samples if s.load is not None]
        if loads:
            average = statistics.fmean(replica_metric(self.scaling.metric, x) for x in loads)
            if average > self.scaling.target:
                self.outcome.seconds_over_target += self.model.tick_seconds
        desired = self.autoscaler.recommend(now, len(alive), samples)
        if desired != len(alive):
            self.outcome.changes += 1
            self.outcome.max_replicas = max(self.outcome.max_replicas, desired)
            self.scale_to(desired, alive, now)
        self.push(now + self.model.tick_seconds, "tick")

    def scale_to(self, count: int, alive: list[Replica], now: float) -> None:
        for _ in range(count - len(alive)):
            replica = Replica(len(self.replicas), now, now + self.model.cold_start_seconds)
            self.replicas.append(replica)
            self.push(replica.ready_at, "ready", replica)
        # Like a ReplicaSet: starting pods go first (newest first), then the least busy.
        victims = sorted(alive, key=lambda r: (r.ready(now), r.in_flight, -r.created))
        for replica in victims[: max(len(alive) - count, 0)]:
            replica.draining = True  # vLLM drains: no new requests, finishes what it holds
            if replica.in_flight == 0:
                replica.removed = now


TRACE_NAMES = ("steady", "step", "diurnal", "bursty")
SCENARIOS = (
    (ScalingMetric.QUEUE_DEPTH, 4.0),
    (ScalingMetric.RUNNING_REQUESTS, 6.0),
)


def policies(tuning: Tuning) -> list[tuple[str, int, Callable[[ScalingSpec], Autoscaler]]]:
    """(name, scale-up window, factory): ours with the CRD's default 30 s window and with
    the HPA's 0 s, and the HPA."""

    def ours(scaling: ScalingSpec) -> Autoscaler:
        return Ours(scaling, tuning)

    return [("ours", 30, ours), ("ours, up 0 s", 0, ours), ("hpa", 0, Hpa)]


def run(seeds: int, model: ReplicaModel, tuning: Tuning) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for trace_index, trace_name in enumerate(TRACE_NAMES):
        for metric, target in SCENARIOS:
            for name, up_seconds, factory in policies(tuning):
                scaling = ScalingSpec(
                    min_replicas=1,
                    max_replicas=16,
                    metric=metric,
                    target=target,
                    scale_up_stabilization_seconds=up_seconds,
                    scale_down_stabilization_seconds=300,
                )
                outcomes = [
                    Simulation(
                        make_traces(seed)[trace_index], scaling, factory(scaling), model, seed
                    ).run()
                    for seed in range(seeds)
                ]
                mean = {
                    key: statistics.fmean(float(getattr(o, key)) for o in outcomes)
                    for key in asdict(outcomes[0])
                }
                rows.append(
                    {
                        "trace": trace_name,
                        "metric": str(metric),
                        "target": target,
                        "policy": name,
                        **{k: round(v, 3) for k, v in mean.items()},
                    }
                )
    return rows


def markdown(rows: list[dict[str, Any]], model: ReplicaModel, seeds: int, tuning: Tuning) -> str:
    descriptions = {t.name: t.description for t in make_traces(0)}
    changed = {
        k: v for k, v in asdict(tuning).items() if getattr(DEFAULT_TUNING, k) != v
    } or "defaults"
    lines = [
        "# Autoscaling simulator: our policy vs an HPA-style baseline",
        "",
        (
            f"Generated by `bench/autoscaling_sim.py` (mean of {seeds} seeds). Replicas run "
            f"{model.concurrency} requests at once, serve one in {model.mean_service_seconds:g} s "
            f"on average (gamma, shape 2), start in {model.cold_start_seconds:g} s and keep their "
            f"own queues; decisions every {model.tick_seconds:g} s; 1-16 replicas; scale-down "
            f"window 300 s for all. **ours**: the operator's policy with the CRD's default 30 s "
            f"scale-up window; **ours, up 0 s**: the same with the HPA's 0 s window; **hpa**: "
            f"the HPA algorithm (10 % tolerance, 300 s down stabilisation, default rate "
            f"limits). Tuning: {changed}."
        ),
        "",
        "Traces: " + "; ".join(f"**{k}**: {v}" for k, v in descriptions.items()) + ".",
        "",
        (
            "Columns: replica changes; queueing s = seconds all requests spent waiting in an "
            "engine queue; p99 wait; s over target = wall time the metric's average over Ready "
            "replicas exceeded the target; GPU-hours (one GPU per replica, from creation until "
            "drained); peak replicas."
        ),
        "",
        (
            "| trace | metric (target) | policy | changes | queueing s | p99 wait s "
            "| s over target | GPU-hours | peak replicas |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['trace']} | {r['metric']} ({r['target']:g}) | {r['policy']} "
        f"| {r['changes']:.1f} | {r['queueing_seconds']:.0f} | {r['p99_wait_seconds']:.1f} "
        f"| {r['seconds_over_target']:.0f} | {r['gpu_hours']:.2f} | {r['max_replicas']:.1f} |"
        for r in rows
    ]
    lines += ["", "Ours relative to hpa (ratio; below 1 is better):", ""]
    lines += [
        "| trace | metric | policy | changes | queueing s | GPU-hours |",
        "|---|---|---|---:|---:|---:|",
    ]
    by_key = {(r["trace"], r["metric"], r["policy"]): r for r in rows}
    for (trace, metric, policy), row in by_key.items():
        if policy == "hpa":
            continue
        base = by_key[(trace, metric, "hpa")]
        ratios = [
            _ratio(row[key], base[key]) for key in ("changes", "queueing_seconds", "gpu_hours")
        ]
        lines.append(f"| {trace} | {metric} | {policy} | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def _ratio(ours: float, hpa: float) -> str:
    if hpa == 0:
        return "=" if ours == 0 else "worse (hpa 0)"
    return f"{ours / hpa:.2f}"


def parse_tuning(overrides: list[str]) -> Tuning:
    """`FIELD=VALUE` overrides of the policy's Tuning, for exploring; the default is none."""
    values: dict[str, Any] = {}
    for item in overrides:
        name, _, text = item.partition("=")
        values[name] = type(getattr(DEFAULT_TUNING, name))(text)
    return dataclasses.replace(DEFAULT_TUNING, **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--tuning",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a policy Tuning field (recorded in the results)",
    )
    args = parser.parse_args()
    tuning = parse_tuning(args.tuning)
    model = ReplicaModel()
    started = time.perf_counter()
    rows = run(args.seeds, model, tuning)
    RESULTS.mkdir(exist_ok=True)
    document = {
        "model": asdict(model),
        "tuning": asdict(tuning),
        "seeds": args.seeds,
        "python": platform.python_version(),
        "rows": rows,
    }
    (RESULTS / "autoscaling.json").write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(rows, model, args.seeds, tuning)
    (RESULTS / "autoscaling.md").write_text(text)
    print(text)
    print(f"simulated in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
