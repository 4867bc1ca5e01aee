"""One operator for the whole session, installed and run the way `make demo` does it.

The chart is installed with `operator.enabled=false` (CRDs, ServiceAccount, ClusterRole),
and `sovereign run` runs on this machine with a TokenRequest token of the chart's
ServiceAccount, so every test exercises exactly the chart's RBAC. Tests share the operator
(starting one takes seconds) and each works in its own PodSecurity-restricted namespace.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sovereign_operator.devcluster.processes import free_ports
from sovereign_operator.local import NAMESPACE, RELEASE, OperatorProcess, service_account_kubeconfig
from tests.integration.helm import Helm

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
GROUP, VERSION, PLURAL = "sovereign.dev", "v1alpha1", "modeldeployments"
H100 = "NVIDIA-H100-80GB-HBM3"
# llama3-70b-tp8.yaml pins its pods to this residency label; the fake H100 pool gets it.
RESIDENCY = ("node-restriction.kubernetes.io/region", "eu-central")
DIGEST = "sha256:" + "ab" * 32
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def session_helm(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster.helm, cluster.kubeconfig, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def operator_install(cluster: Any, api: k8s.ApiClient, session_helm: Helm) -> Path:
    """The chart installed without its Deployment; returns the ServiceAccount's kubeconfig."""
    session_helm.install_operator_chart()
    core = k8s.CoreV1Api(api)
    for node in core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items:
        body: Any = {"metadata": {"labels": {RESIDENCY[0]: RESIDENCY[1]}}}
        core.patch_node(node.metadata.name, body)
    out = session_helm.home / "operator.kubeconfig"
    return service_account_kubeconfig(cluster.kubeconfig, out)


@pytest.fixture(scope="session")
def operator(
    operator_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """`sovereign run` as the chart's ServiceAccount, serving all namespaces."""
    metrics_port, health_port, webhook_port = free_ports(3)
    state = tmp_path_factory.mktemp("operator")
    process = OperatorProcess(
        kubeconfig=operator_install,
        log=state / "operator.log",
        metrics_port=metrics_port,
        health_port=health_port,
        extra_args=(
            "--all-namespaces",
            "--resync-seconds=20",
            # The admission webhook, registered by URL: the API server runs on this machine.
            "--webhook-host=127.0.0.1",
            f"--webhook-port={webhook_port}",
            f"--webhook-cert-dir={state / 'webhook'}",
        ),
    )
    with process.running():
        yield process


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed and "operator" in request.fixturenames:
        process: OperatorProcess = request.getfixturevalue("operator")
        lines = process.log.read_text(errors="replace").splitlines()[-60:]
        print("\n##### operator log (tail)\n" + "\n".join(lines))


@pytest.fixture
def model_store(api: k8s.ApiClient, namespace: str) -> Iterator[str]:
    """A bound PVC `model-store` in the test namespace, as the examples' pvc:// sources need.

    Pre-bound to its own PersistentVolume (no provisioner runs here); the scheduler only
    places pods whose claims are bound.
    """
    core = k8s.CoreV1Api(api)
    volume = f"model-store-{namespace}"
    pv: Any = {
        "metadata": {"name": volume, "labels": {"sovereign.dev/test-namespace": namespace}},
        "spec": {
            "capacity": {"storage": "2Ti"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": "/var/lib/sovereign/model-store"},
            "claimRef": {"namespace": namespace, "name": "model-store"},
        },
    }
    pvc: Any = {
        "metadata": {"name": "model-store"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "2Ti"}},
        },
    }
    core.create_persistent_volume(pv)
    core.create_namespaced_persistent_volume_claim(namespace, pvc)
    wait_for(
        lambda: (
            core.read_namespaced_persistent_volume_claim("model-store", namespace).status.phase
            == "Bound"
        ),
        30,
        "the model-store claim to bind",
    )
    yield "model-store"
    try:
        core.delete_persistent_volume(volume)
    except ApiException as error:
        if error.status != 404:
            raise


def load_example(name: str, namespace: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    document["metadata"]["namespace"] = namespace
    return document


def model_deployment(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A small ModelDeployment: 1 GPU of any type from the test's model-store claim."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"source": f"pvc://model-store/models/{name}", "digest": DIGEST},
            "resources": {"gpus": 1},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
"""The chart's ServiceAccount: the one identity the operator logs in with in these tests."""


def requests_by(logs: Path, username: str) -> list[dict[str, Any]]:
    """Every request of `username` in the API server's audit log, rotated files included."""
    found = []
    for path in sorted(logs.glob("audit*.log")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if (
                entry.get("stage") == "ResponseComplete"
                and entry["user"].get("username") == username
            ):
                found.append(entry)
    return found


@dataclass
class Md:
    """Reads of ModelDeployments and their children through the admin client."""

    api: k8s.ApiClient

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return found

    def create(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        k8s.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )

    def patch_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}
        )

    def condition(self, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
        for condition in (self.get(namespace, name).get("status") or {}).get("conditions", []):
            if condition["type"] == kind:
                found: dict[str, Any] = condition
                return found
        return None

    def wait_condition(
        self, namespace: str, name: str, kind: str, status: str = "True", timeout: float = 60
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            condition = self.condition(namespace, name, kind)
            return condition if condition and condition["status"] == status else None

        return wait_for(check, timeout, f"{kind}={status} on {namespace}/{name}")

    def children(self, namespace: str, name: str) -> dict[str, list[Any]]:
        selector = f"sovereign.dev/deployment={name}"
        core, apps = k8s.CoreV1Api(self.api), k8s.AppsV1Api(self.api)
        net, policy = k8s.NetworkingV1Api(self.api), k8s.PolicyV1Api(self.api)
        return {
            "ServiceAccount": core.list_namespaced_service_account(
                namespace, label_selector=selector
            ).items,
            "Service": core.list_namespaced_service(namespace, label_selector=selector).items,
            "NetworkPolicy": net.list_namespaced_network_policy(
                namespace, label_selector=selector
            ).items,
            "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget(
                namespace, label_selector=selector
            ).items,
            "Deployment": apps.list_namespaced_deployment(namespace, label_selector=selector).items,
        }

    def engine_pods(self, namespace: str, name: str) -> list[Any]:
        selector = f"sovereign.dev/deployment={name},sovereign.dev/role=engine"
        pods: list[Any] = (
            k8s.CoreV1Api(self.api).list_namespaced_pod(namespace, label_selector=selector).items
        )
        return pods


@pytest.fixture
def md(api: k8s.ApiClient) -> Md:
    return Md(api)
