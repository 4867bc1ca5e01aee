"""The local control plane is a real Kubernetes: scheduling by GPU capacity, CEL validation,
pruning, RBAC, PodSecurity admission, and working kubectl and helm at the pinned versions."""

import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sovereign_operator.devcluster import testkit
from sovereign_operator.devcluster.binaries import pinned_versions

pytestmark = pytest.mark.integration

T = TypeVar("T")
CHART = Path(__file__).parent / "charts" / "trivial"
# Never pulled on the local control plane (kwok plays the kubelet); a real, tiny image so
# the same tests run on kind.
IMAGE = "registry.k8s.io/pause:3.10"
H100 = "NVIDIA-H100-80GB-HBM3"


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# The generated client marks every field Optional; these tests read fields a running cluster
# always sets, so the API handles are typed loosely rather than None-checked at each step.
def core(api: k8s.ApiClient) -> Any:
    return k8s.CoreV1Api(api)


def apps(api: k8s.ApiClient) -> Any:
    return k8s.AppsV1Api(api)


def custom_objects(api: k8s.ApiClient) -> Any:
    return k8s.CustomObjectsApi(api)


def message(error: pytest.ExceptionInfo[ApiException]) -> str:
    """The apiserver's Status message (the body is JSON, so quotes arrive escaped)."""
    return str(json.loads(str(error.value.body))["message"])


