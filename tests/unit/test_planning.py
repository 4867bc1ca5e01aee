"""The serving planner: single-node and multi-node layouts, and refusals that say what to change."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import InvalidSpec
from sovereign_operator.planning import ClusterFacts, plan

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
H100 = "NVIDIA-H100-80GB-HBM3"
CLUSTER = ClusterFacts(gpus_per_node_by_type={H100: 8, "NVIDIA-L40S": 4})


def spec(gpus: int, **overrides: Any) -> ModelDeploymentSpec:
    data: dict[str, Any] = {
        "model": {"source": "pvc://models/llama", "digest": DIGEST},
        "resources": {"gpus": gpus, "gpuType": H100},
    }
    for key, value in overrides.items():
        data[key] = data.get(key, {}) | value if isinstance(value, dict) else value
    return ModelDeploymentSpec.model_validate(data)


@pytest.mark.parametrize(
    ("gpus", "parallelism", "topology", "tensor", "pipeline", "pods", "gpus_per_pod"),
    [
        (1, None, "single-node", 1, 1, 1, 1),
        (4, None, "single-node", 4, 1, 1, 4),
        (8, None, "single-node", 8, 1, 1, 8),
        (8, {"tensor": 4, "pipeline": 2}, "single-node", 4, 2, 1, 8),
        (16, None, "multi-node", 8, 2, 2, 8),
        (32, None, "multi-node", 8, 4, 4, 8),
        (16, {"tensor": 4, "pipeline": 4}, "multi-node", 4, 4, 2, 8),
    ],
)
def test_layouts(
    gpus: int,
    parallelism: dict[str, int] | None,
    topology: str,
    tensor: int,
    pipeline: int,
    pods: int,
    gpus_per_pod: int,
) -> None:
    extra = {"parallelism": parallelism} if parallelism else {}
    result = plan("m", "ns", spec(gpus, **extra), CLUSTER)
    assert result.topology == topology
    assert (result.tensor, result.pipeline) == (tensor, pipeline)
    assert result.pods_per_replica == pods
    assert result.pod.gpus == gpus_per_pod
    assert result.engine.tensor_parallel_size == tensor
    assert result.engine.pipeline_parallel_size == pipeline
    assert result.parallelism == f"{tensor}x{pipeline}"


@pytest.mark.parametrize(
    ("overrides", "facts", "path", "message"),
    [
        ({"resources": {"gpus": 12}}, CLUSTER, "spec.resources.gpus", "use 8 or 16"),
        (
            {"resources": {"gpus": 16, "gpuType": "NVIDIA-A100"}},
            CLUSTER,
            "spec.resources.gpuType",
            "no node offers NVIDIA-A100",
        ),
        (
            {"resources": {"gpus": 8, "gpuType": "NVIDIA-L40S", "gpusPerNode": 8}},
            CLUSTER,
            "spec.resources.gpusPerNode",
            "offer 4",
        ),
        (
            {"resources": {"gpus": 16}, "parallelism": {"tensor": 16, "pipeline": 1}},
            CLUSTER,
            "spec.parallelism.tensor",
            "inside a node",
        ),
        (
            {"resources": {"gpus": 3}},
            ClusterFacts(model_attention_heads=64),
            "spec.resources.gpus",
            "attention heads",
        ),
        ({"engine": {"expertParallel": True}}, CLUSTER, "spec.engine.expertParallel", "at least 2"),
        (
            {"engine": {"extraArgs": ["--trust-remote-code"]}},
            CLUSTER,
            "spec.engine.extraArgs[0]",
            "allowTrustRemoteCode",
        ),
        (
            {"engine": {"kind": "diffusers"}},
            CLUSTER,
            "spec.engine.kind",
            "cannot serve task text-generation",
        ),
        (
            {"model": {"source": "hf://org/name@abc", "digest": DIGEST}},
            CLUSTER,
            "spec.model.source",
            "cannot be fetched",
        ),
        (
            {"model": {"source": "pvc://m/x", "digest": DIGEST, "task": "text-to-image"}},
            CLUSTER,
            "spec.engine.kind",
            "use engine.kind diffusers",
        ),
    ],
)
def test_refusals_name_the_field_and_the_fix(
    overrides: dict[str, Any], facts: ClusterFacts, path: str, message: str
) -> None:
    gpus = overrides.get("resources", {}).get("gpus", 1)
    with pytest.raises(InvalidSpec) as caught:
        plan("m", "ns", spec(gpus, **overrides), facts)
    assert any(p.path == path and message in p.message for p in caught.value.problems), caught.value


def test_trust_remote_code_allowed_by_policy_is_kept() -> None:
    facts = ClusterFacts(gpus_per_node_by_type={H100: 8}, allow_trust_remote_code=True)
    result = plan("m", "ns", spec(1, engine={"extraArgs": ["--trust-remote-code"]}), facts)
    assert result.engine.trust_remote_code
    assert "--trust-remote-code" not in result.engine.extra_args


def test_name_longer_than_40_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="at most 40"):
        plan("x" * 41, "ns", spec(1), CLUSTER)


def test_gpus_per_node_falls_back_to_default_without_cluster_facts() -> None:
    bare = ModelDeploymentSpec.model_validate(
        {"model": {"source": "pvc://m/x", "digest": DIGEST}, "resources": {"gpus": 16}}
    )
    result = plan("m", "ns", bare, ClusterFacts(default_gpus_per_node=8))
    assert (result.tensor, result.pipeline, result.pods_per_replica) == (8, 2, 2)
    result = plan("m", "ns", bare, ClusterFacts())
    assert result.topology == "single-node"


def test_defaults_scale_with_gpus_and_image_falls_back() -> None:
    small = plan("m", "ns", spec(1), CLUSTER)
    big = plan("m", "ns", spec(8), CLUSTER)
    assert small.pod.cpu == "4"
    assert big.pod.cpu == "18"
    assert big.image == CLUSTER.default_image
    custom = plan("m", "ns", spec(1, resources={"cpu": "6", "memory": "40Gi"}), CLUSTER)
    assert (custom.pod.cpu, custom.pod.memory) == ("6", "40Gi")


def test_template_hash_ignores_replicas_but_not_the_model() -> None:
    base = plan("m", "ns", spec(1), CLUSTER).template_hash
    assert plan("m", "ns", spec(1, replicas=3), CLUSTER).template_hash == base
    other = spec(1, model={"source": "pvc://models/other", "digest": DIGEST})
    assert plan("m", "ns", other, CLUSTER).template_hash != base


def test_name_must_be_a_dns_1035_label() -> None:
    with pytest.raises(InvalidSpec, match="must start with a letter"):
        plan("8b-model", "ns", spec(1), CLUSTER)


def test_s3_source_with_model_store_egress_needs_its_address_blocks() -> None:
    s3 = {"source": "s3://models/llama", "digest": DIGEST, "s3": {"endpoint": "https://minio:9000"}}
    with pytest.raises(InvalidSpec, match="modelStoreCidrs"):
        plan("m", "ns", spec(1, model=s3), CLUSTER)
    fine = spec(1, model=s3, network={"modelStoreCidrs": ["10.0.0.0/24"]})
    assert plan("m", "ns", fine, CLUSTER).source.authority == "models"
