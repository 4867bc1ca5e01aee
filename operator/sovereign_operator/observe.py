"""Compact snapshots of what the cluster holds: children, engine pods and nodes (pure).

The operator keeps these in memory (kopf indexes fed by the watch streams), one per object,
so a reconcile reads the cluster's state without a LIST. Each snapshot keeps only what the
reconciler and the status computation read, which keeps the operator's memory flat at
thousands of objects (a raw Pod is ~10 kB of JSON; its snapshot is a few hundred bytes).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sovereign_operator.render.group_names import GROUP_LABEL, POD_INDEX_LABEL
from sovereign_operator.render.meta import (
    LABEL_DEPLOYMENT,
    SPEC_HASH_ANNOTATION,
    TEMPLATE_HASH_ANNOTATION,
    Manifest,
)
from sovereign_operator.render.placement import GPU_PRODUCT_LABEL
from sovereign_operator.render.pod import ENGINE_CONTAINER, FETCH_CONTAINER, GPU_RESOURCE

# Waiting reasons of a container that will not get better by waiting.
CRASH_REASONS: Final = frozenset({"CrashLoopBackOff", "RunContainerError"})
IMAGE_REASONS: Final = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_REASONS: Final = frozenset({"CreateContainerConfigError", "CreateContainerError"})
# Restarts after which an engine that keeps dying is reported even between back-offs.
CRASH_RESTARTS: Final = 3


@dataclass(frozen=True)
class ChildKind:
    """A kind of child the operator creates, watches, prunes and holds RBAC for."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


# Everything `render_children` may emit (StatefulSets: multi-node groups). The chart's
# ClusterRole grants exactly these; a unit test keeps the two in step.
CHILD_KINDS: Final = (
    ChildKind("v1", "ServiceAccount", "serviceaccounts"),
    ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ChildKind("v1", "Service", "services"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("apps/v1", "Deployment", "deployments"),
    ChildKind("apps/v1", "StatefulSet", "statefulsets"),
)


def child_kind(api_version: str, kind: str) -> ChildKind:
    for known in CHILD_KINDS:
        if known.api_version == api_version and known.kind == kind:
            return known
    raise LookupError(f"{api_version} {kind} is not a kind this operator manages")


@dataclass(frozen=True, order=True)
class ChildRef:
    """Identity of one child: enough to read, apply or delete it."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> ChildRef:
        meta = manifest.get("metadata") or {}
        return cls(
            api_version=str(manifest.get("apiVersion", "")),
            kind=str(manifest.get("kind", "")),
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
        )

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class ObservedChild:
    """A child as the cluster holds it, without status noise and managedFields."""

    ref: ChildRef
    uid: str
    owner_uid: str | None
    """uid of the controller owner reference, None when no controller owns it."""
    deployment: str
    """Value of the sovereign.dev/deployment label: the ModelDeployment it belongs to."""
    deleting: bool
    body: Manifest
    status: Mapping[str, Any] = field(default_factory=dict)
    """Kept for workloads only (Deployments), whose status the conditions read."""

    @property
    def spec_hash(self) -> str | None:
        annotations = self.body.get("metadata", {}).get("annotations") or {}
        value = annotations.get(SPEC_HASH_ANNOTATION)
        return str(value) if value is not None else None

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation") or 0)


_KEPT_METADATA: Final = (
    "name",
    "namespace",
    "labels",
    "annotations",
    "ownerReferences",
    "generation",
)
WORKLOAD_KINDS: Final = frozenset({"Deployment", "StatefulSet"})


def observe_child(raw: Mapping[str, Any]) -> ObservedChild:
    """The snapshot of one child object from its watch event body."""
    meta = raw.get("metadata") or {}
    labels = meta.get("labels") or {}
    body: Manifest = {
        key: copy.deepcopy(value) for key, value in raw.items() if key not in ("metadata", "status")
    }
    body["metadata"] = {k: copy.deepcopy(meta[k]) for k in _KEPT_METADATA if k in meta}
    kind = str(raw.get("kind", ""))
    status = copy.deepcopy(dict(raw.get("status") or {})) if kind in WORKLOAD_KINDS else {}
    return ObservedChild(
        ref=ChildRef.of(raw),
        uid=str(meta.get("uid", "")),
        owner_uid=controller_uid(meta),
        deployment=str(labels.get(LABEL_DEPLOYMENT, "")),
        deleting=meta.get("deletionTimestamp") is not None,
        body=body,
        status=status,
    )


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str
    value: str
    effect: str

    def tolerates(self, taint: Taint) -> bool:
        """The core scheduler's rule (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class PodSnapshot:
    """An engine pod: where it is, whether it can run, and what its containers report."""

    name: str
    namespace: str
    deployment: str
    template_hash: str
    node_name: str
    phase: str
    deleting: bool
    ready: bool
    gpus: int
    """nvidia.com/gpu the pod requests (the larger of its containers' sum and any init container)."""
    unschedulable: str | None
    """The scheduler's message when it could not place the pod."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    required_terms: tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...] = ()
    """Required node affinity: terms (ORed) of (key, operator, values) expressions (ANDed)."""
    tolerations: tuple[Toleration, ...] = ()
    fetch_done: bool = False
    fetch_failure: str | None = None
    """Why the fetch-and-verify init container failed, from its termination message."""
    fetch_message: str = ""
    crash: str | None = None
    """Why the engine keeps dying (crash loop) or cannot start (image, configuration)."""
    group: str = ""
    """The multi-node group the pod belongs to ("" for single-node engines)."""
    rank: int = 0
    """The pod's rank in its group (its StatefulSet ordinal); 0 outside groups."""
    waiting_since: datetime | None = None
    """When the scheduler last turned PodScheduled False (how long a group pod waits)."""


_ORDINAL: Final = re.compile(r"-(\d+)$")


def observe_pod(raw: Mapping[str, Any]) -> PodSnapshot:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    annotations = meta.get("annotations") or {}
    fetch_done, fetch_failure, fetch_message = _fetch_state(status)
    labels = meta.get("labels") or {}
    group = str(labels.get(GROUP_LABEL) or "")
    rank_text = labels.get(POD_INDEX_LABEL)
    if group and rank_text is None and (match := _ORDINAL.search(str(meta.get("name", "")))):
        rank_text = match.group(1)  # clusters before 1.28 have no pod-index label
    return PodSnapshot(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        deployment=str((meta.get("labels") or {}).get(LABEL_DEPLOYMENT, "")),
        template_hash=str(annotations.get(TEMPLATE_HASH_ANNOTATION, "")),
        node_name=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or "Pending"),
        deleting=meta.get("deletionTimestamp") is not None,
        ready=_condition_true(status, "Ready"),
        gpus=pod_gpu_request(spec),
        unschedulable=_unschedulable(status),
        node_selector=dict(spec.get("nodeSelector") or {}),
        required_terms=_required_terms(spec),
        tolerations=tuple(
            Toleration(
                key=str(t.get("key") or ""),
                operator=str(t.get("operator") or "Equal"),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect") or ""),
            )
            for t in spec.get("tolerations") or []
        ),
        fetch_done=fetch_done,
        fetch_failure=fetch_failure,
        fetch_message=fetch_message,
        crash=_crash(status),
        group=group,
        rank=int(rank_text or 0),
        waiting_since=_waiting_since(status),
    )


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _unschedulable(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return str(condition.get("message") or "the scheduler found no node")
    return None


def _waiting_since(status: Mapping[str, Any]) -> datetime | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            stamp = condition.get("lastTransitionTime")
            return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    return None


def _required_terms(
    spec: Mapping[str, Any],
) -> tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...]:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    return tuple(
        tuple(
            (
                str(e.get("key")),
                str(e.get("operator")),
                tuple(str(v) for v in e.get("values") or []),
            )
            for e in term.get("matchExpressions") or []
        )
        for term in required.get("nodeSelectorTerms") or []
    )


