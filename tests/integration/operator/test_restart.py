"""Killing the operator in the middle of reconciling 20 ModelDeployments loses nothing
and duplicates nothing: every child name is derived, and every pass is level-based."""

from __future__ import annotations

from collections import Counter

import pytest
from kubernetes import client as k8s

from sovereign_operator.local import OperatorProcess
from tests.integration.operator.conftest import Md, model_deployment, wait_for

pytestmark = pytest.mark.integration

COUNT = 20


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    operator: OperatorProcess, model_store: str, namespace: str, api: k8s.ApiClient, md: Md
) -> None:
    apps = k8s.AppsV1Api(api)
    names = [f"m{i:02d}" for i in range(COUNT)]
    for name in names:
        md.create(model_deployment(name, namespace))
    wait_for(
        lambda: apps.list_namespaced_deployment(namespace).items, 30, "the first engine Deployment"
    )
    operator.stop(kill=True)  # SIGKILL: no graceful shutdown, writes cut off mid-way
    created_before = len(apps.list_namespaced_deployment(namespace).items)
    operator.start()

    for name in names:
        md.wait_condition(namespace, name, "Ready", timeout=120)
    by_owner = Counter(
        d.metadata.labels["sovereign.dev/deployment"]
        for d in apps.list_namespaced_deployment(namespace).items
    )
    assert by_owner == dict.fromkeys(names, 1)
    for name in names:
        assert {kind: len(items) for kind, items in md.children(namespace, name).items()} == {
            "ServiceAccount": 1,
            "Service": 1,
            "NetworkPolicy": 1,
            "PodDisruptionBudget": 1,
            "Deployment": 1,
        }
        assert len(md.engine_pods(namespace, name)) == 1
    print(f"{created_before} of {COUNT} engine Deployments existed when the operator was killed")
