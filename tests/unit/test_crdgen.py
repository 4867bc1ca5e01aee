"""The generated CRDs are structural, carry the CEL rules, and match what is committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.commands.crds import rendered_crds
from sovereign_operator.crdgen import model_deployment_crd, model_policy_crd

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
# Keywords a structural CRD schema may use (apiextensions.k8s.io/v1 JSONSchemaProps).
ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "items",
    "required",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "nullable",
    "additionalProperties",
    "default",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


def root_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("crd", [model_deployment_crd(), model_policy_crd()], ids=["md", "mpol"])
def test_schema_is_structural_and_documented(crd: dict[str, Any]) -> None:
    for path, node in walk(root_schema(crd)):
        assert set(node) <= ALLOWED_KEYS, (path, set(node) - ALLOWED_KEYS)
        if not node.get("x-kubernetes-int-or-string"):
            assert "type" in node, path
        is_field = not path.endswith(("[]", ".*"))
        if path.startswith((".spec", ".status")) and is_field:
            assert node.get("description"), f"{path} has no description"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_only_replicas_has_a_default() -> None:
    defaults = [p for p, node in walk(root_schema(model_deployment_crd())) if "default" in node]
    assert defaults == [".spec.replicas"]


def test_scale_subresource_and_columns() -> None:
    version = model_deployment_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:7] == ["Model", "GPUs", "TPxPP", "Ready", "Phase", "Policy", "Age"]
    assert model_deployment_crd()["spec"]["names"]["shortNames"] == ["md"]
    assert model_policy_crd()["spec"]["scope"] == "Cluster"


def test_cel_rules_are_present() -> None:
    rules = [
        rule["rule"]
        for _, node in walk(root_schema(model_deployment_crd()))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert "self.minReplicas <= self.maxReplicas" in rules
    assert any("parallelism.tensor * self.parallelism.pipeline" in r for r in rules)
    assert any("size(self.metadata.name) <= 40" in r for r in rules)


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    status = root_schema(model_deployment_crd())["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert status["properties"]["selector"]["type"] == "string"


def test_quantities_are_int_or_string() -> None:
    cpu = root_schema(model_deployment_crd())["properties"]["spec"]["properties"]["resources"][
        "properties"
    ]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True
    assert "type" not in cpu


def test_committed_crds_match_the_models() -> None:
    for name, text in rendered_crds().items():
        assert (REPO / "crds" / name).read_text() == text, f"run `sovereign crds`: {name} is stale"