def _fetch_state(status: Mapping[str, Any]) -> tuple[bool, str | None, str]:
    """(verified, failure, message) of the fetch-and-verify init container."""
    for container in status.get("initContainerStatuses") or []:
        if container.get("name") != FETCH_CONTAINER:
            continue
        state = container.get("state") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        terminated = state.get("terminated") or {}
        if terminated and int(terminated.get("exitCode", 1)) == 0:
            return True, None, str(terminated.get("message") or "").strip()
        failed = terminated or last
        if failed and int(failed.get("exitCode", 0)) != 0:
            message = str(failed.get("message") or failed.get("reason") or "").strip()
            code = failed.get("exitCode")
            return False, message or f"the fetch step exited with code {code}", ""
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in IMAGE_REASONS | CONFIG_REASONS:
            return False, f"{waiting.get('reason')}: {waiting.get('message', '')}".strip(), ""
    return False, None, ""


def _crash(status: Mapping[str, Any]) -> str | None:
    for container in status.get("containerStatuses") or []:
        if container.get("name") != ENGINE_CONTAINER:
            continue
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        last = (container.get("lastState") or {}).get("terminated") or {}
        restarts = int(container.get("restartCount") or 0)
        detail = str(last.get("message") or last.get("reason") or waiting.get("message") or "")
        if reason in CRASH_REASONS or (last and restarts >= CRASH_RESTARTS):
            return f"{reason or 'Restarting'} after {restarts} restarts: {detail}".strip(": ")
        if reason in IMAGE_REASONS | CONFIG_REASONS:
            return f"{reason}: {waiting.get('message', '')}".strip(": ")
    return None


def pod_gpu_request(spec: Mapping[str, Any]) -> int:
    """The pod's effective nvidia.com/gpu request, computed the way the scheduler does."""

    def gpus(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(GPU_RESOURCE)
        if value is None:
            value = (resources.get("limits") or {}).get(GPU_RESOURCE, 0)
        return int(str(value))

    regular = sum(gpus(c) for c in spec.get("containers") or [])
    init = max((gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(regular, init)


@dataclass(frozen=True)
class NodeSnapshot:
    """What GPU placement needs to know about a node."""

    name: str
    labels: Mapping[str, str]
    gpus: int
    """Allocatable nvidia.com/gpu."""
    schedulable: bool
    """Ready and not cordoned."""
    taints: tuple[Taint, ...] = ()

    @property
    def gpu_product(self) -> str | None:
        return self.labels.get(GPU_PRODUCT_LABEL)


def observe_node(raw: Mapping[str, Any]) -> NodeSnapshot:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    allocatable = status.get("allocatable") or {}
    return NodeSnapshot(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        gpus=int(str(allocatable.get(GPU_RESOURCE, 0))),
        schedulable=not spec.get("unschedulable") and _condition_true(status, "Ready"),
        taints=tuple(
            Taint(
                key=str(t.get("key") or ""),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect") or ""),
            )
            for t in spec.get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute")
        ),
    )


def gpus_in_use(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """nvidia.com/gpu requested per node by every pod that holds its node's resources."""
    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node or phase in ("Succeeded", "Failed"):
            continue
        used[node] = used.get(node, 0) + pod_gpu_request(pod.get("spec") or {})
    return used
