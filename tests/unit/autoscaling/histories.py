"""Hand-written load histories for the autoscaling tests.

A history is a list of snapshots every `TICK` seconds. Replicas are "r0", "r1", ... and,
unless a test says otherwise, have been Ready for long past the grace period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sovereign_operator.api.model_deployment import ScalingSpec
from sovereign_operator.autoscaling.evidence import (
    DEFAULT_TUNING,
    EngineLoad,
    ReplicaSample,
    Snapshot,
    Tuning,
)
from sovereign_operator.autoscaling.policy import Decision, ScaleChange, decide_from_snapshots

TICK: Final = 5.0
LONG_AGO: Final = -10_000.0
# Requests one replica runs at once in these histories (vLLM's --max-num-seqs).
CONCURRENCY: Final = 8


def scaling(**overrides: Any) -> ScalingSpec:
    """queueDepth, target 4, 1-10 replicas, 30 s up / 300 s down unless overridden."""
    data: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 10, "target": 4}
    return ScalingSpec.model_validate(data | overrides)


def load(running: float = 0, waiting: float = 0, kv: float | None = None) -> EngineLoad:
    usage = running / CONCURRENCY * 0.9 if kv is None else kv
    return EngineLoad(waiting=waiting, running=running, kv_cache_usage=usage)


def busy(waiting: float = 0) -> EngineLoad:
    """A saturated replica with `waiting` requests queued."""
    return load(CONCURRENCY, waiting)


def snapshot(
    at: float,
    loads: Sequence[EngineLoad | None],
    *,
    replicas: int | None = None,
    ready_since: float = LONG_AGO,
    not_ready: int = 0,
) -> Snapshot:
    """Replicas with these loads (None: scrape failed) plus `not_ready` starting replicas."""
    samples = [
        ReplicaSample(replica=f"r{i}", ready=True, ready_since=ready_since, load=value)
        for i, value in enumerate(loads)
    ]
    samples += [
        ReplicaSample(replica=f"s{i}", ready=False, ready_since=0.0) for i in range(not_ready)
    ]
    count = len(samples) if replicas is None else replicas
    return Snapshot(at=at, replicas=count, samples=tuple(samples))


def steady(
    start: float, end: float, loads: Sequence[EngineLoad | None], **kwargs: Any
) -> list[Snapshot]:
    """The same loads at every tick from `start` to `end` inclusive."""
    count = round((end - start) / TICK)
    return [snapshot(start + i * TICK, loads, **kwargs) for i in range(count + 1)]


def run(
    snapshots: Sequence[Snapshot],
    *,
    current: int | None = None,
    spec: ScalingSpec | None = None,
    now: float | None = None,
    last_change: ScaleChange | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> Decision:
    """The policy's answer at `now` (default: the last snapshot's time)."""
    spec = spec or scaling()
    return decide_from_snapshots(
        snapshots,
        current=snapshots[-1].replicas if current is None else current,
        scaling=spec,
        now=snapshots[-1].at if now is None else now,
        last_change=last_change,
        tuning=tuning,
    )
