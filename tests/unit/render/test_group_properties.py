"""Properties of every valid multi-node spec's children: the Kubernetes API would accept them,
every group pod meets the `restricted` profile, and each group is wired to itself only."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render import Owner, RenderOptions, render_children
from sovereign_operator.render.group_names import GROUP_LABEL, MAX_GROUP_NAME
from sovereign_worker.engine_args import build_vllm_flags
from tests.unit.render.k8s_schema import schema_errors
from tests.unit.render.pss import restricted_violations
from tests.unit.render.strategies import multi_node_plans

pytestmark = pytest.mark.unit

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Each example renders up to 5 + 3 x 4 objects; 25 examples cover both backends, layouts
# and the optional sections while keeping the tier quick on two cores.
PROPERTY = settings(deadline=None, max_examples=25)
UID = "6f1c1f3e-0d7a-4d0e-8f3c-2a1b0c9d8e7f"


def render(plan: ServingPlan) -> list[dict[str, Any]]:
    return render_children(plan, RenderOptions(), Owner.model_deployment(plan.name, UID))


@PROPERTY
@given(multi_node_plans())
def test_group_children_validate_and_meet_restricted(plan: ServingPlan) -> None:
    assert plan.topology == "multi-node"
    for child in render(plan):
        assert schema_errors(child) == []
        if child["kind"] == "StatefulSet":
            assert restricted_violations(child["spec"]["template"]) == []


@PROPERTY
@given(multi_node_plans())
def test_each_group_is_wired_to_itself(plan: ServingPlan) -> None:
    children = render(plan)
    statefulsets = [c for c in children if c["kind"] == "StatefulSet"]
    assert len(statefulsets) == plan.replicas
    by_name: dict[str, list[str]] = {}
    for child in children:
        by_name.setdefault(child["metadata"]["name"], []).append(child["kind"])
    for statefulset in statefulsets:
        group = statefulset["metadata"]["name"]
        assert len(group) <= MAX_GROUP_NAME
        assert DNS_1035.match(group)
        assert sorted(by_name[group]) == ["NetworkPolicy", "Service", "StatefulSet"]
        spec = statefulset["spec"]
        assert spec["replicas"] == plan.pods_per_replica
        pod_labels = spec["template"]["metadata"]["labels"]
        assert pod_labels[GROUP_LABEL] == group
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        engine = spec["template"]["spec"]["containers"][0]
        gpus = str(plan.pod.gpus)
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert plan.pod.gpus * plan.pods_per_replica == plan.tensor * plan.pipeline
        args = engine["args"]
        assert args[args.index("--") + 1 :] == build_vllm_flags(plan.engine)
        assert args[args.index("--backend") + 1] == plan.spec.multi_node.backend.value
