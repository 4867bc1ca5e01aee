"""Validation errors become field problems with camelCase paths."""

from __future__ import annotations

import pytest

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import InvalidSpec, parse

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "0" * 64


def test_every_problem_is_listed_with_its_path() -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse(
            ModelDeploymentSpec,
            {
                "model": {"source": "pvc://store/../x", "digest": "md5:1"},
                "resources": {"gpus": 0},
                "engine": {"maxModelLen": 1, "extraArg": []},
            },
            prefix="spec",
        )
    paths = {p.path for p in caught.value.problems}
    assert {
        "spec.model.source",
        "spec.model.digest",
        "spec.resources.gpus",
        "spec.engine.maxModelLen",
        "spec.engine.extraArg",
    } <= paths
    assert "unknown field" in str(caught.value)


def test_list_items_are_indexed() -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse(
            ModelDeploymentSpec,
            {
                "model": {"source": "pvc://s/m", "digest": DIGEST},
                "resources": {"gpus": 1},
                "placement": {"tolerations": [{"operator": "Sometimes"}]},
            },
            prefix="spec",
        )
    assert caught.value.problems[0].path == "spec.placement.tolerations[0].operator"


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        ({"operator": "Exists", "key": "k", "value": "v"}, "takes no value"),
        ({"operator": "Equal"}, "needs a key"),
        (
            {"key": "k", "tolerationSeconds": 5, "effect": "NoSchedule"},
            "only applies to effect NoExecute",
        ),
    ],
)
def test_tolerations_follow_the_core_api_rules(toleration: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse(
            ModelDeploymentSpec,
            {
                "model": {"source": "pvc://s/m", "digest": DIGEST},
                "resources": {"gpus": 1},
                "placement": {"tolerations": [toleration]},
            },
        )


def test_an_empty_ingress_source_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="admits nobody"):
        parse(
            ModelDeploymentSpec,
            {
                "model": {"source": "pvc://s/m", "digest": DIGEST},
                "resources": {"gpus": 1},
                "network": {"ingress": [{}]},
            },
        )
