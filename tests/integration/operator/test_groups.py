"""Multi-node groups on the local control plane: 4 fake H100 nodes with 8 GPUs each.

A 16-GPU ModelDeployment on 8-GPU nodes is one group of two pods per replica (TP 8, PP 2).
These tests check what the scheduler and the operator make of it: distinct nodes, whole
groups counted, scaled, replaced and removed, and a group that cannot be placed whole
reported, then parked so it holds no GPUs, then brought back once it fits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sovereign_operator.observe import gpus_in_use
from tests.integration.operator.conftest import H100, Md, model_deployment, wait_for

pytestmark = pytest.mark.integration

GROUP_LABEL = "sovereign.dev/group"
PARKED = "sovereign.dev/parked"
H100_NODES = 4
GPUS_PER_NODE = 8
SHORTAGE = f"needs 8 nvidia.com/gpu of {H100} on 1 more node"


def group_deployment(name: str, namespace: str, backend: str, **spec: Any) -> dict[str, Any]:
    return model_deployment(
        name,
        namespace,
        resources={"gpus": 16, "gpuType": H100},
        multiNode={"backend": backend, "placementTimeout": 30},
        **spec,
    )


def statefulsets(api: k8s.ApiClient, namespace: str, name: str) -> list[Any]:
    found: list[Any] = (
        k8s.AppsV1Api(api)
        .list_namespaced_stateful_set(namespace, label_selector=f"sovereign.dev/deployment={name}")
        .items
    )
    return found


def live_pods(md: Md, namespace: str, name: str) -> list[Any]:
    return [p for p in md.engine_pods(namespace, name) if not p.metadata.deletion_timestamp]


def pods_by_group(md: Md, namespace: str, name: str) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for pod in live_pods(md, namespace, name):
        groups.setdefault(pod.metadata.labels[GROUP_LABEL], []).append(pod)
    return groups


def free_h100_nodes(api: k8s.ApiClient) -> list[str]:
    """H100 nodes on which no pod requests a GPU (earlier tests' namespaces go lazily)."""
    core = k8s.CoreV1Api(api)
    nodes: list[Any] = core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items
    # Raw JSON (camelCase), which is what gpus_in_use reads, as the operator's watch does.
    response: Any = core.list_pod_for_all_namespaces(_preload_content=False)
    used = gpus_in_use(json.loads(response.data)["items"])
    return sorted(n.metadata.name for n in nodes if used.get(n.metadata.name, 0) == 0)


@pytest.fixture
def h100_pool(api: k8s.ApiClient) -> list[str]:
    """The four H100 nodes, once earlier tests' namespaces have released their GPUs."""

    def all_free() -> list[str] | None:
        free = free_h100_nodes(api)
        return free if len(free) == H100_NODES else None

    return wait_for(all_free, 120, "every H100 node to be free of earlier tests' pods")


@pytest.fixture
def occupy(api: k8s.ApiClient, namespace: str) -> Iterator[Any]:
    """occupy(node) -> a pause pod holding all 8 GPUs of `node`; removed after the test."""
    core = k8s.CoreV1Api(api)
    created: list[str] = []

    def hold(node: str) -> str:
        name = f"hold-{node}"
        body: Any = {
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "hold",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"limits": {"nvidia.com/gpu": str(GPUS_PER_NODE)}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
        core.create_namespaced_pod(namespace, body)
        created.append(name)
        wait_for(
            lambda: (
                getattr(core.read_namespaced_pod(name, namespace).spec, "node_name", None) == node
            ),
            30,
            f"{name} to be placed",
        )
        return name

    yield hold
    for name in created:
        release(api, namespace, name)


def release(api: k8s.ApiClient, namespace: str, name: str) -> None:
    try:
        k8s.CoreV1Api(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as error:
        if error.status != 404:
            raise


def wait_ready(kubectl: Any, namespace: str, name: str) -> None:
    """The user's way of waiting for a deployment."""
    kubectl("wait", "--for=condition=Ready", f"md/{name}", "-n", namespace, "--timeout=120s")


def settled(md: Md, namespace: str, name: str, summary: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = md.get(namespace, name).get("status") or {}
        progressing = md.condition(namespace, name, "Progressing") or {}
        done = status.get("readySummary") == summary and progressing.get("status") == "False"
        return status if done else None

    return wait_for(check, 120, f"{name} to settle at {summary}")


def delete_and_wait_for_every_group_to_go(
    api: k8s.ApiClient, md: Md, namespace: str, name: str
) -> None:
    k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
        "sovereign.dev", "v1alpha1", namespace, "modeldeployments", name
    )
    wait_for(lambda: not statefulsets(api, namespace, name), 60, "every group to go")
    wait_for(lambda: not md.engine_pods(namespace, name), 60, "every group pod to go")


@pytest.mark.parametrize("backend", ["native", "ray"])
def test_a_16_gpu_model_gets_a_two_pod_group_on_two_h100_nodes_and_turns_ready(
    backend: str,
    operator: Any,
    model_store: str,
    namespace: str,
    h100_pool: list[str],
    kubectl: Any,
    api: k8s.ApiClient,
    md: Md,
) -> None:
    md.create(group_deployment("big", namespace, backend))
    wait_ready(kubectl, namespace, "big")
    status = settled(md, namespace, "big", "1/1")
    assert status["plan"]["parallelism"] == "8x2"
    assert status["readyReplicas"] == 1
    # The scale subresource counts groups: it selects one pod (the leader) per group.
    assert "apps.kubernetes.io/pod-index=0" in status["selector"]
    leaders = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=status["selector"])
    assert len(leaders.items) == 1

    (sts,) = statefulsets(api, namespace, "big")
    assert sts.spec.replicas == 2
    ((group, pods),) = pods_by_group(md, namespace, "big").items()
    assert group == sts.metadata.name
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 2
    assert nodes <= set(h100_pool)
    for pod in pods:
        engine = next(c for c in pod.spec.containers if c.name == "engine")
        assert engine.resources.limits["nvidia.com/gpu"] == "8"
        args = engine.args
        assert args[args.index("--backend") + 1] == backend
        assert args[args.index("--nnodes") + 1] == "2"
    assert md.get(namespace, "big")["status"]["phase"] == "Ready"

    delete_and_wait_for_every_group_to_go(api, md, namespace, "big")


def test_groups_scale_whole_are_replaced_whole_and_all_go_on_delete(
    operator: Any,
    model_store: str,
    namespace: str,
    h100_pool: list[str],
    kubectl: Any,
    api: k8s.ApiClient,
    md: Md,
) -> None:
    md.create(group_deployment("fleet", namespace, "native"))
    wait_ready(kubectl, namespace, "fleet")
    settled(md, namespace, "fleet", "1/1")
    (first,) = statefulsets(api, namespace, "fleet")

    kubectl("scale", "md/fleet", "-n", namespace, "--replicas=2")
    status = settled(md, namespace, "fleet", "2/2")
    assert status["replicas"] == 2
    scale = json.loads(
        kubectl(
            "get",
            "--raw",
            f"/apis/sovereign.dev/v1alpha1/namespaces/{namespace}/modeldeployments/fleet/scale",
        ).stdout
    )
    assert scale["status"]["replicas"] == 2
    assert "apps.kubernetes.io/pod-index=0" in scale["status"]["selector"]
    groups = pods_by_group(md, namespace, "fleet")
    assert first.metadata.name in groups
    assert len(groups) == 2
    assert all(len(pods) == 2 for pods in groups.values())
    # Two groups of two 8-GPU pods fill the four nodes, one pod each.
    assert sorted(p.spec.node_name for pods in groups.values() for p in pods) == h100_pool

    kubectl("scale", "md/fleet", "-n", namespace, "--replicas=1")
    settled(md, namespace, "fleet", "1/1")
    wait_for(
        lambda: (
            [s.metadata.name for s in statefulsets(api, namespace, "fleet")]
            == [first.metadata.name]
        ),
        60,
        "the second group to go",
    )

    md.patch_spec(namespace, "fleet", {"engine": {"maxModelLen": 4096}})

    def replaced() -> bool:
        # Sampled all along the replacement: no group ever holds pods of two templates.
        for pods in pods_by_group(md, namespace, "fleet").values():
            hashes = {p.metadata.annotations["sovereign.dev/template-hash"] for p in pods}
            assert len(hashes) == 1, f"a group mixes templates: {hashes}"
        names = [s.metadata.name for s in statefulsets(api, namespace, "fleet")]
        return len(names) == 1 and names != [first.metadata.name]

    wait_for(replaced, 90, "the old group to be replaced whole by a new one")
    wait_ready(kubectl, namespace, "fleet")
    settled(md, namespace, "fleet", "1/1")
    ((group, pods),) = pods_by_group(md, namespace, "fleet").items()
    assert group != first.metadata.name
    hashes = {p.metadata.annotations["sovereign.dev/template-hash"] for p in pods}
    assert len(hashes) == 1
    assert len(pods) == 2

    delete_and_wait_for_every_group_to_go(api, md, namespace, "fleet")


def test_a_group_without_room_is_reported_then_parked_then_brought_back(
    operator: Any,
    model_store: str,
    namespace: str,
    h100_pool: list[str],
    occupy: Any,
    kubectl: Any,
    api: k8s.ApiClient,
    md: Md,
) -> None:
    holders = [occupy(node) for node in h100_pool[1:]]  # one H100 node stays free
    md.create(group_deployment("squeezed", namespace, "native"))

    scheduled = md.wait_condition(namespace, "squeezed", "Scheduled", "False", timeout=60)
    assert scheduled["reason"] == "InsufficientGPU"
    assert SHORTAGE in scheduled["message"]
    ready = md.condition(namespace, "squeezed", "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    placed = wait_for(
        lambda: [p for p in live_pods(md, namespace, "squeezed") if p.spec.node_name],
        30,
        "one pod of the group to hold the free node",
    )
    assert [p.spec.node_name for p in placed] == h100_pool[:1]

    # Just after the 30 s placement timeout (the operator wakes for it) the group is parked:
    # its pods are removed so the free node's GPUs are not held, and the condition stays.
    (sts,) = wait_for(
        lambda: [s for s in statefulsets(api, namespace, "squeezed") if s.spec.replicas == 0],
        120,
        "the group to be parked",
    )
    assert "could not be placed within 30 s" in sts.metadata.annotations[PARKED]
    wait_for(lambda: not md.engine_pods(namespace, "squeezed"), 60, "the group's pods to go")

    def parked_condition() -> dict[str, Any] | None:
        # The pass after the pods' deletion events says so; the one before still saw them.
        found = md.condition(namespace, "squeezed", "Scheduled")
        return found if found and "groups parked" in found["message"] else None

    scheduled = wait_for(parked_condition, 30, "Scheduled to say the group is parked")
    assert scheduled["status"] == "False"
    assert md.condition(namespace, "squeezed", "Ready")["status"] == "False"  # type: ignore[index]
    assert md.get(namespace, "squeezed")["status"]["readyReplicas"] == 0

    # Room for the whole group again: it gets its pods back and serves.
    for holder in holders:
        release(api, namespace, holder)
    md.wait_condition(namespace, "squeezed", "Scheduled", "True", timeout=120)
    wait_ready(kubectl, namespace, "squeezed")
    ((_, pods),) = pods_by_group(md, namespace, "squeezed").items()
    assert len({p.spec.node_name for p in pods}) == 2
    (sts,) = statefulsets(api, namespace, "squeezed")
    assert PARKED not in (sts.metadata.annotations or {})
