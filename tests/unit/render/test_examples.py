"""The shipped examples render to children the API accepts, with restricted engine pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.api.model_deployment import ModelDeployment
from sovereign_operator.planning import ClusterFacts, ServingPlan, plan
from sovereign_operator.render import Owner, RenderOptions, render_children
from tests.unit.render.k8s_schema import validate_slowly
from tests.unit.render.pss import restricted_violations

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).parents[3] / "examples"
FACTS = ClusterFacts(default_gpus_per_node=8)


def deployments() -> list[Path]:
    return sorted(
        path
        for path in EXAMPLES.glob("*.yaml")
        if any(
            doc and doc.get("kind") == "ModelDeployment"
            for doc in yaml.safe_load_all(path.read_text())
        )
    )


def example_plan(path: Path) -> ServingPlan:
    resource = ModelDeployment.model_validate(yaml.safe_load(path.read_text()))
    meta = resource.metadata
    return plan(meta["name"], meta["namespace"], resource.spec, FACTS)


def render(serving_plan: ServingPlan) -> list[dict[str, Any]]:
    return render_children(serving_plan, RenderOptions(), Owner.model_deployment(serving_plan.name))


@pytest.mark.parametrize("path", deployments(), ids=lambda p: p.stem)
def test_example_renders_valid_restricted_children(path: Path) -> None:
    serving_plan = example_plan(path)
    workloads = 0
    for child in render(serving_plan):
        validate_slowly(child)
        if child["kind"] in ("Deployment", "StatefulSet"):
            workloads += 1
            assert restricted_violations(child["spec"]["template"]) == []
    assert workloads == (serving_plan.replicas if serving_plan.topology == "multi-node" else 1)


def test_the_8b_example_asks_for_one_gpu_and_tensor_parallel_1() -> None:
    children = render(example_plan(EXAMPLES / "llama3-8b-single-gpu.yaml"))
    deployment = next(c for c in children if c["kind"] == "Deployment")
    engine = deployment["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = engine["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "1"


# One example per model family users ask for (issue 10): file stem -> (engine kind, task).
FAMILIES = {
    "llama3-8b-single-gpu": ("vllm", "text-generation"),
    "mistral-7b": ("vllm", "text-generation"),
    "mixtral-8x7b": ("vllm", "text-generation"),
    "falcon-7b": ("vllm", "text-generation"),
    "whisper-large-v3": ("vllm", "speech-to-text"),
    "stable-diffusion": ("diffusers", "text-to-image"),
}


@pytest.mark.parametrize(("stem", "kind", "task"), [(s, *f) for s, f in FAMILIES.items()])
def test_each_family_has_an_example_served_by_its_engine(stem: str, kind: str, task: str) -> None:
    serving_plan = example_plan(EXAMPLES / f"{stem}.yaml")
    assert (serving_plan.spec.engine.kind.value, serving_plan.spec.model.task.value) == (kind, task)
    deployment = next(c for c in render(serving_plan) if c["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    engine_args = ["--engine", "diffusers"] if kind == "diffusers" else []
    assert args[: 1 + len(engine_args)] == ["serve", *engine_args]


def test_the_mixtral_example_spreads_experts_over_tensor_parallel_2() -> None:
    children = render(example_plan(EXAMPLES / "mixtral-8x7b.yaml"))
    deployment = next(c for c in children if c["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert "--enable-expert-parallel" in args
