"""One ModelDeployment through its life: scale, resize, drift repair, deletion."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.operator.conftest import Md, model_deployment, wait_for

pytestmark = pytest.mark.integration

L40S = "NVIDIA-L40S"


def engine(api: k8s.ApiClient, namespace: str, name: str) -> Any:
    return k8s.AppsV1Api(api).read_namespaced_deployment(f"{name}-engine", namespace)


def tensor_parallel(deployment: Any) -> str:
    args = deployment.spec.template.spec.containers[0].args
    return str(args[args.index("--tensor-parallel-size") + 1])


def ready_with(md: Md, namespace: str, name: str, summary: str) -> None:
    md.wait_condition(namespace, name, "Ready")
    wait_for(
        lambda: (
            md.get(namespace, name)["status"].get("readySummary") == summary
            and md.condition(namespace, name, "Progressing")["status"] == "False"
        ),  # type: ignore[index]
        60,
        f"{name} to settle at {summary}",
    )


def test_resizing_gpus_rolls_the_engine_to_tensor_parallel_two_and_back(
    operator: Any, model_store: str, namespace: str, api: k8s.ApiClient, md: Md
) -> None:
    md.create(model_deployment("resize", namespace, resources={"gpus": 1, "gpuType": L40S}))
    ready_with(md, namespace, "resize", "1/1")
    assert tensor_parallel(engine(api, namespace, "resize")) == "1"

    md.patch_spec(namespace, "resize", {"resources": {"gpus": 2, "gpuType": L40S}})
    wait_for(
        lambda: md.get(namespace, "resize")["status"]["plan"]["parallelism"] == "2x1",
        30,
        "the plan to become TP 2",
    )
    ready_with(md, namespace, "resize", "1/1")
    deployment = engine(api, namespace, "resize")
    assert tensor_parallel(deployment) == "2"
    (pod,) = [p for p in md.engine_pods(namespace, "resize") if not p.metadata.deletion_timestamp]
    limits = next(c for c in pod.spec.containers if c.name == "engine").resources.limits
    assert limits["nvidia.com/gpu"] == "2"
    status = md.get(namespace, "resize")
    assert status["status"]["observedGeneration"] == status["metadata"]["generation"]

    md.patch_spec(namespace, "resize", {"resources": {"gpus": 1, "gpuType": L40S}})
    wait_for(lambda: tensor_parallel(engine(api, namespace, "resize")) == "1", 30, "TP 1 again")
    ready_with(md, namespace, "resize", "1/1")


def test_scale_subresource_scales_the_engine(
    operator: Any, model_store: str, namespace: str, kubectl: Any, api: k8s.ApiClient, md: Md
) -> None:
    md.create(model_deployment("scaled", namespace))
    ready_with(md, namespace, "scaled", "1/1")
    kubectl("scale", "md/scaled", "-n", namespace, "--replicas=2")
    ready_with(md, namespace, "scaled", "2/2")
    assert engine(api, namespace, "scaled").spec.replicas == 2
    status = md.get(namespace, "scaled")["status"]
    assert status["replicas"] == 2
    assert status["selector"] == "sovereign.dev/deployment=scaled,sovereign.dev/role=engine"
    scale = kubectl(
        "get",
        "--raw",
        f"/apis/sovereign.dev/v1alpha1/namespaces/{namespace}/modeldeployments/scaled/scale",
    )
    assert '"replicas":2' in scale.stdout.replace(" ", "")


def test_a_child_deleted_or_edited_by_hand_is_restored(
    operator: Any, model_store: str, namespace: str, api: k8s.ApiClient, md: Md
) -> None:
    md.create(model_deployment("drift", namespace))
    ready_with(md, namespace, "drift", "1/1")
    apps = k8s.AppsV1Api(api)
    before = engine(api, namespace, "drift").metadata.uid

    apps.delete_namespaced_deployment("drift-engine", namespace)
    restored = wait_for(
        lambda: _other_deployment(api, namespace, "drift-engine", before),
        30,
        "the Deployment to be recreated",
    )
    assert restored.spec.replicas == 1

    body: Any = {"spec": {"replicas": 4}}
    apps.patch_namespaced_deployment("drift-engine", namespace, body)
    wait_for(lambda: engine(api, namespace, "drift").spec.replicas == 1, 30, "replicas back at 1")

    k8s.CoreV1Api(api).delete_namespaced_service("drift", namespace)
    wait_for(
        lambda: _exists(lambda: k8s.CoreV1Api(api).read_namespaced_service("drift", namespace)),
        30,
        "the Service back",
    )
    ready_with(md, namespace, "drift", "1/1")
    events = (
        k8s.CoreV1Api(api)
        .list_namespaced_event(
            namespace, field_selector="involvedObject.name=drift,reason=DriftRepaired"
        )
        .items
    )
    assert any(".spec.replicas" in e.message for e in events)


def _other_deployment(api: k8s.ApiClient, namespace: str, name: str, uid: str) -> Any:
    try:
        found = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found if found.metadata.uid != uid and not found.metadata.deletion_timestamp else None


def _exists(read: Any) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_deleting_the_model_deployment_removes_every_child_then_the_finalizer(
    operator: Any, model_store: str, namespace: str, api: k8s.ApiClient, md: Md
) -> None:
    md.create(model_deployment("doomed", namespace))
    ready_with(md, namespace, "doomed", "1/1")
    assert "sovereign.dev/finalizer" in md.get(namespace, "doomed")["metadata"]["finalizers"]
    k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
        "sovereign.dev", "v1alpha1", namespace, "modeldeployments", "doomed"
    )
    wait_for(
        lambda: not _exists(lambda: md.get(namespace, "doomed")), 60, "the ModelDeployment to go"
    )
    assert {kind: items for kind, items in md.children(namespace, "doomed").items() if items} == {}
    wait_for(lambda: not md.engine_pods(namespace, "doomed"), 30, "the engine pods to go")
