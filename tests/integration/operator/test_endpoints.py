"""The operator's own endpoints: health that means something, and its metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.local import OperatorProcess
from tests.integration.operator.conftest import Md, model_deployment

pytestmark = pytest.mark.integration


def test_health_and_metrics(
    operator: OperatorProcess, model_store: str, namespace: str, md: Md
) -> None:
    md.create(model_deployment("observed", namespace))
    md.wait_condition(namespace, "observed", "Ready")
    assert operator.probe("/healthz") == 200
    assert operator.probe("/readyz") == 200
    families = {f.name: f for f in text_string_to_metric_families(operator.metrics())}
    results = {
        s.labels["result"]
        for s in families["sovereign_operator_reconciles"].samples
        if "result" in s.labels
    }
    assert results & {"changed", "noop"}
    ready = [
        s.value
        for s in families["sovereign_operator_ready_replicas"].samples
        if s.labels == {"namespace": namespace, "name": "observed"}
    ]
    assert ready == [1.0]
    assert families["sovereign_operator_reconcile_duration_seconds"].samples
