"""An in-memory API server for reconcile, and builders of the objects it observes.

FakeCluster applies manifests the way server-side apply does for our purposes (the stored
object is the manifest plus server-set metadata and status), counts every write, and turns
what it holds back into the snapshots the operator's indexes would hold.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sovereign_operator.hooks import DeploymentKey
from sovereign_operator.observe import (
    ChildRef,
    NodeSnapshot,
    ObservedChild,
    PodSnapshot,
    observe_child,
    observe_node,
)
from sovereign_operator.reconcile import ApiError, Observation

DIGEST: Final = "sha256:" + "ab" * 32
L40S: Final = "NVIDIA-L40S"
H100: Final = "NVIDIA-H100-80GB-HBM3"
MD_UID: Final = "5f0c9d6e-2b1a-4c3d-8e7f-6a5b4c3d2e1f"


def md_body(
    name: str = "llama",
    namespace: str = "clinical-ai",
    *,
    generation: int = 1,
    status: Mapping[str, Any] | None = None,
    **spec_overrides: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"source": "pvc://model-store/meta-llama/Llama-3.1-8B", "digest": DIGEST},
        "resources": {"gpus": 1, "gpuType": L40S},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "sovereign.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": MD_UID, "generation": generation},
        "spec": spec,
        "status": dict(status or {}),
    }


def node(name: str, product: str | None, gpus: int, **labels: str) -> NodeSnapshot:
    all_labels = {"kubernetes.io/hostname": name, **labels}
    if product:
        all_labels["nvidia.com/gpu.product"] = product
    raw = {
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)} if gpus else {},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    return observe_node(raw)


CLUSTER_NODES: Final = (
    *(node(f"h100-{i}", H100, 8) for i in range(4)),
    *(node(f"l40s-{i}", L40S, 4) for i in range(2)),
    node("cpu-0", None, 0),
)


@dataclass
class FakeCluster:
    """reconcile.ChildWriter over a dict of objects."""

    objects: dict[ChildRef, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)
    status: dict[DeploymentKey, dict[str, Any]] = field(default_factory=dict)
    refuse: dict[str, int] = field(default_factory=dict)
    """Kind -> HTTP status to refuse applies of that kind with."""
    usage: dict[str, int] = field(default_factory=dict)
    applied: list[dict[str, Any]] = field(default_factory=list)
    """Every manifest as reconcile sent it."""
    _uids: Any = field(default_factory=lambda: itertools.count(1))
    audit_ids: dict[ChildRef, str] = field(default_factory=dict)
    """Like the API server's Audit-ID header: one per write, `audit-N` for the Nth write."""

    async def apply(self, manifest: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = ChildRef.of(manifest)
        if ref.kind in self.refuse:
            raise ApiError(str(ref), self.refuse[ref.kind], "refused by the test")
        self.writes.append(("apply", str(ref)))
        self.audit_ids[ref] = f"audit-{len(self.writes)}"
        self.applied.append(copy.deepcopy(dict(manifest)))
        stored = copy.deepcopy(dict(manifest))
        old = self.objects.get(ref)
        meta = stored["metadata"]
        if old is None:
            meta["uid"] = f"uid-{next(self._uids)}"
            meta["generation"] = 1
        else:
            meta["uid"] = old["metadata"]["uid"]
            changed = old.get("spec") != stored.get("spec")
            meta["generation"] = old["metadata"]["generation"] + int(changed)
            stored["status"] = old.get("status", {})
        self.objects[ref] = stored
        return copy.deepcopy(stored)

    async def delete(self, ref: ChildRef, uid: str, *, foreground: bool = False) -> None:
        self.writes.append(("delete-foreground" if foreground else "delete", str(ref)))
        self.audit_ids[ref] = f"audit-{len(self.writes)}"
        if ref in self.objects and self.objects[ref]["metadata"]["uid"] == uid:
            del self.objects[ref]

    async def patch_status(self, key: DeploymentKey, patch: Mapping[str, Any]) -> None:
        self.writes.append(("status", str(key)))
        current = self.status.setdefault(key, {})
        for field_name, value in patch.items():
            if value is None:
                current.pop(field_name, None)
            else:
                current[field_name] = copy.deepcopy(value)

    async def gpu_usage(self) -> Mapping[str, int]:
        return dict(self.usage)

    def take_audit_id(self, ref: ChildRef) -> str | None:
        return self.audit_ids.pop(ref, None)

    def observe(self, pods: tuple[PodSnapshot, ...] = ()) -> Observation:
        children: list[ObservedChild] = [observe_child(obj) for obj in self.objects.values()]
        return Observation(children=children, pods=pods, nodes=CLUSTER_NODES)

    def deployment(self) -> dict[str, Any]:
        return next(o for r, o in self.objects.items() if r.kind == "Deployment")

    def roll_out(self, replicas: int = 1) -> None:
        """What the Deployment controller reports once every pod is available."""
        deployment = self.deployment()
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }


def pod(
    name: str = "llama-engine-abc",
    *,
    template_hash: str = "",
    node_name: str = "l40s-0",
    ready: bool = True,
    gpus: int = 1,
    unschedulable: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    fetch_failure: str | None = None,
    fetch_done: bool = True,
    crash: str | None = None,
) -> PodSnapshot:
    return PodSnapshot(
        name=name,
        namespace="clinical-ai",
        deployment="llama",
        template_hash=template_hash,
        node_name="" if unschedulable else node_name,
        phase="Running" if ready else "Pending",
        deleting=False,
        ready=ready,
        gpus=gpus,
        unschedulable=unschedulable,
        node_selector=dict(node_selector or {}),
        fetch_done=fetch_done and fetch_failure is None and not unschedulable,
        fetch_failure=fetch_failure,
        crash=crash,
    )
