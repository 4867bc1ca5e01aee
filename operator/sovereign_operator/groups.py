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
  how many more nodes (`group_shortage`), since each pod needs a node of its own;
- `summarize` condenses all of it into the counts the status is computed from.

Why a spec change removes the old groups at once instead of after the new ones are ready:
a replacement group needs `pipeline` whole free nodes, which a cluster sized for the
deployment does not have. A surge group would be placed partly on whatever the old groups
leave free, hold those GPUs, and wait for nodes the old groups never give back: a rollout
that cannot finish. Replacing (like a Deployment's `Recreate`) always converges; the cost
is that the model serves nothing between the old groups' removal and the new ones'
readiness, which a multi-node engine reloading its weights mostly costs anyway.

Inputs are the watch streams' snapshots (`observe_group`, `group_pod`), so these functions
need nothing the cluster does not already say, and survive operator restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sovereign_operator.capacity import matches_placement
from sovereign_operator.observe import NodeSnapshot, ObservedChild, PodSnapshot, observe_pod
from sovereign_operator.render.group_names import GROUP_INDEX_LABEL
from sovereign_operator.render.group_statefulset import PARKED_ANNOTATION
from sovereign_operator.render.meta import TEMPLATE_HASH_ANNOTATION
from sovereign_operator.render.placement import GPU_PRODUCT_LABEL
from sovereign_operator.render.pod import GPU_RESOURCE


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
    pods: tuple[PodSnapshot, ...]
    """The group's pods by rank."""
    template: PodSnapshot
    """The StatefulSet's pod template: what every pod of the group asks for, even when the
    group has no pods (parked)."""
    deleting: bool = False

    @property
    def live_pods(self) -> list[PodSnapshot]:
        return [p for p in self.pods if not p.deleting]

    @property
    def placed(self) -> list[PodSnapshot]:
        return [p for p in self.live_pods if p.node_name]

    @property
    def unplaced(self) -> list[PodSnapshot]:
        return [p for p in self.live_pods if not p.node_name]


def group_pod(raw: Mapping[str, Any]) -> PodSnapshot | None:
    """The snapshot of a raw Pod when it belongs to a group, else None."""
    snapshot = observe_pod(raw)
    return snapshot if snapshot.group else None


def observe_group(
    statefulset: Mapping[str, Any], pods: Iterable[PodSnapshot], *, deleting: bool = False
) -> ObservedGroup:
    """A group from its StatefulSet (raw, or an ObservedChild's body) and any pods; only
    the group's own pods are kept."""
    meta = statefulset.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = statefulset.get("spec") or {}
    template = spec.get("template") or {}
    template_meta = template.get("metadata") or {}
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
        template=observe_pod({"metadata": template_meta, "spec": template.get("spec") or {}}),
        deleting=deleting or meta.get("deletionTimestamp") is not None,
    )


def observe_groups(
    children: Iterable[ObservedChild], pods: Iterable[PodSnapshot], owner_uid: str
) -> list[ObservedGroup]:
    """Every group (StatefulSet) the ModelDeployment `owner_uid` controls, with its pods."""
    group_pods = [p for p in pods if p.group]
    return [
        observe_group(child.body, group_pods, deleting=child.deleting)
        for child in children
        if child.ref.kind == "StatefulSet" and child.owner_uid == owner_uid
    ]


def group_ready(group: ObservedGroup) -> bool:
    """Every rank 0..size-1 has a live, ready pod. A parked or empty group is never ready."""
    if group.parked is not None or group.deleting or group.size < 1:
        return False
    ready = {p.rank for p in group.live_pods if p.ready}
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
    waiting = [p.waiting_since for p in group.unplaced if p.waiting_since]
    return bool(waiting) and now - min(waiting) >= timeout


