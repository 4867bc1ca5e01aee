"""Properties of the policy over generated histories: bounds, steps, and missing data."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sovereign_operator.api.model_deployment import ScalingMetric, ScalingSpec
from sovereign_operator.autoscaling.evidence import (
    DEFAULT_TUNING,
    EngineLoad,
    ReplicaSample,
    Snapshot,
    assess_all,
)
from sovereign_operator.autoscaling.policy import Decision, Direction, ScaleChange, decide

pytestmark = pytest.mark.unit

TICK = 5.0
# Few examples per run keeps the unit tier fast; hypothesis' database replays failures.
PROPERTY = settings(max_examples=50, deadline=None)


@st.composite
def specs(draw: st.DrawFn) -> ScalingSpec:
    low = draw(st.integers(0, 20))
    metric = draw(st.sampled_from(list(ScalingMetric)))
    target = draw(
        st.floats(0.05, 1.0) if metric is ScalingMetric.KV_CACHE_USAGE else st.floats(0.5, 64)
    )
    return ScalingSpec(
        min_replicas=low,
        max_replicas=draw(st.integers(max(low, 1), 40)),
        metric=metric,
        target=target,
        scale_up_stabilization_seconds=draw(st.sampled_from([0, 15, 30, 120])),
        scale_down_stabilization_seconds=draw(st.sampled_from([0, 60, 300])),
    )


loads = st.builds(
    EngineLoad,
    waiting=st.floats(0, 500),
    running=st.floats(0, 256),
    kv_cache_usage=st.floats(0, 1),
)
samples = st.builds(
    ReplicaSample,
    replica=st.text("abc", min_size=1, max_size=3),
    ready=st.booleans(),
    ready_since=st.floats(-1000, 400),
    load=st.none() | loads,
)


@st.composite
def histories(draw: st.DrawFn) -> list[Snapshot]:
    count = draw(st.integers(1, 30))
    start = draw(st.floats(-600, 0))
    kept = draw(st.lists(st.booleans(), min_size=count, max_size=count))  # False: a gap
    return [
        Snapshot(
            at=start + i * TICK,
            replicas=draw(st.integers(0, 16)),
            samples=tuple(draw(st.lists(samples, max_size=4))),
        )
        for i in range(count)
        if kept[i] or i == count - 1
    ]


@st.composite
def regular_histories(draw: st.DrawFn) -> list[Snapshot]:
    """Evenly spaced rounds of the same long-Ready replicas going through a few phases of
    steady load: the histories in which the policy does scale, both ways."""
    replicas = draw(st.integers(1, 6))
    light = st.builds(
        EngineLoad,
        waiting=st.sampled_from([0.0, 0.0, 1.0, 20.0]),
        running=st.floats(0, 16),
        kv_cache_usage=st.floats(0, 1),
    )
    rounds: list[tuple[EngineLoad, ...]] = []
    for _ in range(draw(st.integers(1, 3))):
        loads_now = tuple(draw(light) for _ in range(replicas))
        rounds += [loads_now] * draw(st.integers(1, 60))
    return [
        Snapshot(
            at=i * TICK,
            replicas=replicas,
            samples=tuple(
                ReplicaSample(f"r{r}", True, -1000.0, value) for r, value in enumerate(loads_now)
            ),
        )
        for i, loads_now in enumerate(rounds)
    ]


changes = st.none() | st.builds(
    ScaleChange,
    at=st.floats(-900, 0),
    from_replicas=st.integers(0, 40),
    to_replicas=st.integers(0, 40),
)


def answer(history: list[Snapshot], spec: ScalingSpec, **kwargs: Any) -> Decision:
    kwargs.setdefault("now", history[-1].at)
    return decide(assess_all(history, spec), scaling=spec, **kwargs)


@given(specs(), histories(), st.integers(0, 60), st.floats(0, 60), changes)
@PROPERTY
def test_the_answer_is_within_bounds_and_its_reason_agrees(
    spec: ScalingSpec,
    history: list[Snapshot],
    current: int,
    delay: float,
    last: ScaleChange | None,
) -> None:
    decision = answer(history, spec, current=current, now=history[-1].at + delay, last_change=last)

    assert spec.min_replicas <= decision.replicas <= spec.max_replicas
    assert decision.current == current
    direction = decision.reason.direction
    if decision.replicas > current:
        assert direction is Direction.UP
    elif decision.replicas < current:
        assert direction is Direction.DOWN
    else:
        assert direction is Direction.HOLD
    assert decision.reason.metric is spec.metric
    assert decision.reason.target == spec.target
    assert decision.reason.message


@given(specs(), histories(), st.integers(0, 60), changes)
@PROPERTY
def test_one_decision_moves_by_a_bounded_step(
    spec: ScalingSpec, history: list[Snapshot], current: int, last: ScaleChange | None
) -> None:
    decision = answer(history, spec, current=current, last_change=last)

    if spec.min_replicas <= current <= spec.max_replicas:
        tuning = DEFAULT_TUNING
        assert decision.replicas - current <= max(tuning.min_up_step, current)
        assert current - decision.replicas <= max(tuning.min_down_step, current // 2)


@given(specs(), regular_histories() | histories(), st.integers(0, 60))
@PROPERTY
def test_missing_metrics_never_scale_down(
    spec: ScalingSpec, history: list[Snapshot], current: int
) -> None:
    silent = [
        dataclasses.replace(
            snapshot,
            samples=tuple(dataclasses.replace(s, load=None) for s in snapshot.samples),
        )
        for snapshot in history
    ]

    decision = answer(silent, spec, current=current)

    clamped = min(max(current, spec.min_replicas), spec.max_replicas)
    assert decision.replicas == clamped


@given(specs(), regular_histories() | histories(), st.floats(15.001, 10_000), st.data())
@PROPERTY
def test_stale_metrics_never_scale_down(
    spec: ScalingSpec, history: list[Snapshot], age: float, data: st.DataObject
) -> None:
    current = data.draw(st.integers(spec.min_replicas, spec.max_replicas))
    fresh = answer(history, spec, current=current)
    stale = answer(history, spec, current=current, now=history[-1].at + age)

    assert stale.replicas == current
    if fresh.replicas < current:
        assert "no fresh metrics" in stale.reason.message


@given(specs(), histories())
@PROPERTY
def test_the_count_kept_when_scaling_down_covers_the_count_asked_for_going_up(
    spec: ScalingSpec, history: list[Snapshot]
) -> None:
    for tick in assess_all(history, spec):
        assert tick.need_down >= tick.need_up >= 0
