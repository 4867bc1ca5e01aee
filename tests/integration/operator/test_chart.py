"""The chart: lint, server-side validation, install, upgrade with a CRD change, uninstall."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.helm import CHART, Helm
from tests.integration.operator.conftest import wait_for

pytestmark = pytest.mark.integration

CRD = "modeldeployments.sovereign.dev"


def crd_columns(api: k8s.ApiClient) -> list[str]:
    crd = k8s.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
    return [c.name for c in crd.spec.versions[0].additional_printer_columns]


def test_lint_is_clean(session_helm: Helm) -> None:
    for values in (
        [],
        ["--set", "operator.enabled=false"],
        ["--set", "metrics.serviceMonitor.enabled=true"],
    ):
        result = session_helm("lint", "--strict", str(CHART), *values)
        assert "[WARNING]" not in result.stdout
        assert "[ERROR]" not in result.stdout


def test_rendered_chart_passes_server_side_validation(
    operator_install: Path, session_helm: Helm, cluster: Any
) -> None:
    rendered = session_helm(
        "template", "sovereign-operator", str(CHART), "-n", "sovereign-system"
    ).stdout
    result = subprocess.run(
        [
            str(cluster.kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=rendered,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/sovereign-operator serverside-applied (server dry run)" in result.stdout


def test_upgrade_applies_a_crd_change_and_crds_survive_being_left_out(
    operator_install: Path, session_helm: Helm, api: k8s.ApiClient, tmp_path: Path
) -> None:
    changed = tmp_path / "sovereign-operator"
    shutil.copytree(CHART, changed)
    source = changed / "crds-src" / "sovereign.dev_modeldeployments.yaml"
    crd = yaml.safe_load(source.read_text())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {
            "name": "Generation",
            "type": "integer",
            "jsonPath": ".status.observedGeneration",
            "priority": 1,
        }
    )
    source.write_text(yaml.safe_dump(crd))
    try:
        session_helm.install_operator_chart(changed)
        assert "Generation" in crd_columns(api)
        # Leaving the CRDs out of the release must not delete them (and every
        # ModelDeployment with them): helm.sh/resource-policy: keep.
        session_helm.install_operator_chart(CHART, "--set", "crds.enabled=false")
        assert "Generation" in crd_columns(api)
    finally:
        session_helm.install_operator_chart(CHART)
    assert "Generation" not in crd_columns(api)


def test_install_and_uninstall_a_second_release(
    operator_install: Path, session_helm: Helm, api: k8s.ApiClient, namespace: str
) -> None:
    release = "lc"
    session_helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "crds.enabled=false",
        "--set",
        "operator.enabled=false",
        "--wait",
    )
    rbac = k8s.RbacAuthorizationV1Api(api)
    name = f"{release}-sovereign-operator"
    rules = rbac.read_cluster_role(name).rules
    assert all("*" not in (r.verbs + (r.resources or []) + (r.api_groups or [])) for r in rules)
    assert k8s.CoreV1Api(api).read_namespaced_service_account(name, namespace)
    session_helm("uninstall", release, "--namespace", namespace, "--wait")

    def gone() -> bool:
        try:
            rbac.read_cluster_role(name)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, 30, "the second release's ClusterRole to go")
    assert k8s.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
