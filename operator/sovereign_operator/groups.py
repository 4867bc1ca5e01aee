"""Multi-node group semantics, computed from what the cluster shows (pure).

A replica of a multi-node plan is a group: one StatefulSet whose pods form one engine. The
reconciler and the status computation use these functions to treat groups as wholes:

- a group is ready only when every one of its pods is ready (`group_ready`);
- a group whose template hash is not the plan's is replaced whole (`stale_groups`), never
  mixed with new pods (its name holds the hash, so new groups are new StatefulSets);
- a group that got only some of its pods placed holds GPUs it cannot use; after
  `spec.multiNode.placementTimeout` it is parked: rendered with no pods, its StatefulSet
  annotated with why (`parked_groups`), and it comes back once the cluster has room for all
  of it (`group_shortage` returns None);
- `Scheduled=False` names the shortage for the whole group: how many GPUs of which type on
  how many more nodes (`group_shortage`), since each pod needs a node of its own.

Inputs are the raw objects of the watch streams (`observe_group`, `group_pod`), so these
functions need nothing the cluster does not already say, and survive operator restarts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Private in capacity; imported as is until it is made public (see group_shortage).
from sovereign_operator.capacity import _matches_placement
from sovereign_operator.observe import NodeSnapshot, PodSnapshot, observe_pod
from sovereign_operator.render.group_names import GROUP_INDEX_LABEL, GROUP_LABEL, POD_INDEX_LABEL
from sovereign_operator.render.group_statefulset import PARKED_ANNOTATION
from sovereign_operator.render.meta import TEMPLATE_HASH_ANNOTATION
from sovereign_operator.render.placement import GPU_PRODUCT_LABEL
from sovereign_operator.render.pod import GPU_RESOURCE

_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class GroupPod:
    """One pod of a group: its snapshot, its rank, and since when it could not be placed."""

    snapshot: PodSnapshot
    group: str
    rank: int
    unschedulable_since: datetime | None


@dataclass(frozen=True)
class ObservedGroup:
    """A group's StatefulSet and the pods it has now."""

    name: str
    index: int | None
    template_hash: str
    size: int
    """Pods the StatefulSet asks for: the plan's nodes per replica, 0 when parked."""
    parked: str | None
    """The parked note (see PARKED_ANNOTATION), None when the group may run."""
    pods: tuple[GroupPod, ...]

    @property
    def live_pods(self) -> list[GroupPod]:
        return [p for p in self.pods if not p.snapshot.deleting]

    @property
    def placed(self) -> list[GroupPod]:
        return [p for p in self.live_pods if p.snapshot.node_name]

    @property
    def unplaced(self) -> list[GroupPod]:
        return [p for p in self.live_pods if not p.snapshot.node_name]


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def group_pod(raw: Mapping[str, Any]) -> GroupPod | None:
    """The group view of a raw Pod; None for a pod that belongs to no group."""
    meta = raw.get("metadata") or {}
    labels = meta.get("labels") or {}
    group = labels.get(GROUP_LABEL)
    if not group:
        return None
    rank_text = labels.get(POD_INDEX_LABEL)
    if rank_text is None and (match := _ORDINAL.search(str(meta.get("name", "")))):
        rank_text = match.group(1)  # clusters before 1.28 have no pod-index label
    since = None
    for condition in (raw.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            since = _timestamp(condition.get("lastTransitionTime"))
    return GroupPod(observe_pod(raw), str(group), int(rank_text or 0), since)


def observe_group(statefulset: Mapping[str, Any], pods: Iterable[GroupPod]) -> ObservedGroup:
    """A group from its raw StatefulSet and any pods (only the group's own are kept)."""
    meta = statefulset.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = statefulset.get("spec") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    name = str(meta.get("name", ""))
    index = labels.get(GROUP_INDEX_LABEL)
    return ObservedGroup(
        name=name,
        index=int(index) if index is not None else None,
        template_hash=str(
            (template_meta.get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION, "")
        ),
        size=int(spec.get("replicas") or 0),
        parked=(meta.get("annotations") or {}).get(PARKED_ANNOTATION),
        pods=tuple(sorted((p for p in pods if p.group == name), key=lambda p: p.rank)),
    )


def group_ready(group: ObservedGroup) -> bool:
    """Every rank 0..size-1 has a live, ready pod. A parked or empty group is never ready."""
    if group.parked is not None or group.size < 1:
        return False
    ready = {p.rank for p in group.live_pods if p.snapshot.ready}
    return ready >= set(range(group.size))


def ready_groups(groups: Iterable[ObservedGroup], template_hash: str) -> int:
    """Ready groups of the current template: the deployment's ready replicas."""
    return sum(1 for g in groups if g.template_hash == template_hash and group_ready(g))


def stale_groups(groups: Iterable[ObservedGroup], template_hash: str) -> list[str]:
    """Groups of an older template, to be removed whole (rendering no longer emits them)."""
    return sorted(g.name for g in groups if g.template_hash != template_hash)


def partly_placed(group: ObservedGroup) -> bool:
    """Some pods hold a node (and its GPUs) while others wait for one."""
    return bool(group.placed) and bool(group.unplaced)


def placement_overdue(group: ObservedGroup, now: datetime, timeout: timedelta) -> bool:
    """A partly placed group whose oldest waiting pod has waited longer than `timeout`.

    A group with no pod placed holds no GPUs, so it keeps waiting for room instead.
    """
    if group.parked is not None or not partly_placed(group):
        return False
    waiting = [p.unschedulable_since for p in group.unplaced if p.unschedulable_since]
    return bool(waiting) and now - min(waiting) >= timeout


def parked_note(group: ObservedGroup, now: datetime, timeout: timedelta) -> str:
    """The note a parked group's StatefulSet keeps, fixed when it is parked."""
    return (
        f"{now.isoformat(timespec='seconds')}: {len(group.unplaced)} of {group.size} pods "
        f"could not be placed within {int(timeout.total_seconds())} s; the group's pods were "
        "removed to free the GPUs the placed ones held"
    )


def parked_groups(
    groups: Iterable[ObservedGroup],
    now: datetime,
    timeout: timedelta,
    shortage: Callable[[ObservedGroup], str | None],
) -> dict[str, str]:
    """Group name -> parked note, for `render_children(parked=...)`.

    A parked group stays parked while `shortage(group)` names a shortage (the note is kept
    as it was, so the rendering does not change), and is released once the whole group fits;
    an overdue group is parked now.
    """
    parked: dict[str, str] = {}
    for group in groups:
        if group.parked is not None:
            if shortage(group) is not None:
                parked[group.name] = group.parked
        elif placement_overdue(group, now, timeout):
            parked[group.name] = parked_note(group, now, timeout)
    return parked


def group_shortage(
    group: ObservedGroup,
    pod: PodSnapshot,
    nodes: Iterable[NodeSnapshot],
    used: Mapping[str, int],
    pods_per_group: int,
) -> str | None:
    """Why the group's missing pods cannot all be placed, or None when they can.

    `pod` is any pod of the group (or of its template): its GPUs and placement rules are
    the group's. A missing pod needs a matching node with enough free GPUs that holds no
    other pod of the group. Placement is matched by capacity's own rules (selector,
    required affinity, taints) so the two messages agree; that helper is private there
    and is imported as is until it is made public.
    """
    placed_nodes = {p.snapshot.node_name for p in group.placed}
    missing = pods_per_group - len(placed_nodes)
    if missing <= 0 or pod.gpus <= 0:
        return None
    eligible = [
        n
        for n in nodes
        if n.schedulable and n.name not in placed_nodes and _matches_placement(pod, n)
    ]
    free = {n.name: max(n.gpus - used.get(n.name, 0), 0) for n in eligible}
    fitting = sorted(name for name, gpus in free.items() if gpus >= pod.gpus)
    if len(fitting) >= missing:
        return None
    product = pod.node_selector.get(GPU_PRODUCT_LABEL)
    of_what = f"{GPU_RESOURCE} of {product}" if product else GPU_RESOURCE
    short = missing - len(fitting)
    nodes_word = "node" if short == 1 else "nodes"
    message = (
        f"needs {pod.gpus} {of_what} on {short} more {nodes_word}: each of the group's "
        f"{pods_per_group} pods needs a node of its own; {len(placed_nodes)} placed, "
        f"{len(fitting)} other matching node(s) with {pod.gpus} free"
    )
    if fitting:
        message += f" ({', '.join(fitting)})"
    others = {name: gpus for name, gpus in free.items() if name not in fitting}
    if others:
        best = max(others, key=lambda name: (others[name], name))
        message += f"; largest free elsewhere is {others[best]} on {best}"
    return message
