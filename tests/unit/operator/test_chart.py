"""The chart stays in step with the code: CRDs, RBAC rules and values schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # comes with kubernetes-validate (dev extra)
import pytest
import yaml

from sovereign_operator.observe import CHILD_KINDS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "sovereign-operator"


def test_the_charts_crds_are_the_generated_ones() -> None:
    generated = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "crds-src").glob("*.yaml")}
    assert copied == generated, "run scripts/sync-chart-crds.sh after `sovereign crds`"


def cluster_role_rules() -> list[dict[str, Any]]:
    text = (CHART / "templates" / "rbac.yaml").read_text()
    block = text[text.index("rules:") : text.index("---")]
    rules: list[dict[str, Any]] = yaml.safe_load(block)["rules"]
    return rules


def grants(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_cluster_role_has_no_wildcards() -> None:
    for rule in cluster_role_rules():
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule


def test_every_child_kind_can_be_applied_watched_and_pruned() -> None:
    rules = cluster_role_rules()
    for kind in CHILD_KINDS:
        assert grants(rules, kind.group, kind.plural) == {
            "list",
            "watch",
            "create",
            "patch",
            "delete",
        }, kind


def test_the_operator_reads_pods_and_nodes_and_never_writes_them() -> None:
    rules = cluster_role_rules()
    assert grants(rules, "", "pods") == grants(rules, "", "nodes") == {"list", "watch"}
    assert grants(rules, "", "secrets") == set()


def test_values_match_their_schema_and_the_schema_rejects_typos() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "operator": {**values["operator"], "replicas": 2}}, schema)
