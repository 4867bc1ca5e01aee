"""Properties of the API models: valid specs round-trip, and any single bad field is named."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import InvalidSpec, parse
from tests.unit.render.strategies import single_node_specs

pytestmark = pytest.mark.unit

# (path in the wire form, a value the API must refuse there)
CORRUPTIONS: list[tuple[tuple[str, ...], Any]] = [
    (("model", "source"), "pvc://store/../../etc"),
    (("model", "source"), "ftp://mirror/model"),
    (("model", "source"), "hf://org/name"),
    (("model", "digest"), "sha256:xyz"),
    (("model", "servedName"), "bad name; rm -rf"),
    (("resources", "gpus"), 0),
    (("resources", "gpus"), -1),
    (("resources", "gpus"), 10_000),
    (("resources", "gpuType"), "not a label value!"),
    (("resources", "memory"), "lots"),
    (("resources", "cpu"), "5000"),
    (("engine", "dtype"), "int3"),
    (("engine", "maxModelLen"), 0),
    (("engine", "gpuMemoryUtilization"), 1.5),
    (("engine", "extraArgs"), ["--tensor-parallel-size", "4"]),
    (("engine", "extraArgs"), ["-tp", "4"]),
    (("engine", "extraArgs"), ["--download-dir", "/tmp"]),
    (("engine", "extraArgs"), ["--not-a-vllm-flag"]),
    (("engine", "env"), [{"name": "TRANSFORMERS_OFFLINE", "value": "0"}]),
    (("engine", "env"), [{"name": "LD_PRELOAD", "value": "/x.so"}]),
    (("engine", "unknownField"), True),
    (("replicas",), -3),
    (("placement", "nodeSelector"), {"bad key!": "x"}),
    (("network", "egress"), "everywhere"),
    (("audit", "requests"), "sometimes"),
]


def corrupted(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(spec)
    node = broken
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return broken


@settings(max_examples=40, deadline=None)
@given(spec=single_node_specs())
def test_valid_specs_round_trip_through_the_wire_form(spec: dict[str, Any]) -> None:
    parsed = ModelDeploymentSpec.model_validate(spec)
    assert ModelDeploymentSpec.model_validate(parsed.to_wire()) == parsed


@settings(max_examples=60, deadline=None)
@given(spec=single_node_specs(), corruption=st.sampled_from(CORRUPTIONS))
def test_any_single_bad_field_is_refused_and_named(
    spec: dict[str, Any], corruption: tuple[tuple[str, ...], Any]
) -> None:
    path, value = corruption
    with pytest.raises(InvalidSpec) as caught:
        parse(ModelDeploymentSpec, corrupted(spec, path, value), prefix="spec")
    wanted = "spec." + ".".join(path)
    assert any(p.path.startswith(wanted) for p in caught.value.problems), caught.value
