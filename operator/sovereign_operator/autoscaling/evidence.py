"""What one scrape round of a deployment says: the policy's evidence.

Pure. The loop records a ``Snapshot`` (one ``ReplicaSample`` per replica: a pod, or a
multi-node group's leader) per scrape round; ``assess`` reduces it once to a
``TickEvidence``: whether the metric is over target and how many replicas the load needs
(steps 1 and 2 of the algorithm documented in ``sovereign_operator.autoscaling.policy``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sovereign_operator.api.model_deployment import ScalingMetric, ScalingSpec

# Floating-point sums such as 0.1 * 3 must not round a need of exactly 3 up to 4.
_EPSILON: Final = 1e-9
_MAX_NEED: Final = 1e9


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """One replica's load gauges: requests summed over its engines, KV usage averaged (0-1)."""

    waiting: float
    running: float
    kv_cache_usage: float


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One replica (pod, or group leader) in one scrape round."""

    replica: str
    ready: bool
    ready_since: float
    """When the replica last became Ready (Unix seconds); ignored while it is not ready."""
    load: EngineLoad | None = None
    """None when the replica was not scraped or its scrape failed."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape round of one deployment."""

    at: float
    replicas: int
    """The deployment's desired replicas (spec.replicas) at that moment."""
    samples: tuple[ReplicaSample, ...]


@dataclass(frozen=True, slots=True)
class Tuning:
    """Knobs the spec does not expose; the defaults are what the simulator was run with."""

    startup_grace_seconds: float = 60.0
    max_startup_seconds: float = 600.0
    max_evidence_gap_seconds: float = 15.0
    scale_down_headroom: float = 0.8
    up_step_period_seconds: float = 15.0
    max_up_ratio: float = 1.0
    min_up_step: int = 4
    down_step_period_seconds: float = 60.0
    max_down_ratio: float = 0.5
    min_down_step: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.scale_down_headroom <= 1:
            raise ValueError("scale_down_headroom must be in (0, 1]")
        if self.max_evidence_gap_seconds <= 0:
            raise ValueError("max_evidence_gap_seconds must be positive")
        if self.min_up_step < 1 or self.min_down_step < 1:
            raise ValueError("min_up_step and min_down_step must be at least 1")
        if self.max_up_ratio < 0 or not 0 <= self.max_down_ratio <= 1:
            raise ValueError("max_up_ratio must be >= 0 and max_down_ratio in [0, 1]")


DEFAULT_TUNING: Final = Tuning()


@dataclass(frozen=True, slots=True)
class TickEvidence:
    """What one snapshot says, computed once when the snapshot is recorded."""

    at: float
    replicas: int
    observed: int
    """Replicas whose samples counted as evidence."""
    starting: int
    """Replicas not Ready yet, or without a pod yet."""
    per_replica: float
    """The scaling metric averaged over the observed replicas (what `target` is compared with)."""
    demand: float
    """The metric's total over the observed replicas, waiting requests included as demand
    (queueDepth: the requests waiting)."""
    in_flight: float
    """Requests running plus waiting on the observed replicas."""
    peak_running: float
    """The most requests one observed replica was running: a lower bound on its capacity."""
    over_target: bool
    """Whether the demand per observed replica exceeded the target."""
    need_up: int
    """Replicas that carry this load at the target (missing replicas count as empty)."""
    need_down: int
    """Replicas that carry it at `scale_down_headroom` of the target, counting every
    replica without evidence as full."""
    continuous_since: float
    """When the run of evidence leading here began: no two ticks since then are more than
    `max_evidence_gap_seconds` apart (so a window's coverage is one comparison)."""


def assess(
    snapshot: Snapshot,
    scaling: ScalingSpec,
    *,
    capacity_hint: float = 0.0,
    previous: TickEvidence | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> TickEvidence | None:
    """The evidence in one snapshot, or None when no replica in it gives any.

    `capacity_hint` is the most requests one replica was seen running in earlier snapshots;
    `previous` is the evidence before this one.
    """
    waiting = running = kv = peak = 0.0
    observed = starting = 0
    for sample in snapshot.samples:
        if not sample.ready:
            starting += 1
            continue
        if snapshot.at - sample.ready_since < tuning.startup_grace_seconds:
            continue
        load = sample.load
        if load is None:
            continue
        observed += 1
        waiting += load.waiting
        running += load.running
        kv += load.kv_cache_usage
        if load.running > peak:  # noqa: PLR1730 - no call: runs per pod per tick
            peak = load.running
    if observed == 0:
        return None

    target, headroom = scaling.target, tuning.scale_down_headroom
    in_flight = running + waiting
    unobserved = max(snapshot.replicas - observed, 0)
    per_replica = metric_total(scaling.metric, waiting, running, kv) / observed
    if scaling.metric is ScalingMetric.QUEUE_DEPTH:
        # A queueing replica runs all it can; otherwise the most seen is a lower bound.
        room = max(running / observed if waiting > 0 else max(capacity_hint, peak), 1.0)
        demand, sized = waiting, in_flight
    else:
        room = target
        if scaling.metric is ScalingMetric.RUNNING_REQUESTS:
            demand = in_flight
        else:
            # Running is a count; below one request there is no per-request usage to read.
            kv_per_request = kv / running if running >= 1 else 0.0
            demand = kv + waiting * kv_per_request
        sized = demand
    return TickEvidence(
        at=snapshot.at,
        replicas=snapshot.replicas,
        observed=observed,
        starting=starting + max(snapshot.replicas - len(snapshot.samples), 0),
        per_replica=per_replica,
        demand=demand,
        in_flight=in_flight,
        peak_running=peak,
        over_target=demand / observed > target,
        need_up=_ceil(sized / room),
        need_down=_ceil((sized + unobserved * room) / (room * headroom)),
        continuous_since=(
            previous.continuous_since
            if previous is not None and snapshot.at - previous.at <= tuning.max_evidence_gap_seconds
            else snapshot.at
        ),
    )


def metric_total(metric: ScalingMetric, waiting: float, running: float, kv: float) -> float:
    """The scaling metric from load gauges (one replica's, or summed over replicas): divided
    by the replicas observed, it is the per-replica value that ``target`` is compared with."""
    if metric is ScalingMetric.QUEUE_DEPTH:
        return waiting
    if metric is ScalingMetric.RUNNING_REQUESTS:
        return running
    return kv


def replica_metric(metric: ScalingMetric, load: EngineLoad) -> float:
    """One replica's value of the scaling metric (bench/autoscaling_sim.py averages these)."""
    return metric_total(metric, load.waiting, load.running, load.kv_cache_usage)


def assess_all(
    snapshots: Sequence[Snapshot], scaling: ScalingSpec, *, tuning: Tuning = DEFAULT_TUNING
) -> list[TickEvidence]:
    """Evidence for snapshots in time order, each assessed with the capacity seen before it."""
    evidence: list[TickEvidence] = []
    peak = 0.0
    for snapshot in sorted(snapshots, key=lambda s: s.at):
        previous = evidence[-1] if evidence else None
        tick = assess(snapshot, scaling, capacity_hint=peak, previous=previous, tuning=tuning)
        if tick is not None:
            evidence.append(tick)
            peak = max(peak, tick.peak_running)
    return evidence


def _ceil(value: float) -> int:
    # Saturate instead of overflowing: absurd loads must still give an answer (maxReplicas).
    return max(math.ceil(min(value, _MAX_NEED) - _EPSILON), 0)
