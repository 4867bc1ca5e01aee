"""Properties of every valid single-node spec's children: the Kubernetes API would accept them,
their pods meet the `restricted` Pod Security Standard, and they say what the plan says."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render import SPEC_HASH_ANNOTATION, Owner, RenderOptions, render_children
from sovereign_operator.render.meta import spec_hash
from sovereign_worker.engine_args import build_vllm_flags
from sovereign_worker.sovereignty import sovereignty_env
from tests.unit.render.k8s_schema import schema_errors
from tests.unit.render.pss import restricted_violations
from tests.unit.render.strategies import single_node_plans

pytestmark = pytest.mark.unit

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Each example renders and validates five objects; 60 of them cover the strategies' branches
# (sources, caches, placement, network modes) while keeping the suite quick on two cores.
PROPERTY = settings(deadline=None, max_examples=60)
UID = "6f1c1f3e-0d7a-4d0e-8f3c-2a1b0c9d8e7f"


def render(plan: ServingPlan, uid: str | None = UID) -> list[dict[str, object]]:
    return render_children(plan, RenderOptions(), Owner.model_deployment(plan.name, uid))


@PROPERTY
@given(single_node_plans())
def test_children_validate_against_the_kubernetes_schemas(plan: ServingPlan) -> None:
    for child in render(plan):
        assert schema_errors(child) == []
    for child in render(plan, uid=None):
        assert schema_errors(child) == []


@PROPERTY
@given(single_node_plans())
def test_engine_pods_meet_the_restricted_profile(plan: ServingPlan) -> None:
    deployment = next(c for c in render(plan) if c["kind"] == "Deployment")
    assert restricted_violations(deployment["spec"]["template"]) == []  # type: ignore[index]


@PROPERTY
@given(single_node_plans())
def test_children_say_what_the_plan_says(plan: ServingPlan) -> None:
    rendered = render(plan)
    assert rendered == render(plan)  # pure: same plan, same bytes
    json.dumps(rendered)  # plain JSON data, nothing else
    by_kind = {c["kind"]: c for c in rendered}
    for child in rendered:
        meta = child["metadata"]
        assert meta["annotations"][SPEC_HASH_ANNOTATION] == spec_hash(child)  # type: ignore[index]
        assert len(meta["name"]) <= 63  # type: ignore[index]
    assert DNS_1035.match(by_kind["Service"]["metadata"]["name"])  # type: ignore[index]

    pod = by_kind["Deployment"]["spec"]["template"]["spec"]  # type: ignore[index]
    engine = pod["containers"][0]
    gpus = str(plan.tensor * plan.pipeline)
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == gpus
    separator = engine["args"].index("--")
    assert engine["args"][separator + 1 :] == build_vllm_flags(plan.engine)

    env = [(e["name"], e.get("value")) for e in engine["env"]]
    assert len({name for name, _ in env}) == len(env)
    assert sovereignty_env().items() <= dict(env).items()
