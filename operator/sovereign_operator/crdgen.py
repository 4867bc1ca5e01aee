"""Generate the CRD manifests from the pydantic models.

pydantic's JSON Schema is not a structural CRD schema, so it is rewritten here: every
`$ref` inlined, `anyOf [X, null]` turned into `nullable`, quantities made int-or-string,
numeric exclusive bounds turned into OpenAPI v3.0 booleans, titles and defaults dropped
(the apiserver would write defaults into the user's spec and GitOps tools would see
drift; only `spec.replicas` keeps one, for the scale subresource), and conditions made a
list-map keyed by `type`. Pure: no I/O beyond returning dicts.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from pydantic import BaseModel

from sovereign_operator.api.base import GROUP, MAX_NAME_LENGTH, NAME_PATTERN, VERSION
from sovereign_operator.api.model_deployment import ModelDeploymentSpec, ModelDeploymentStatus
from sovereign_operator.api.model_policy import ModelPolicySpec, ModelPolicyStatus

Schema = dict[str, Any]
_DROPPED_KEYS: Final = frozenset({"title", "default", "propertyNames", "additionalProperties"})
_KEPT_DEFAULT_PATHS: Final = frozenset({("spec", "replicas")})


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline a `$ref` (and a lone `allOf` wrapper), keeping the field's own description."""
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema["$ref"].rsplit("/", 1)[-1]])
        overrides = {k: v for k, v in schema.items() if k != "$ref"}
        return _resolve(target | overrides, defs)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        inner = _resolve(schema["allOf"][0], defs)
        return inner | {k: v for k, v in schema.items() if k != "allOf"}
    return schema


def _nullable(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """`anyOf [X, {type: null}]` -> X with nullable: true."""
    options = schema.get("anyOf")
    if not options:
        return schema
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) != 1 or len(non_null) == len(options):
        raise ValueError(f"cannot express anyOf {options!r} in a structural schema")
    merged = _resolve(non_null[0], defs) | {k: v for k, v in schema.items() if k != "anyOf"}
    return merged | {"nullable": True}


def _bounds(schema: Schema) -> Schema:
    """JSON Schema 2020 numeric exclusive bounds -> OpenAPI v3.0 boolean form."""
    out = dict(schema)
    if "exclusiveMinimum" in out and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    return out


def structural(schema: Schema, defs: dict[str, Schema], path: tuple[str, ...] = ()) -> Schema:
    """Rewrite one pydantic schema node (recursively) into a structural CRD schema node."""
    node = _bounds(_nullable(_resolve(schema, defs), defs))
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("x-kubernetes-int-or-string"):
        return {
            k: v
            for k, v in node.items()
            if k in {"description", "nullable", "x-kubernetes-int-or-string"}
        }
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS and not (key == "default" and path in _KEPT_DEFAULT_PATHS):
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs, (*path, name)) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs, (*path, "[]"))
        else:
            out[key] = value
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(node["additionalProperties"], defs, (*path, "*"))
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out or "additionalProperties" in out:
        out["type"] = "object"
    if path and path[-1] == "conditions":
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = ["type"]
    return _readable_order(out)


def _readable_order(node: Schema) -> Schema:
    """type and description first, so the YAML reads like `kubectl explain`."""
    first = {k: node[k] for k in ("type", "description") if k in node}
    return first | {k: v for k, v in node.items() if k not in first}


def model_schema(model: type[BaseModel], root: str) -> Schema:
    """The structural schema of one pydantic model, as the `root` property of the CRD."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs, (root,))


def _crd(
    *,
    kind: str,
    plural: str,
    short_name: str,
    scope: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    printer_columns: list[Schema],
    subresources: Schema,
    description: str,
) -> Schema:
    root: Schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The API version."},
            "kind": {"type": "string", "description": "The kind."},
            "metadata": {"type": "object"},
            "spec": model_schema(spec, "spec"),
            "status": model_schema(status, "status"),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters so "
                "derived child names fit Kubernetes limits",
            },
            {
                "rule": f"self.metadata.name.matches('{NAME_PATTERN}')",
                "message": "metadata.name must start with a letter and hold only lowercase "
                "letters, digits and '-' (it names a Service, a DNS-1035 label)",
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "sovereign-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["sovereign"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": subresources,
                    "additionalPrinterColumns": printer_columns,
                }
            ],
        },
    }


def _column(name: str, json_path: str, type_: str = "string", priority: int = 0) -> Schema:
    column: Schema = {"name": name, "type": type_, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


def model_deployment_crd() -> Schema:
    """The ModelDeployment CRD."""
    return _crd(
        kind="ModelDeployment",
        plural="modeldeployments",
        short_name="md",
        scope="Namespaced",
        spec=ModelDeploymentSpec,
        status=ModelDeploymentStatus,
        description="A served open-weight model: source, digest, GPUs and scaling.",
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        printer_columns=[
            _column("Model", ".spec.model.source"),
            _column("GPUs", ".spec.resources.gpus", "integer"),
            _column("TPxPP", ".status.plan.parallelism"),
            _column("Ready", ".status.readySummary"),
            _column("Phase", ".status.phase"),
            # Compliant, NoPolicy or PolicyViolation: a held rollout shows at a glance.
            _column("Policy", '.status.conditions[?(@.type=="PolicyCompliant")].reason'),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Endpoint", ".status.endpoint", priority=1),
        ],
    )


def model_policy_crd() -> Schema:
    """The ModelPolicy CRD."""
    return _crd(
        kind="ModelPolicy",
        plural="modelpolicies",
        short_name="mpol",
        scope="Cluster",
        spec=ModelPolicySpec,
        status=ModelPolicyStatus,
        description="Cluster-wide sovereignty rules for the namespaces the policy selects.",
        subresources={"status": {}},
        printer_columns=[
            _column("Namespaces", ".status.selectedNamespaces", "integer"),
            _column("NonCompliant", ".status.nonCompliantDeployments", "integer"),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
    )


def all_crds() -> dict[str, Schema]:
    """File name -> CRD manifest, for every CRD the operator owns."""
    return {
        f"{GROUP}_modeldeployments.yaml": model_deployment_crd(),
        f"{GROUP}_modelpolicies.yaml": model_policy_crd(),
    }
