"""Each single-node example, applied with kubectl as a user would, becomes Ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.integration.operator.conftest import Md, load_example

pytestmark = pytest.mark.integration

SINGLE_NODE = {
    # example file: (name, GPUs per pod, GPU product, TPxPP)
    "llama3-8b-single-gpu.yaml": ("llama3-8b", 1, "NVIDIA-L40S", "1x1"),
    "llama3-70b-tp8.yaml": ("llama3-70b", 8, "NVIDIA-H100-80GB-HBM3", "8x1"),
}


@pytest.mark.parametrize("example", sorted(SINGLE_NODE))
def test_example_becomes_ready_on_fake_gpu_nodes(
    example: str,
    operator: Any,
    model_store: str,
    namespace: str,
    kubectl: Any,
    api: k8s.ApiClient,
    md: Md,
    tmp_path: Path,
) -> None:
    name, gpus, product, parallelism = SINGLE_NODE[example]
    manifest = tmp_path / example
    manifest.write_text(yaml.safe_dump(load_example(example, namespace)))
    kubectl("apply", "-f", str(manifest))

    # The user's way of waiting, and the printer columns they see.
    kubectl("wait", "--for=condition=Ready", f"md/{name}", "-n", namespace, "--timeout=90s")
    row = kubectl("get", "md", name, "-n", namespace, "--no-headers").stdout.split()
    assert row[0] == name
    assert row[2:7] == [str(gpus), parallelism, "1/1", "Ready", "NoPolicy"]

    children = md.children(namespace, name)
    assert {kind: len(items) for kind, items in children.items()} == {
        "ServiceAccount": 1,
        "Service": 1,
        "NetworkPolicy": 1,
        "PodDisruptionBudget": 1,
        "Deployment": 1,
    }
    owner = children["Deployment"][0].metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ModelDeployment", name, True)

    # Admitted under PodSecurity `restricted` (the namespace enforces it) and placed on a
    # node of the requested GPU product with the whole request.
    labels = k8s.CoreV1Api(api).read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    (pod,) = md.engine_pods(namespace, name)
    node = k8s.CoreV1Api(api).read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == product
    engine = next(c for c in pod.spec.containers if c.name == "engine")
    assert engine.resources.limits["nvidia.com/gpu"] == str(gpus)
    assert engine.args[engine.args.index("--tensor-parallel-size") + 1] == str(gpus)

    # Pods and Deployments arrive on separate watch streams: the pod's verified model may be
    # reported a moment after the Deployment made the deployment Ready.
    md.wait_condition(namespace, name, "ModelVerified")
    status = md.get(namespace, name)["status"]
    assert status["observedGeneration"] == md.get(namespace, name)["metadata"]["generation"]
    assert status["endpoint"] == f"http://{name}.{namespace}.svc:8000/v1"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Scheduled"]["status"] == "True"
    assert conditions["ModelVerified"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "False"
    assert conditions["Progressing"]["status"] == "False"
