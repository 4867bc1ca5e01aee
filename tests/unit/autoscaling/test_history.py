"""The bounded per-deployment history: pruning, ordering, spec changes, and the store."""

from __future__ import annotations

import pytest

from sovereign_operator.autoscaling.evidence import assess_all
from sovereign_operator.autoscaling.history import (
    DeploymentHistory,
    HistoryStore,
    retention_seconds,
)
from tests.unit.autoscaling.histories import busy, load, scaling, snapshot, steady

pytestmark = pytest.mark.unit


def test_snapshots_older_than_the_policy_looks_are_dropped() -> None:
    spec = scaling()  # 30 s up, 300 s down
    history = DeploymentHistory()
    for item in steady(0, 1000, [load(running=2)] * 2):
        history.record(item, spec)

    assert retention_seconds(spec) == 360
    assert history.evidence()[0].at == 640
    assert history.evidence()[-1].at == 1000


def test_the_count_is_bounded_whatever_the_windows_say() -> None:
    history = DeploymentHistory(max_ticks=10)
    for item in steady(0, 1000, [load()]):
        history.record(item, scaling())

    assert len(history) == 10


def test_a_snapshot_not_newer_than_the_last_is_ignored() -> None:
    history = DeploymentHistory()
    spec = scaling()
    assert history.record(snapshot(10, [load()]), spec) is not None

    assert history.record(snapshot(10, [busy(50)]), spec) is None
    assert history.record(snapshot(5, [busy(50)]), spec) is None
    assert [e.at for e in history.evidence()] == [10]


def test_snapshots_without_evidence_leave_gaps() -> None:
    history = DeploymentHistory()
    for item in [snapshot(0, [load()]), snapshot(5, [None]), snapshot(10, [load()])]:
        history.record(item, scaling())

    assert [e.at for e in history.evidence()] == [0, 10]
    assert history.record(snapshot(10, [load()]), scaling()) is None  # not newer


def test_evidence_matches_assessing_the_retained_snapshots_in_order() -> None:
    spec = scaling()
    items = steady(0, 100, [busy(3), load(running=5)]) + steady(105, 200, [load(running=1)] * 2)
    history = DeploymentHistory()
    for item in items:
        history.record(item, spec)

    assert history.evidence() == assess_all(items, spec)


def test_a_changed_spec_starts_the_evidence_afresh() -> None:
    history = DeploymentHistory()
    for item in steady(0, 60, [load(running=6, waiting=2)] * 2):
        history.record(item, scaling())
    running = scaling(metric="runningRequests", target=3)

    history.record(snapshot(65, [load(running=6, waiting=2)] * 2), running)

    assert [e.at for e in history.evidence()] == [65]
    assert history.evidence()[0].need_up == 6  # 16 in flight at 3 per replica


def test_the_store_forgets_deployments_no_longer_listed() -> None:
    store = HistoryStore()
    kept, gone = ("ns", "a", "uid-a"), ("ns", "b", "uid-b")
    store.get(kept).record(snapshot(0, [load()]), scaling())
    store.get(gone).record(snapshot(0, [load()]), scaling())

    store.retain_only([kept])

    assert list(store.keys()) == [kept]
    assert len(store.get(kept)) == 1
    assert len(store.get(("ns", "a", "uid-new"))) == 0  # re-created: a fresh history
