"""Small builders shared by the render tests: a spec from overrides, its plan and children."""

from __future__ import annotations

from typing import Any, Final

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.planning import ClusterFacts, ServingPlan, plan
from sovereign_operator.render import Manifest, Owner, RenderOptions, render_children

DIGEST: Final = "sha256:" + "ab" * 32
H100: Final = "NVIDIA-H100-80GB-HBM3"
FACTS: Final = ClusterFacts(gpus_per_node_by_type={H100: 8, "NVIDIA-L40S": 4})
UID: Final = "0b9f6a2e-5c1d-4e8f-9a7b-3c2d1e0f9a8b"


def spec(**overrides: Any) -> ModelDeploymentSpec:
    """An 8B model on one H100 from a PVC, with top-level sections merged from `overrides`."""
    data: dict[str, Any] = {
        "model": {"source": "pvc://models/meta-llama/Llama-3.1-8B", "digest": DIGEST},
        "resources": {"gpus": 1, "gpuType": H100},
    }
    for key, value in overrides.items():
        data[key] = data.get(key, {}) | value if isinstance(value, dict) else value
    return ModelDeploymentSpec.model_validate(data)


def make_plan(name: str = "llama", **overrides: Any) -> ServingPlan:
    return plan(name, "clinical-ai", spec(**overrides), FACTS)


def children(
    serving_plan: ServingPlan, uid: str | None = UID, options: RenderOptions | None = None
) -> dict[str, Manifest]:
    """The rendered children by kind."""
    owner = Owner.model_deployment(serving_plan.name, uid)
    rendered = render_children(serving_plan, options or RenderOptions(), owner)
    return {child["kind"]: child for child in rendered}


def pod_spec(serving_plan: ServingPlan) -> dict[str, Any]:
    spec_: dict[str, Any] = children(serving_plan)["Deployment"]["spec"]["template"]["spec"]
    return spec_


def container(serving_plan: ServingPlan, name: str = "engine") -> dict[str, Any]:
    pod = pod_spec(serving_plan)
    found: dict[str, Any] = next(
        c for c in pod["containers"] + pod["initContainers"] if c["name"] == name
    )
    return found


def env(container_: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or valueFrom) of a container's environment."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_["env"]}


def mounts(container_: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container_["volumeMounts"]}


def volumes(serving_plan: ServingPlan) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(serving_plan)["volumes"]}
