"""The operator's metrics, read back through Prometheus' own text parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.hooks import DeploymentKey
from sovereign_operator.metrics import OperatorMetrics

pytestmark = pytest.mark.unit


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_reconciles_latency_phases_and_replicas() -> None:
    metrics = OperatorMetrics()
    a, b = DeploymentKey("ns", "a", "u1"), DeploymentKey("ns", "b", "u2")
    metrics.observe_reconcile(a, result="changed", seconds=0.02, phase="Ready", desired=2, ready=2)
    metrics.observe_reconcile(b, result="noop", seconds=0.001, phase="Pending", desired=1, ready=0)
    metrics.observe_reconcile(b, result="noop", seconds=0.001, phase="Ready", desired=1, ready=1)
    found = samples(metrics)
    assert found[("sovereign_operator_reconciles_total", (("result", "noop"),))] == 2
    assert found[("sovereign_operator_reconcile_duration_seconds_count", ())] == 3
    assert found[("sovereign_operator_deployments", (("phase", "Ready"),))] == 2
    assert found[("sovereign_operator_deployments", (("phase", "Pending"),))] == 0
    assert found[("sovereign_operator_desired_replicas", (("name", "a"), ("namespace", "ns")))] == 2
    assert found[("sovereign_operator_ready_replicas", (("name", "b"), ("namespace", "ns")))] == 1


def test_a_deleted_deployment_leaves_no_series_behind() -> None:
    metrics = OperatorMetrics()
    key = DeploymentKey("ns", "a", "u1")
    metrics.observe_reconcile(
        key, result="changed", seconds=0.01, phase="Ready", desired=1, ready=1
    )
    metrics.forget(key)
    found = samples(metrics)
    assert not [k for k in found if k[0].endswith("_replicas")]
    assert found[("sovereign_operator_deployments", (("phase", "Ready"),))] == 0


def test_api_errors_by_code_and_writes_by_kind() -> None:
    metrics = OperatorMetrics()
    metrics.api_error(429, "apply")
    metrics.api_error(None, "list")
    metrics.api_write("apply", "Deployment")
    found = samples(metrics)
    assert found[("sovereign_operator_api_errors_total", (("code", "429"), ("verb", "apply")))] == 1
    assert found[("sovereign_operator_api_errors_total", (("code", "0"), ("verb", "list")))] == 1
    assert (
        found[("sovereign_operator_api_writes_total", (("kind", "Deployment"), ("verb", "apply")))]
        == 1
    )


def test_each_operator_has_its_own_registry() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.api_write("apply", "Service")
    assert (
        "sovereign_operator_api_writes_total",
        (("kind", "Service"), ("verb", "apply")),
    ) not in samples(second)
