"""The aggregated load published for HPA and KEDA, as Prometheus would scrape it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.autoscaling.evidence import ReplicaSample, Snapshot
from sovereign_operator.autoscaling.external import ExternalLoadCollector, aggregate
from tests.unit.autoscaling.histories import busy, load, snapshot

pytestmark = pytest.mark.unit


def scrape(collector: ExternalLoadCollector) -> dict[tuple[str, str, str], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels["namespace"], s.labels["modeldeployment"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_totals_over_the_replicas_that_answered() -> None:
    round_ = snapshot(100, [busy(6), load(running=2, kv=0.2), None], replicas=4)

    total = aggregate(round_)

    assert total is not None
    assert (total.waiting, total.running, total.observed, total.replicas) == (6, 10, 2, 4)
    assert total.kv_cache_usage == pytest.approx((0.9 + 0.2) / 2)


def test_replicas_that_are_not_ready_are_left_out() -> None:
    starting = Snapshot(100, 1, (ReplicaSample("a", False, 0.0, busy(9)),))

    assert aggregate(starting) is None


def test_the_collector_publishes_each_deployment_with_its_labels() -> None:
    collector = ExternalLoadCollector(clock=lambda: 100.0)
    first, second = aggregate(snapshot(100, [busy(6)])), aggregate(snapshot(99, [load(1)] * 2))
    assert first is not None
    assert second is not None
    collector.update("clinical-ai", "llama3-70b", first)
    collector.update("bank", "mistral", second)

    values = scrape(collector)

    assert values[("sovereign_modeldeployment_requests_waiting", "clinical-ai", "llama3-70b")] == 6
    assert values[("sovereign_modeldeployment_requests_running", "clinical-ai", "llama3-70b")] == 8
    assert values[("sovereign_modeldeployment_requests_running", "bank", "mistral")] == 2
    assert values[("sovereign_modeldeployment_observed_replicas", "bank", "mistral")] == 2
    assert values[("sovereign_modeldeployment_replicas", "bank", "mistral")] == 2
    assert ("sovereign_modeldeployment_kv_cache_usage", "bank", "mistral") in values


def test_stale_and_forgotten_deployments_disappear_instead_of_reading_zero() -> None:
    now = [100.0]
    collector = ExternalLoadCollector(stale_after_seconds=60, clock=lambda: now[0])
    fresh, old = aggregate(snapshot(100, [busy(6)])), aggregate(snapshot(30, [busy(6)]))
    assert fresh is not None
    assert old is not None
    collector.update("ns", "fresh", fresh)
    collector.update("ns", "old", old)

    assert {name for _, _, name in scrape(collector)} == {"fresh"}
    collector.retain_only([("ns", "old")])
    assert scrape(collector) == {}
