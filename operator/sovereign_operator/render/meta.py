"""Names, labels, owner references and the spec-hash annotation shared by every child.

Every child of a ModelDeployment is found again by these labels (reconcile prunes by them)
and compared by the spec-hash annotation (a resync that changes nothing writes nothing).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Final

import rfc8785

from sovereign_operator.api.base import API_VERSION

Manifest = dict[str, Any]
"""A JSON-ready Kubernetes object."""

MANAGED_BY: Final = "sovereign-operator"
ENGINE_APP: Final = "sovereign-engine"
ENGINE_ROLE: Final = "engine"
GATEWAY_ROLE: Final = "gateway"

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_DEPLOYMENT: Final = "sovereign.dev/deployment"
LABEL_ROLE: Final = "sovereign.dev/role"

SPEC_HASH_ANNOTATION: Final = "sovereign.dev/spec-hash"
TEMPLATE_HASH_ANNOTATION: Final = "sovereign.dev/template-hash"


def engine_name(name: str) -> str:
    """Name of the engine Deployment, NetworkPolicy, PodDisruptionBudget and ServiceAccount."""
    return f"{name}-engine"


def service_name(name: str) -> str:
    """The Service keeps the plain name so clients call http://NAME.NAMESPACE:8000."""
    return name


def selector_labels(name: str, role: str = ENGINE_ROLE) -> dict[str, str]:
    """The smallest label set that identifies one deployment's pods of one role.

    A Deployment's selector is immutable, so it holds only labels that never change for
    the life of the ModelDeployment (no versions, no hashes).
    """
    return {LABEL_DEPLOYMENT: name, LABEL_ROLE: role}


def labels(name: str, role: str = ENGINE_ROLE) -> dict[str, str]:
    """Recommended app.kubernetes.io labels plus our selector labels."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_APP_NAME: ENGINE_APP,
        LABEL_INSTANCE: name,
        **selector_labels(name, role),
    }


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns the children; uid is None when rendering without a cluster."""

    api_version: str
    kind: str
    name: str
    uid: str | None = None

    @classmethod
    def model_deployment(cls, name: str, uid: str | None = None) -> Owner:
        return cls(api_version=API_VERSION, kind="ModelDeployment", name=name, uid=uid)


def owner_references(owner: Owner) -> list[dict[str, Any]]:
    """A controller reference, so garbage collection deletes children with their owner.

    Kubernetes refuses an ownerReference without a uid, so `sovereign render` (no cluster,
    no uid) leaves the field out rather than inventing one.
    """
    if owner.uid is None:
        return []
    return [
        {
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(
    name: str, namespace: str, owner: Owner, object_labels: dict[str, str]
) -> dict[str, Any]:
    """metadata for a namespaced child living next to its owner."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": object_labels}
    refs = owner_references(owner)
    if refs:
        meta["ownerReferences"] = refs
    return meta


def spec_hash(manifest: Manifest) -> str:
    """sha256 of the manifest's RFC 8785 canonical JSON, leaving out the hash annotation itself.

    Canonical JSON makes the hash independent of key order and number formatting, so the
    same rendering always gives the same hash on any machine and Python version.
    """
    unhashed = copy.deepcopy(manifest)
    annotations = unhashed.get("metadata", {}).get("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    if not annotations:
        unhashed.get("metadata", {}).pop("annotations", None)
    return hashlib.sha256(rfc8785.dumps(unhashed)).hexdigest()


def with_spec_hash(manifest: Manifest) -> Manifest:
    """A copy of the manifest carrying its own spec-hash annotation."""
    stamped = copy.deepcopy(manifest)
    digest = spec_hash(stamped)
    stamped["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest
    return stamped
