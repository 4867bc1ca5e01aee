"""The policy on hand-written histories: when it scales, how far, and when it holds."""

from __future__ import annotations

import pytest

from sovereign_operator.api.model_deployment import ScalingMetric
from sovereign_operator.autoscaling.evidence import ReplicaSample, Snapshot
from sovereign_operator.autoscaling.policy import Direction, ScaleChange
from tests.unit.autoscaling.histories import (
    LONG_AGO,
    busy,
    load,
    run,
    scaling,
    snapshot,
    steady,
)

pytestmark = pytest.mark.unit

CALM = [load(running=5), load(running=5)]


def test_sustained_queue_scales_up_to_what_the_requests_in_flight_need() -> None:
    history = steady(-400, -40, CALM) + steady(-35, 0, [busy(10), busy(12)])

    decision = run(history)

    assert decision.changed
    # 16 running + 22 waiting at 8 per replica: 5 replicas run it all without a queue.
    assert decision.replicas == 5
    reason = decision.reason
    assert reason.direction is Direction.UP
    assert reason.metric is ScalingMetric.QUEUE_DEPTH
    assert reason.observed == 11  # the window's lowest waiting per replica
    assert reason.target == 4
    assert (reason.window_start, reason.window_end) == (-30, 0)
    assert "2 -> 5" in reason.message
    assert "30 s" in reason.message


def test_queueing_for_less_than_the_up_window_does_not_scale() -> None:
    history = steady(-400, -30, CALM) + steady(-25, 0, [busy(10), busy(12)])

    assert not run(history).changed


def test_a_short_spike_causes_no_change_before_during_or_after() -> None:
    history = (
        steady(-400, -15, CALM) + steady(-10, 10, [busy(20), busy(20)]) + steady(15, 400, CALM)
    )
    for end in range(1, len(history) + 1):
        decision = run(history[:end])
        assert not decision.changed, (history[end - 1].at, decision.reason.message)


def test_idle_scales_down_only_once_the_whole_window_is_idle() -> None:
    busy_until_zero = steady(-400, 0, [load(running=6)] * 4)
    idle = steady(5, 400, [load()] * 4)
    history = busy_until_zero + idle

    def at(now: float) -> int:
        return run([s for s in history if s.at <= now]).replicas

    assert at(0) == 4  # 24 running need 4 at 6 per replica: no room to remove one
    assert at(295) == 4
    assert at(300) == 4  # the window still holds the busy stretch ending at t=0
    assert at(305) == 2  # down, by at most half per step
    last = ScaleChange(at=305, from_replicas=4, to_replicas=2)
    # Later steps wait for the previous one to show its effect.
    assert run([s for s in history if s.at <= 360], current=2, last_change=last).replicas == 2
    assert run([s for s in history if s.at <= 365], current=2, last_change=last).replicas == 1


def test_the_reason_is_a_json_ready_record() -> None:
    history = steady(1_700_000_000, 1_700_000_400, [load()] * 2)  # 22:13:20Z to 22:20:00Z

    record = run(history).reason.as_record()

    assert record == {
        "direction": "down",
        "metric": "queueDepth",
        "observed": 0.0,
        "target": 4.0,
        "windowStart": "2023-11-14T22:15:00+00:00",
        "windowEnd": "2023-11-14T22:20:00+00:00",
        "message": record["message"],
    }
    assert str(record["message"]).startswith("scaling 2 -> 1: load stayed low for 300 s")


def test_the_down_reason_names_the_window_and_the_load() -> None:
    # Saturated first (so a replica is known to run 8 at once), then light.
    history = steady(-400, -300, [busy(2)] * 4) + steady(-295, 400, [load(running=1)] * 4)

    decision = run(history)

    assert decision.reason.direction is Direction.DOWN
    assert (decision.reason.window_start, decision.reason.window_end) == (100, 400)
    assert "4 -> 2" in decision.reason.message
    assert "300 s" in decision.reason.message


def test_a_busy_deployment_with_an_empty_queue_is_not_scaled_down() -> None:
    # Zero waiting says nothing about headroom: 4 replicas each running close to their
    # concurrency of 8 would queue on 3.
    history = steady(-400, -200, [busy()] * 4) + steady(-195, 400, [load(running=7)] * 4)

    assert run(history).replicas == 4


def test_no_metrics_at_all_holds() -> None:
    decision = run(steady(-400, 0, [None, None, None]))

    assert not decision.changed
    assert decision.reason.direction is Direction.HOLD
    assert decision.reason.observed is None
    assert "no fresh metrics" in decision.reason.message


def test_stale_metrics_hold_even_when_they_said_idle() -> None:
    history = steady(-400, 0, [load()] * 4)

    assert run(history, now=14).replicas == 2  # still fresh
    decision = run(history, now=16)
    assert decision.replicas == 4
    assert "no fresh metrics" in decision.reason.message


def test_a_replica_that_does_not_answer_counts_as_full_when_scaling_down() -> None:
    all_idle = steady(-400, 400, [load()] * 2)
    one_silent = steady(-400, 400, [load(), None])

    assert run(all_idle).replicas == 1
    assert run(one_silent).replicas == 2


