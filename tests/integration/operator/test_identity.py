"""The operator needs nothing beyond the chart's ClusterRole: RBAC never refuses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from sovereign_operator.local import OperatorProcess
from tests.integration.operator.conftest import (
    OPERATOR_USER,
    Md,
    model_deployment,
    requests_by,
    wait_for,
)

pytestmark = pytest.mark.integration


def refused_by_rbac(entry: dict[str, Any]) -> bool:
    return (entry.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"


def request(entry: dict[str, Any]) -> str:
    return f"{entry['verb']} {entry['requestURI']}"


def test_create_scale_update_delete_as_the_charts_service_account_see_no_403(
    cluster: Any,
    operator: OperatorProcess,
    operator_install: Path,
    model_store: str,
    namespace: str,
    api: k8s.ApiClient,
    kubectl: Any,
    md: Md,
) -> None:
    if cluster.state is None:
        pytest.skip("reads the local control plane's audit log")
    md.create(model_deployment("rbac", namespace))
    md.wait_condition(namespace, "rbac", "Ready")
    kubectl("scale", "md/rbac", "-n", namespace, "--replicas=2")
    wait_for(lambda: md.get(namespace, "rbac")["status"]["readySummary"] == "2/2", 60, "2/2")
    md.patch_spec(namespace, "rbac", {"resources": {"gpus": 2}})
    wait_for(
        lambda: md.get(namespace, "rbac")["status"]["plan"]["parallelism"] == "2x1", 60, "TP 2"
    )
    md.wait_condition(namespace, "rbac", "Ready")
    kubectl("delete", "md/rbac", "-n", namespace, "--timeout=60s")
    # One request the ClusterRole must refuse, so the check below is seen to catch refusals.
    probe = kubectl("delete", "node", "no-such-node", kubeconfig=operator_install, check=False)
    assert "forbidden" in probe.stderr.lower(), probe.stderr

    entries = requests_by(cluster.state.logs, OPERATOR_USER)
    verbs = {(e["verb"], e["objectRef"].get("resource")) for e in entries if "objectRef" in e}
    # The identity really did the work (not some other credential)...
    assert {
        ("patch", "deployments"),
        ("delete", "deployments"),
        ("list", "modeldeployments"),
    } <= verbs
    # ...and RBAC never refused it, over the whole session so far.
    probe_uri = "/api/v1/nodes/no-such-node"
    assert [request(e) for e in entries if refused_by_rbac(e)] == [f"delete {probe_uri}"]
    # The only other 403 is the namespace lifecycle's: a write racing a test's namespace
    # deletion ("... because it is being terminated"), which no ClusterRole can grant.
    others = [
        e
        for e in entries
        if e["responseStatus"].get("code") == 403 and not e["requestURI"].startswith(probe_uri)
    ]
    assert all("being terminated" in e["responseStatus"].get("message", "") for e in others), [
        (request(e), e["responseStatus"]) for e in others
    ]
