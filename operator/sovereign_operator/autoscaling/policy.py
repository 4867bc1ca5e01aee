"""The autoscaling policy: per-replica vLLM load samples in, desired replicas and a reason out.

Pure: no I/O, no clock (``now`` is an argument), no kopf, no Kubernetes client. A replica is
one engine pod, or one multi-node group whose samples come from its leader; every count
here counts replicas (groups), and ``ScalingSpec.target`` is a per-replica average.

The algorithm
=============

1. **Evidence.** The loop records one ``Snapshot`` of a deployment per scrape round. A
   replica's sample is evidence only when the replica is Ready, has been Ready for at least
   ``Tuning.startup_grace_seconds`` (a replica that has just come up is still drawing its
   share of traffic, so its numbers describe neither the load nor its capacity), and its
   scrape succeeded. A snapshot without any evidence is a gap.

2. **Pressure and need.** ``assess`` reduces each snapshot, over its observed replicas, to
   whether the metric is over target and to the replicas the load needs. ``running`` and
   ``waiting`` are summed; ``C`` is a replica's concurrency: what queueing replicas run
   now, else the most one replica has been seen running (a lower bound on capacity).

   - ``queueDepth``: over target when waiting per replica exceeds ``target``; need is
     ``ceil((running + waiting) / C)``, the replicas that would run everything in flight
     without a queue. Zero waiting says nothing about headroom, so scaling down is
     sized by the requests in flight, never by the empty queue (the HPA's
     ``ceil(waiting / target)`` scales a busy deployment down until it queues again).
   - ``runningRequests``: demand is ``running + waiting`` (waiting requests would run if
     there were room, so a saturated engine cannot hide its demand); need is
     ``ceil(demand / target)``.
   - ``kvCacheUsage``: demand is KV usage plus, for the waiting requests, the KV usage of
     as many running ones; need is ``ceil(demand / target)``.

   ``need_up`` counts replicas without evidence as empty; ``need_down`` counts them as
   full and sizes for ``scale_down_headroom`` of the target, so missing or stale data can
   hold the count but never lower it.

3. **Up.** When every snapshot of the last ``scaleUpStabilizationSeconds`` was over
   target, scale to the newest snapshot's ``need_up``, unless demand fell across the
   window (capacity already exceeds arrivals; vLLM cannot hand a backlog to new replicas),
   or replicas added by the previous scale-up are not Ready yet (within
   ``max_startup_seconds``): adding more while they boot only buys the same backlog twice.

4. **Down.** For each snapshot of the last ``scaleDownStabilizationSeconds``, take the
   smallest ``need_down`` over the up window ending there, and scale to the largest of
   these: a count at which no stretch of that window would have triggered a scale-up, so
   the two rules do not undo each other. A scale-up restarts the down window. The policy
   never scales to zero on its own: with no replica there is nothing to measure
   (scale-from-zero needs a demand signal from the gateway).

5. **Coverage.** A window counts only when it is fully observed: an evidence snapshot at or
   before its start and no gap longer than ``max_evidence_gap_seconds`` after that. The
   newest evidence must be younger than that gap, or the answer is hold.

6. **Steps.** One step grows the count by at most ``max(min_up_step, current x
   max_up_ratio)`` and shrinks it by at most ``max(min_down_step, current x
   max_down_ratio)``; a step in the same direction waits ``up_step_period_seconds`` /
   ``down_step_period_seconds`` after the previous one, so its effect is seen first.

7. **Bounds.** Outside ``[minReplicas, maxReplicas]`` the count moves to the nearest bound
   at once, whatever the evidence.

``bench/autoscaling_sim.py`` compares this with the HPA's algorithm on arrival traces;
the ``Tuning`` defaults are the ones it reports.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from sovereign_operator.api.model_deployment import ScalingMetric, ScalingSpec
from sovereign_operator.autoscaling.evidence import (
    DEFAULT_TUNING,
    Snapshot,
    TickEvidence,
    Tuning,
    assess_all,
)

_METRIC_WORDS: Final = {
    ScalingMetric.QUEUE_DEPTH: "requests waiting",
    ScalingMetric.RUNNING_REQUESTS: "requests running",
    ScalingMetric.KV_CACHE_USAGE: "KV-cache usage",
}


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """A change the autoscaler made earlier (from status.lastScale)."""

    at: float
    from_replicas: int
    to_replicas: int


class Direction(StrEnum):
    """Which way a decision moves the replica count."""

    UP = "up"
    DOWN = "down"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class ScaleReason:
    """Why a decision was taken, structured for status, Events and the audit trail."""

    direction: Direction
    metric: ScalingMetric
    observed: float | None
    """The per-replica metric that decided: the window's lowest going up, highest going down."""
    target: float
    window_start: float | None
    window_end: float | None
    message: str

    def as_record(self) -> dict[str, object]:
        """JSON-ready fields for an audit record or an Event annotation (times in UTC)."""
        return {
            "direction": str(self.direction),
            "metric": str(self.metric),
            "observed": self.observed,
            "target": self.target,
            "windowStart": _iso(self.window_start),
            "windowEnd": _iso(self.window_end),
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The desired replica count and why."""

    current: int
    replicas: int
    reason: ScaleReason

    @property
    def changed(self) -> bool:
        return self.replicas != self.current


def decide_from_snapshots(
    snapshots: Sequence[Snapshot],
    *,
    current: int,
    scaling: ScalingSpec,
    now: float,
    last_change: ScaleChange | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> Decision:
    """`decide` on raw snapshots (assessed here; the loop keeps assessed ones instead)."""
    return decide(
        assess_all(snapshots, scaling, tuning=tuning),
        current=current,
        scaling=scaling,
        now=now,
        last_change=last_change,
        tuning=tuning,
    )


def decide(
    evidence: Sequence[TickEvidence],
    *,
    current: int,
    scaling: ScalingSpec,
    now: float,
    last_change: ScaleChange | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> Decision:
    """The desired replica count for `current` given the evidence (oldest first)."""
    low, high = scaling.min_replicas, scaling.max_replicas
    if current > high:
        return _bounds(current, high, scaling, f"above maxReplicas ({high})")
    if current < low:
        return _bounds(current, low, scaling, f"below minReplicas ({low})")

    # The history hands over its own list; copy only when it holds ticks after `now`.
    ticks = (
        evidence if not evidence or evidence[-1].at <= now else [t for t in evidence if t.at <= now]
    )
    if not ticks or now - ticks[-1].at > tuning.max_evidence_gap_seconds:
        why = (
            "no replica to measure (scaling up from zero needs a demand signal)"
            if current == 0
            else "no fresh metrics from any ready replica"
        )
        return _hold(current, scaling, None, None, f"holding at {current}: {why}")

    latest = ticks[-1]
    up = _scale_up(ticks, current, scaling, now=now, last_change=last_change, tuning=tuning)
    if up is not None:
        return up
    down = _scale_down(ticks, current, scaling, now=now, last_change=last_change, tuning=tuning)
    if down is not None:
        return down
    words = _METRIC_WORDS[scaling.metric]
    return _hold(
        current,
        scaling,
        latest.per_replica,
        latest.at,
        f"holding at {current}: {latest.per_replica:.3g} {words} per replica "
        f"(target {scaling.target:g}) over {latest.observed} observed",
    )


def _scale_up(
    ticks: Sequence[TickEvidence],
    current: int,
    scaling: ScalingSpec,
    *,
    now: float,
    last_change: ScaleChange | None,
    tuning: Tuning,
) -> Decision | None:
    seconds = scaling.scale_up_stabilization_seconds
    window, covered = _window(ticks, seconds)
    if not covered:
        return None
    first, last = window[0], window[-1]
    if not all(tick.over_target for tick in window) or last.need_up <= current:
        return None
    need = last.need_up
    observed = min(tick.per_replica for tick in window)
    words = _METRIC_WORDS[scaling.metric]
    sustained = (
        f"{words} stayed above target for {seconds} s: at least {observed:.3g} per replica "
        f"against {scaling.target:g}, needing {need}"
    )
    why_not = ""
    if last.demand < first.demand:
        # Capacity already exceeds arrivals; more replicas would only drain a backlog that
        # vLLM cannot move to them (each engine keeps its own queue).
        why_not = f"demand is falling ({first.demand:.3g} -> {last.demand:.3g})"
    elif _recent(last_change, now, tuning.max_startup_seconds, up=True) and last.starting:
        why_not = f"{last.starting} replicas started by the last scale-up are not serving yet"
    elif _recent(last_change, now, tuning.up_step_period_seconds, up=True):
        why_not = "the last scale-up was less than a step period ago"
    elif current >= scaling.max_replicas:
        why_not = "at maxReplicas"
    if why_not:
        return _hold(
            current, scaling, observed, last.at, f"holding at {current}: {sustained}, but {why_not}"
        )
    to = min(need, scaling.max_replicas, _up_limit(current, tuning))
    return _decision(
        Direction.UP,
        current,
        to,
        scaling,
        observed=observed,
        window=(first.at, last.at),
        message=f"scaling {current} -> {to}: {sustained}",
    )


def _scale_down(
    ticks: Sequence[TickEvidence],
    current: int,
    scaling: ScalingSpec,
    *,
    now: float,
    last_change: ScaleChange | None,
    tuning: Tuning,
) -> Decision | None:
    floor = max(scaling.min_replicas, 1)
    if current <= floor:
        return None
    seconds = scaling.scale_down_stabilization_seconds
    if _recent(last_change, now, tuning.down_step_period_seconds, up=False) or _recent(
        last_change, now, seconds, up=True
    ):
        return None  # let the previous step show its effect; a scale-up restarts the window
    # Cheap exit before the replay: the newest up window alone already needs `current`.
    if _newest_sustained_need(ticks, scaling.scale_up_stabilization_seconds) >= current:
        return None
    window, covered = _window(ticks, seconds)
    if not covered:
        return None
    need = _sustained_peak(ticks, len(ticks) - len(window), scaling.scale_up_stabilization_seconds)
    to = max(need, floor, _down_limit(current, tuning))
    if to >= current:
        return None
    observed = max(tick.per_replica for tick in window)
    in_flight = max(tick.in_flight for tick in window)
    words = _METRIC_WORDS[scaling.metric]
    return _decision(
        Direction.DOWN,
        current,
        to,
        scaling,
        observed=observed,
        window=(window[0].at, window[-1].at),
        message=(
            f"scaling {current} -> {to}: load stayed low for {seconds} s: at most "
            f"{observed:.3g} {words} per replica against {scaling.target:g} and at most "
            f"{in_flight:.0f} requests in flight, which {max(need, 1)} replicas carry"
        ),
    )


def _window(ticks: Sequence[TickEvidence], seconds: float) -> tuple[Sequence[TickEvidence], bool]:
    """The ticks of the last `seconds` up to the newest, and whether that span is covered:
    some tick lies at or before its start and no gap since is longer than the tolerance."""
    start = ticks[-1].at - seconds
    first = bisect_left(ticks, start, key=_time_of)
    return ticks[first:], ticks[-1].continuous_since <= start


def _time_of(tick: TickEvidence) -> float:
    return tick.at


def _newest_sustained_need(ticks: Sequence[TickEvidence], up_seconds: float) -> int:
    """The smallest need_down over the up window ending at the newest tick."""
    start = ticks[-1].at - up_seconds
    need = ticks[-1].need_down
    for index in range(len(ticks) - 2, -1, -1):
        if ticks[index].at < start:
            break
        need = min(need, ticks[index].need_down)
    return need


def _sustained_peak(ticks: Sequence[TickEvidence], first: int, up_seconds: float) -> int:
    """The largest, over ticks[first:], of the smallest need_down in the up window ending there."""
    best = 0
    mins: deque[int] = deque()  # indexes whose need_down increases from left to right
    start = first
    while start > 0 and ticks[start - 1].at >= ticks[first].at - up_seconds:
        start -= 1
    for index in range(start, len(ticks)):
        tick = ticks[index]
        while mins and ticks[mins[-1]].need_down >= tick.need_down:
            mins.pop()
        mins.append(index)
        while ticks[mins[0]].at < tick.at - up_seconds:
            mins.popleft()
        if index >= first and ticks[mins[0]].need_down > best:
            best = ticks[mins[0]].need_down
    return best


def _recent(last: ScaleChange | None, now: float, seconds: float, *, up: bool) -> bool:
    """Whether the last change went that way less than `seconds` ago."""
    if last is None or last.to_replicas == last.from_replicas:
        return False
    return (last.to_replicas > last.from_replicas) == up and now - last.at < seconds


def _up_limit(current: int, tuning: Tuning) -> int:
    return current + max(tuning.min_up_step, math.ceil(current * tuning.max_up_ratio))


def _down_limit(current: int, tuning: Tuning) -> int:
    return current - max(tuning.min_down_step, math.floor(current * tuning.max_down_ratio))


def _bounds(current: int, to: int, scaling: ScalingSpec, why: str) -> Decision:
    return _decision(
        Direction.UP if to > current else Direction.DOWN,
        current,
        to,
        scaling,
        observed=None,
        window=(None, None),
        message=f"scaling {current} -> {to}: {current} replicas is {why}",
    )


def _hold(
    current: int, scaling: ScalingSpec, observed: float | None, at: float | None, message: str
) -> Decision:
    return _decision(
        Direction.HOLD,
        current,
        current,
        scaling,
        observed=observed,
        window=(at, at),
        message=message,
    )


def _decision(
    direction: Direction,
    current: int,
    to: int,
    scaling: ScalingSpec,
    *,
    observed: float | None,
    window: tuple[float | None, float | None],
    message: str,
) -> Decision:
    """The one place a Decision and its ScaleReason are put together, whichever the branch."""
    return Decision(
        current=current,
        replicas=to,
        reason=ScaleReason(
            direction=direction,
            metric=scaling.metric,
            observed=observed,
            target=scaling.target,
            window_start=window[0],
            window_end=window[1],
            message=message,
        ),
    )


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()