def test_a_gap_in_the_evidence_blocks_scaling_down_until_a_full_window_is_seen() -> None:
    idle = steady(-400, 400, [load()] * 4)
    with_gap = [s for s in idle if not 100 < s.at < 130]  # 30 s without any scrape

    assert run(idle).replicas == 2
    assert run(with_gap).replicas == 4
    later = with_gap + steady(405, 430, [load()] * 4)
    assert run(later).replicas == 2  # the gap has left the window


def test_scaling_down_waits_a_full_window_after_a_scale_up() -> None:
    history = steady(-400, 400, [load()] * 4)
    up = ScaleChange(at=150, from_replicas=2, to_replicas=4)

    assert run(history, last_change=up).replicas == 4
    assert run(history, now=404, last_change=up).replicas == 4
    assert run(history + steady(405, 455, [load()] * 4), last_change=up).replicas == 2


def test_bounds_win_over_evidence() -> None:
    idle = steady(-400, 400, [load()] * 4)
    flooded = steady(-400, 0, [busy(200)] * 4)

    above = run(idle, current=12)
    assert (above.replicas, above.reason.direction) == (10, Direction.DOWN)
    assert "maxReplicas" in above.reason.message
    below = run(idle, current=2, spec=scaling(minReplicas=3))
    assert (below.replicas, below.reason.direction) == (3, Direction.UP)

    assert run(flooded, current=8).replicas == 10
    at_max = run(flooded, current=10)
    assert not at_max.changed
    assert "maxReplicas" in at_max.reason.message


def test_never_scales_to_zero_on_its_own() -> None:
    idle = steady(-400, 400, [load()])

    assert run(idle, spec=scaling(minReplicas=0)).replicas == 1
    zero = run([snapshot(400, [])], current=0, spec=scaling(minReplicas=0))
    assert not zero.changed
    assert "from zero" in zero.reason.message


@pytest.mark.parametrize(("current", "expected"), [(1, 5), (2, 6), (6, 12), (9, 18)])
def test_one_step_grows_by_at_most_max_of_four_and_double(current: int, expected: int) -> None:
    flooded = steady(-400, 0, [busy(1000)] * current)

    assert run(flooded, spec=scaling(maxReplicas=100)).replicas == expected


def test_a_second_step_up_waits_for_the_first_step_s_replicas() -> None:
    before = steady(-400, -60, CALM)
    up = ScaleChange(at=-25, from_replicas=2, to_replicas=6)
    starting = before + steady(-55, 0, [busy(30), busy(30)], not_ready=4)

    decision = run(starting, last_change=up)
    assert not decision.changed
    assert "not serving yet" in decision.reason.message

    # Once they are Ready the queue decides again (the newcomers' own samples are not
    # evidence during their grace period).
    old = tuple(ReplicaSample(f"r{i}", True, LONG_AGO, busy(30)) for i in range(2))
    ready = before + [
        Snapshot(t, 6, old + tuple(ReplicaSample(f"n{i}", t >= -5, -5, load(8)) for i in range(4)))
        for t in range(-55, 5, 5)
    ]
    assert run(ready, last_change=up).replicas == 10


def test_a_draining_queue_does_not_buy_more_replicas() -> None:
    history = steady(-400, -35, CALM) + [
        snapshot(t, [busy(40 - t), busy(40 - t)]) for t in range(-30, 5, 5)
    ]

    decision = run(history)
    assert not decision.changed
    assert "falling" in decision.reason.message


def test_replicas_inside_the_grace_period_are_not_evidence() -> None:
    newcomer = -20.0  # Ready 20 s ago: still warming up, its queue says little
    history = [
        Snapshot(
            at=t,
            replicas=2,
            samples=(
                ReplicaSample("old", True, LONG_AGO, load(running=2)),
                ReplicaSample("new", True, newcomer, busy(50) if t > newcomer else None),
            ),
        )
        for t in range(-400, 5, 5)
    ]

    assert not run(history).changed
    only_newcomer = steady(-20, 0, [busy(50)], ready_since=newcomer)
    assert "no fresh metrics" in run(only_newcomer).reason.message


def test_running_requests_count_waiting_requests_as_demand() -> None:
    history = steady(-400, -35, CALM) + steady(-30, 0, [busy(4), busy(4)])
    spec = scaling(metric="runningRequests", target=6)

    decision = run(history, spec=spec)

    assert decision.replicas == 4  # (8 + 4) x 2 in flight at 6 per replica
    assert decision.reason.metric is ScalingMetric.RUNNING_REQUESTS
    assert decision.reason.observed == 8


def test_kv_cache_usage_scales_on_the_average_fraction() -> None:
    hot = [load(running=8, kv=0.6), load(running=8, kv=0.6)]
    history = steady(-400, -35, [load(running=2, kv=0.2)] * 2) + steady(-30, 0, hot)
    spec = scaling(metric="kvCacheUsage", target=0.5)

    decision = run(history, spec=spec)

    assert decision.replicas == 3  # 1.2 of cache at 0.5 per replica
    assert decision.reason.observed == pytest.approx(0.6)


def test_a_change_in_the_same_direction_waits_for_the_step_period() -> None:
    history = steady(-400, -35, CALM) + steady(-30, 0, [busy(20)] * 3)
    recent = ScaleChange(at=-10, from_replicas=2, to_replicas=3)

    held = run(history, last_change=recent)
    assert not held.changed
    assert "step period" in held.reason.message
    assert run(history, now=5, last_change=recent).changed