def restricted_pod_spec(resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod spec that passes PodSecurity `restricted`."""
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "engine",
                "image": IMAGE,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": resources or {},
            }
        ],
    }


def gpu_deployment(name: str, gpus: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": restricted_pod_spec({"limits": {"nvidia.com/gpu": str(gpus)}}),
            },
        },
    }


def pods_of(api: k8s.ApiClient, namespace: str, app: str) -> Any:
    return core(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items


def test_pod_asking_for_eight_gpus_runs_on_an_h100_node(
    api: k8s.ApiClient, namespace: str, cluster: Any
) -> None:
    apps(api).create_namespaced_deployment(namespace, gpu_deployment("llm", 8))

    def running_pod() -> Any:
        pods = pods_of(api, namespace, "llm")
        ready = [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]
        return ready[0] if ready else None

    pod = wait_for(running_pod, 60, "the 8-GPU pod to be Running")
    node = core(api).read_node(pod.spec.node_name)
    # Only H100 nodes offer 8 GPUs, so the scheduler had to pick one by capacity alone.
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    pod_ip = ipaddress.IPv4Address(pod.status.pod_ip)
    assert pod_ip in ipaddress.IPv4Network(node.spec.pod_cidr)
    if cluster.state is not None:
        # kwok hands out addresses on loopback, so a test can bind a real server to a pod IP.
        assert pod_ip in ipaddress.IPv4Network("127.0.0.0/8")
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    wait_for(
        lambda: apps(api).read_namespaced_deployment("llm", namespace).status.ready_replicas == 1,
        30,
        "the Deployment to report 1 ready replica",
    )


def test_pod_asking_for_nine_gpus_stays_pending_naming_the_shortage(
    api: k8s.ApiClient, namespace: str
) -> None:
    apps(api).create_namespaced_deployment(namespace, gpu_deployment("too-big", 9))
    v1 = core(api)

    def scheduling_failure() -> Any:
        events = v1.list_namespaced_event(namespace, field_selector="reason=FailedScheduling")
        return events.items[0] if events.items else None

    event = wait_for(scheduling_failure, 60, "a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in event.message
    (pod,) = pods_of(api, namespace, "too-big")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    assert event.involved_object.name == pod.metadata.name


@pytest.fixture
def cel_crd(api: k8s.ApiClient) -> Any:
    """A namespaced CRD in our group family with one CEL rule; removed after the test."""
    group, plural = "e2e.sovereign.dev", "replicaranges"
    crd: Any = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "replicarange", "kind": "ReplicaRange"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["minReplicas", "maxReplicas"],
                                    "properties": {
                                        "minReplicas": {"type": "integer", "minimum": 0},
                                        "maxReplicas": {"type": "integer", "minimum": 0},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": "minReplicas must not exceed maxReplicas",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions: Any = k8s.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(crd)

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(
            crd["metadata"]["name"]
        ).status.conditions
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    wait_for(established, 30, "the CRD to be Established")
    yield group, plural
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])


def replica_range(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "e2e.sovereign.dev/v1",
        "kind": "ReplicaRange",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_cel_rule_rejects_with_its_message_and_unknown_fields_are_pruned(
    api: k8s.ApiClient, namespace: str, cel_crd: tuple[str, str]
) -> None:
    group, plural = cel_crd
    custom = custom_objects(api)

    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            group, "v1", namespace, plural, replica_range("bad", minReplicas=5, maxReplicas=2)
        )
    assert refused.value.status == 422
    assert "minReplicas must not exceed maxReplicas" in message(refused)

    body = replica_range("ok", minReplicas=1, maxReplicas=3, colour="blue")
    custom.create_namespaced_custom_object(group, "v1", namespace, plural, body)
    stored: Any = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "ok")
    assert stored["spec"] == {"minReplicas": 1, "maxReplicas": 3}, "unknown field kept"

    with pytest.raises(ApiException) as strict:
        custom.create_namespaced_custom_object(
            group,
            "v1",
            namespace,
            plural,
            replica_range("strict", **body["spec"]),
            field_validation="Strict",
        )
    assert strict.value.status == 400
    assert 'unknown field "spec.colour"' in message(strict)


def test_cleanup_deletes_our_resources_and_frees_stuck_finalizers(
    api: k8s.ApiClient, namespace: str, cel_crd: tuple[str, str]
) -> None:
    # What the namespace fixture runs at teardown: with no operator to run the finalizer,
    # the object would otherwise block its namespace's deletion forever.
    group, plural = cel_crd
    custom = custom_objects(api)
    stuck = replica_range("stuck", minReplicas=0, maxReplicas=1)
    stuck["metadata"]["finalizers"] = ["sovereign.dev/finalizer"]
    custom.create_namespaced_custom_object(group, "v1", namespace, plural, stuck)
    custom.create_namespaced_custom_object(
        group, "v1", namespace, plural, replica_range("plain", minReplicas=0, maxReplicas=1)
    )

    warnings = testkit.delete_custom_resources(api, namespace, timeout=2)

    assert warnings == [f"{plural}.{group}/stuck: finalizers still pending, removed them"]
    wait_for(
        lambda: not custom.list_namespaced_custom_object(group, "v1", namespace, plural)["items"],
        10,
        "both objects to be gone",
    )


def test_identity_needs_a_role_binding(
    api: k8s.ApiClient, api_as: Callable[[str], k8s.ApiClient], namespace: str
) -> None:
    alice, bob, mallory = (core(api_as(name)) for name in ("alice", "bob", "mallory"))
    with pytest.raises(ApiException) as denied:
        alice.list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert 'User "alice" cannot list resource "pods"' in message(denied)

    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "alice-views"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }
    # RBAC stops users from granting what they do not hold: mallory cannot bind herself in.
    with pytest.raises(ApiException) as escalation:
        k8s.RbacAuthorizationV1Api(api_as("mallory")).create_namespaced_role_binding(
            namespace, binding
        )
    assert escalation.value.status == 403
    k8s.RbacAuthorizationV1Api(api).create_namespaced_role_binding(namespace, binding)

    def alice_can_list() -> bool:
        try:
            alice.list_namespaced_pod(namespace)
        except ApiException as error:
            if error.status != 403:
                raise
            return False
        return True

    wait_for(alice_can_list, 10, "alice's RoleBinding to take effect")
    for other in (bob, mallory):
        with pytest.raises(ApiException) as still_denied:
            other.list_namespaced_pod(namespace)
        assert still_denied.value.status == 403
    with pytest.raises(ApiException) as read_only:
        alice.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert read_only.value.status == 403


def test_privileged_pod_is_refused_in_a_restricted_namespace(
    api: k8s.ApiClient, namespace: str
) -> None:
    v1 = core(api)
    compliant: Any = {"metadata": {"name": "fine"}, "spec": restricted_pod_spec()}
    v1.create_namespaced_pod(namespace, compliant, dry_run="All")  # the control: admitted

    privileged = restricted_pod_spec()
    privileged["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as refused:
        v1.create_namespaced_pod(namespace, {"metadata": {"name": "root"}, "spec": privileged})
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in message(refused)
    assert "privileged" in message(refused)


def test_kubectl_and_helm_report_the_pinned_versions(
    cluster: Any, kubectl: Callable[..., Any], helm: Callable[..., Any]
) -> None:
    if not cluster.pinned_tools:
        pytest.skip("kubectl and helm come from PATH, not from the pinned build")
    pinned = pinned_versions()
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == pinned.kubernetes
    if cluster.state is not None:
        assert versions["serverVersion"]["gitVersion"] == pinned.kubernetes
    assert helm("version", "--template", "{{.Version}}").stdout.strip() == pinned.helm


def test_helm_installs_a_chart_and_waits_for_it(
    api: k8s.ApiClient, namespace: str, helm: Callable[..., Any]
) -> None:
    helm(
        "install",
        "demo",
        str(CHART),
        "-n",
        namespace,
        "--set",
        "greeting=hej",
        "--wait",
        "--timeout",
        "90s",
    )
    config_map = core(api).read_namespaced_config_map("demo-greeting", namespace)
    assert config_map.data == {"greeting": "hej"}
    assert apps(api).read_namespaced_deployment("demo", namespace).status.ready_replicas == 1
    releases = json.loads(helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    helm("uninstall", "demo", "-n", namespace, "--wait")
    with pytest.raises(ApiException) as gone:
        core(api).read_namespaced_config_map("demo-greeting", namespace)
    assert gone.value.status == 404
