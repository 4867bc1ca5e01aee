"""Kubernetes OpenAPI validation of rendered manifests, with the schemas loaded once.

`kubernetes_validate.validate` re-reads its 1.4 MB schema files on every call (~15 ms per
object), too slow for property tests that render hundreds of objects. This builds the same
validator from the same files `kubernetes-validate` ships (its strict variant, which
refuses unknown fields) and keeps it per kind.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Final

import jsonschema
import kubernetes_validate
import referencing
from kubernetes_validate.utils import schema_contents

# A version the package ships schemas for; the cluster tooling in e2e/ targets 1.3x too.
KUBERNETES_VERSION: Final = "1.33.0"
_SCHEMA_DIR: Final = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"


@cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    # Same file naming as kubernetes_validate.validate: apps/v1 -> apps-v1, v1 -> v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = schema_contents(
        f"{_SCHEMA_DIR}/{kind.lower()}-{group_version}.json", KUBERNETES_VERSION
    )
    definitions = schema_contents(f"{_SCHEMA_DIR}/_definitions.json", KUBERNETES_VERSION)
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (resource.id(), resource)
            for resource in (
                referencing.Resource.from_contents(schema),
                referencing.Resource.from_contents(definitions),
            )
            if resource.id()
        ]
    )
    validator_class = jsonschema.validators.Draft202012Validator
    return validator_class(schema, registry=registry)


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation of the manifest, as `path: message`; empty when valid."""
    validator = _validator(manifest["kind"], manifest["apiVersion"])
    return [
        f"{manifest['kind']} {'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


def validate_slowly(manifest: dict[str, Any]) -> None:
    """kubernetes-validate's own entry point, used by table tests to keep the fast path honest."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