def next_placement_deadline(groups: Iterable[ObservedGroup], timeout: timedelta) -> datetime | None:
    """When the first partly placed group becomes overdue (None: no group is waiting).

    Nothing else happens at that moment (no watch event), so the operator schedules a pass
    for it rather than parking up to a resync interval late.
    """
    deadlines = [
        min(waiting) + timeout
        for group in groups
        if group.parked is None
        and partly_placed(group)
        and (waiting := [p.waiting_since for p in group.unplaced if p.waiting_since])
    ]
    return min(deadlines, default=None)


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
    required affinity, taints) so the two messages agree.
    """
    placed_nodes = {p.node_name for p in group.placed}
    missing = pods_per_group - len(placed_nodes)
    if missing <= 0 or pod.gpus <= 0:
        return None
    eligible = [
        n
        for n in nodes
        if n.schedulable and n.name not in placed_nodes and matches_placement(pod, n)
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


@dataclass(frozen=True)
class GroupSummary:
    """What the status of a multi-node deployment is computed from."""

    desired: int
    """spec.replicas: groups wanted."""
    current: int
    """Groups of the current template that are not being deleted."""
    ready: int
    """Current groups whose every pod is ready: the deployment's ready replicas."""
    stale: int
    """Groups of an older template still present (being removed whole)."""
    leaving: int
    """Current-template groups being deleted (scaled down, or deleted by someone)."""
    parked: tuple[tuple[str, str], ...] = ()
    """(group, note) of the groups parked after their placement timeout."""

    @property
    def present(self) -> int:
        """Every group StatefulSet that still exists: status.replicas."""
        return self.current + self.stale + self.leaving


def summarize(
    groups: Iterable[ObservedGroup],
    template_hash: str,
    desired: int,
    parked: Mapping[str, str],
) -> GroupSummary:
    """Counts of `groups` against the plan; `parked` is what this pass rendered parked
    (fresher than the StatefulSets' annotations, which follow one watch event later)."""
    groups = list(groups)
    current = current_groups(groups, template_hash)
    return GroupSummary(
        desired=desired,
        current=len(current),
        ready=ready_groups((g for g in current if g.name not in parked), template_hash),
        stale=len(stale_groups(groups, template_hash)),
        leaving=sum(1 for g in groups if g.template_hash == template_hash and g.deleting),
        parked=tuple(sorted(parked.items())),
    )


def current_groups(groups: Iterable[ObservedGroup], template_hash: str) -> list[ObservedGroup]:
    """Groups of the current template that are not being deleted."""
    return [g for g in groups if g.template_hash == template_hash and not g.deleting]


def parking_pending(groups: Iterable[ObservedGroup], now: datetime, timeout: timedelta) -> bool:
    """Whether any group is parked or overdue: only then is the cluster's GPU usage needed
    (a cluster-wide read) to decide which groups to park."""
    return any(g.parked is not None or placement_overdue(g, now, timeout) for g in groups)


def decide_parking(
    groups: Iterable[ObservedGroup],
    now: datetime,
    timeout: timedelta,
    *,
    nodes: Iterable[NodeSnapshot],
    used: Mapping[str, int] | None,
    pods_per_group: int,
    previous: Mapping[str, str],
) -> dict[str, str]:
    """`parked_groups` with the shortage of each group taken from the cluster's nodes and
    GPU usage (`used`; None when unknown: parked groups then stay parked).

    A group parked by the previous rendering (`previous`) keeps that rendering's note: the
    watch may not show the StatefulSet's annotation yet, and a fresh note would rewrite it.
    """
    nodes = list(nodes)

    def shortage(group: ObservedGroup) -> str | None:
        if used is None:
            return "the cluster's GPU usage could not be read"
        return group_shortage(group, group.template, nodes, used, pods_per_group)

    parked = parked_groups(groups, now, timeout, shortage)
    return {name: previous.get(name, note) for name, note in parked.items()}


def shortage_of(
    stuck: PodSnapshot | None,
    groups: Iterable[ObservedGroup],
    *,
    parked: Iterable[str],
    nodes: Iterable[NodeSnapshot],
    used: Mapping[str, int],
    pods_per_group: int,
) -> str | None:
    """The shortage of the group of the pod `stuck` (one that cannot be placed) or, with no
    such pod, of the first parked group: what it takes for that group to run whole."""
    by_name = {g.name: g for g in groups}
    if stuck is not None:
        group = by_name.get(stuck.group)
        if group is None:
            return None
        return group_shortage(group, stuck, nodes, used, pods_per_group)
    for name in sorted(parked):
        if name in by_name:
            group = by_name[name]
            return group_shortage(group, group.template, nodes, used, pods_per_group)
    return None
