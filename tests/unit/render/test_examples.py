"""The shipped examples render to children the API accepts (or are refused as not yet renderable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.api.model_deployment import ModelDeployment
from sovereign_operator.planning import ClusterFacts, ServingPlan, plan
from sovereign_operator.render import Owner, RenderOptions, UnsupportedPlanError, render_children
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
    if serving_plan.topology == "multi-node":
        with pytest.raises(UnsupportedPlanError, match="multi-node"):
            render(serving_plan)
        return
    for child in render(serving_plan):
        validate_slowly(child)
        if child["kind"] == "Deployment":
            assert restricted_violations(child["spec"]["template"]) == []


def test_the_8b_example_asks_for_one_gpu_and_tensor_parallel_1() -> None:
    children = render(example_plan(EXAMPLES / "llama3-8b-single-gpu.yaml"))
    deployment = next(c for c in children if c["kind"] == "Deployment")
    engine = deployment["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = engine["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
