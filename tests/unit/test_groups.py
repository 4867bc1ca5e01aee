"""Group semantics: readiness of whole groups, stale groups, placement timeouts and the
shortage message, computed from pods and StatefulSets as the API server returns them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.groups import (
    ObservedGroup,
    decide_parking,
    group_pod,
    group_ready,
    group_shortage,
    observe_group,
    observe_groups,
    parked_groups,
    parking_pending,
    placement_overdue,
    ready_groups,
    shortage_of,
    stale_groups,
    summarize,
)
from sovereign_operator.observe import NodeSnapshot, observe_child, observe_node
from sovereign_operator.render import Owner, RenderOptions, render_children
from sovereign_operator.render.group_names import POD_INDEX_LABEL
from sovereign_operator.render.group_statefulset import PARKED_ANNOTATION
from tests.unit.render.cases import H100, make_plan

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=600)
Raw = dict[str, Any]


def statefulsets(gpus: int = 16, replicas: int = 1, **overrides: Any) -> list[Raw]:
    plan = make_plan(resources={"gpus": gpus, "gpuType": H100}, replicas=replicas, **overrides)
    children = render_children(plan, RenderOptions(), Owner.model_deployment(plan.name))
    return [c for c in children if c["kind"] == "StatefulSet"]


def pod(
    statefulset: Raw,
    rank: int,
    *,
    node: str = "",
    ready: bool = False,
    waiting_since: datetime | None = None,
    deleting: bool = False,
) -> Raw:
    """A pod of the StatefulSet as the API server shows it."""
    template = copy.deepcopy(statefulset["spec"]["template"])
    name = statefulset["metadata"]["name"]
    meta = template["metadata"] | {"name": f"{name}-{rank}", "namespace": "clinical-ai"}
    meta["labels"] = meta["labels"] | {POD_INDEX_LABEL: str(rank)}
    if deleting:
        meta["deletionTimestamp"] = "2026-03-01T11:59:00Z"
    conditions = []
    if node:
        template["spec"]["nodeName"] = node
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    elif waiting_since is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                "lastTransitionTime": waiting_since.isoformat().replace("+00:00", "Z"),
            }
        )
    phase = "Running" if node else "Pending"
    return {
        "metadata": meta,
        "spec": template["spec"],
        "status": {"phase": phase, "conditions": conditions},
    }


def group(statefulset: Raw, *pods: Raw) -> ObservedGroup:
    parsed = [p for p in map(group_pod, pods) if p is not None]
    return observe_group(statefulset, parsed)


def node(name: str, gpus: int = 8, product: str = H100, *, ready: bool = True) -> NodeSnapshot:
    return observe_node(
        {
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"nvidia.com/gpu": str(gpus)},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def test_a_group_is_ready_only_when_every_member_is() -> None:
    (sts,) = statefulsets()
    assert group_ready(
        group(sts, pod(sts, 0, node="a", ready=True), pod(sts, 1, node="b", ready=True))
    )
    assert not group_ready(group(sts, pod(sts, 0, node="a", ready=True), pod(sts, 1, node="b")))
    assert not group_ready(group(sts, pod(sts, 0, node="a", ready=True)))  # member missing
    assert not group_ready(
        group(
            sts, pod(sts, 0, node="a", ready=True), pod(sts, 1, node="b", ready=True, deleting=True)
        )
    )
    assert not group_ready(group(sts))


def test_pods_of_other_groups_are_not_counted() -> None:
    first, second = statefulsets(replicas=2)
    mixed = group(first, pod(first, 0, node="a", ready=True), pod(second, 1, node="b", ready=True))
    assert [p.rank for p in mixed.pods] == [0]
    assert not group_ready(mixed)
    assert group_pod({"metadata": {"name": "llama-engine-abc", "labels": {}}}) is None


def test_ready_replicas_count_whole_groups_of_the_current_template() -> None:
    first, second = statefulsets(replicas=2)
    (old,) = statefulsets(engine={"maxModelLen": 4096})
    groups = [
        group(first, pod(first, 0, node="a", ready=True), pod(first, 1, node="b", ready=True)),
        group(second, pod(second, 0, node="c", ready=True), pod(second, 1, node="d")),
        group(old, pod(old, 0, node="e", ready=True), pod(old, 1, node="f", ready=True)),
    ]
    current = groups[0].template_hash
    assert current != groups[2].template_hash
    assert ready_groups(groups, current) == 1
    assert stale_groups(groups, current) == [old["metadata"]["name"]]


def test_rank_falls_back_to_the_ordinal_without_the_pod_index_label() -> None:
    (sts,) = statefulsets()
    raw = pod(sts, 1, node="b", ready=True)
    del raw["metadata"]["labels"][POD_INDEX_LABEL]
    parsed = group_pod(raw)
    assert parsed is not None
    assert parsed.rank == 1


def test_only_partly_placed_groups_time_out() -> None:
    (sts,) = statefulsets()
    long_ago, just_now = NOW - timedelta(seconds=601), NOW - timedelta(seconds=30)
    partly = group(sts, pod(sts, 0, node="a"), pod(sts, 1, waiting_since=long_ago))
    assert placement_overdue(partly, NOW, TIMEOUT)
    assert not placement_overdue(
        group(sts, pod(sts, 0, node="a"), pod(sts, 1, waiting_since=just_now)), NOW, TIMEOUT
    )
    # Nothing placed holds no GPUs: such a group keeps waiting for room.
    nothing = group(sts, pod(sts, 0, waiting_since=long_ago), pod(sts, 1, waiting_since=long_ago))
    assert not placement_overdue(nothing, NOW, TIMEOUT)
    assert not placement_overdue(
        group(sts, pod(sts, 0, node="a"), pod(sts, 1, node="b")), NOW, TIMEOUT
    )


def test_overdue_groups_are_parked_and_stay_parked_until_they_fit() -> None:
    (sts,) = statefulsets()
    name = sts["metadata"]["name"]
    overdue = group(sts, pod(sts, 0, node="a"), pod(sts, 1, waiting_since=NOW - TIMEOUT))
    parked = parked_groups([overdue], NOW, TIMEOUT, lambda _: "short")
    assert list(parked) == [name]
    assert "1 of 2 pods could not be placed within 600 s" in parked[name]

    # Rendered with that note, the StatefulSet has no pods; the note survives resyncs.
    (rendered,) = statefulsets()
    rendered["metadata"]["annotations"] = {PARKED_ANNOTATION: parked[name]}
    rendered["spec"]["replicas"] = 0
    later = NOW + timedelta(hours=1)
    still = parked_groups([group(rendered)], later, TIMEOUT, lambda _: "still short")
    assert still == parked
    assert parked_groups([group(rendered)], later, TIMEOUT, lambda _: None) == {}
    assert not group_ready(group(rendered))


def test_the_shortage_names_gpus_type_and_nodes() -> None:
    (sts,) = statefulsets()
    placed = group(sts, pod(sts, 0, node="h100-a"), pod(sts, 1, waiting_since=NOW))
    template = placed.pods[0]
    nodes = [node("h100-a"), node("h100-b"), node("l40s-a", 4, "NVIDIA-L40S")]
    used = {"h100-a": 8, "h100-b": 8}
    message = group_shortage(placed, template, nodes, used, pods_per_group=2)
    assert message is not None
    assert message.startswith("needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3 on 1 more node:")
    assert "1 placed, 0 other matching node(s) with 8 free" in message
    assert "largest free elsewhere is 0 on h100-b" in message
    # A free node of the right type lets the group fit; one already holding a member does not.
    assert group_shortage(placed, template, [*nodes, node("h100-c")], used, 2) is None
    assert group_shortage(placed, template, nodes, {"h100-b": 8}, 2) is not None


def test_the_shortage_of_a_group_with_nothing_placed_counts_every_pod() -> None:
    (sts,) = statefulsets(gpus=32)
    waiting = group(sts, *(pod(sts, r, waiting_since=NOW) for r in range(4)))
    template = waiting.template
    nodes = [node("a"), node("b"), node("c", ready=False), node("d", 4)]
    message = group_shortage(waiting, template, nodes, {}, pods_per_group=4)
    assert message is not None
    assert message.startswith("needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3 on 2 more nodes:")
    assert "0 placed, 2 other matching node(s) with 8 free (a, b)" in message


def test_the_template_stands_in_for_the_pods_of_an_empty_group() -> None:
    (sts,) = statefulsets()
    empty = group(sts)
    assert (empty.template.gpus, empty.template.group) == (8, sts["metadata"]["name"])
    assert empty.template.node_selector["nvidia.com/gpu.product"] == H100


def test_groups_are_found_among_the_children_the_deployment_controls() -> None:
    first, second = statefulsets(replicas=2)
    mine = {"uid": "md-uid", "controller": True, "kind": "ModelDeployment", "name": "llama"}
    theirs = {**mine, "uid": "other"}
    for sts, owner in ((first, mine), (second, theirs)):
        sts["metadata"]["ownerReferences"] = [owner]
    gone = copy.deepcopy(first) | {"metadata": first["metadata"] | {"name": "llama-g9-old"}}
    gone["metadata"]["deletionTimestamp"] = "2026-03-01T11:59:00Z"
    children = [observe_child(c) for c in (first, second, gone)]
    pods = [group_pod(pod(first, 0, node="a", ready=True))]
    found = observe_groups(children, [p for p in pods if p is not None], "md-uid")
    assert [(g.name, g.deleting, len(g.pods)) for g in found] == [
        (first["metadata"]["name"], False, 1),
        ("llama-g9-old", True, 0),
    ]


def test_the_summary_counts_whole_groups() -> None:
    first, second = statefulsets(replicas=2)
    (old,) = statefulsets(engine={"maxModelLen": 4096})
    ready = group(first, pod(first, 0, node="a", ready=True), pod(first, 1, node="b", ready=True))
    starting = group(second, pod(second, 0, node="c", ready=True), pod(second, 1, node="d"))
    current = ready.template_hash
    summary = summarize([ready, starting, group(old)], current, 2, {})
    assert (summary.current, summary.ready, summary.stale, summary.present) == (2, 1, 1, 3)
    # A group parked by this pass is not ready, whatever its StatefulSet still shows.
    parked = summarize([ready], current, 1, {ready.name: "note"})
    assert (parked.ready, parked.parked) == (0, ((ready.name, "note"),))


def test_parking_reads_gpu_usage_only_when_a_group_is_parked_or_overdue() -> None:
    (sts,) = statefulsets()
    fine = group(sts, pod(sts, 0, node="a"), pod(sts, 1, waiting_since=NOW))
    assert not parking_pending([fine], NOW, TIMEOUT)
    overdue = group(sts, pod(sts, 0, node="a"), pod(sts, 1, waiting_since=NOW - TIMEOUT))
    assert parking_pending([overdue], NOW, TIMEOUT)


def test_a_parked_group_keeps_its_note_and_comes_back_when_it_fits() -> None:
    (sts,) = statefulsets()
    name = sts["metadata"]["name"]
    overdue = group(sts, pod(sts, 0, node="h100-a"), pod(sts, 1, waiting_since=NOW - TIMEOUT))
    busy = [node("h100-a"), node("h100-b")]
    used = {"h100-a": 8, "h100-b": 8}

    def decide(g: ObservedGroup, used: dict[str, int] | None, previous: dict[str, str]) -> Any:
        return decide_parking(
            [g], NOW, TIMEOUT, nodes=busy, used=used, pods_per_group=2, previous=previous
        )

    first = decide(overdue, used, {})
    assert list(first) == [name]
    # The watch has not shown the parked StatefulSet yet: the note is not rewritten.
    assert decide(overdue, used, {name: "earlier note"}) == {name: "earlier note"}
    parked_sts = copy.deepcopy(sts)
    parked_sts["metadata"]["annotations"] = {PARKED_ANNOTATION: first[name]}
    parked_sts["spec"]["replicas"] = 0
    parked = group(parked_sts)
    assert decide(parked, used, first) == first  # both nodes still full
    assert decide(parked, None, first) == first  # usage unknown: stay parked
    assert decide(parked, {"h100-a": 8}, first) == first  # one free node is not enough
    assert decide(parked, {}, first) == {}  # the whole group fits: released


def test_the_reported_shortage_is_the_stuck_pods_group_or_else_a_parked_one() -> None:
    (sts,) = statefulsets()
    name = sts["metadata"]["name"]
    waiting = group(sts, pod(sts, 0, node="h100-a"), pod(sts, 1, waiting_since=NOW))
    nodes = [node("h100-a"), node("h100-b")]
    used = {"h100-a": 8, "h100-b": 8}
    stuck = waiting.unplaced[0]
    by_pod = shortage_of(stuck, [waiting], parked=(), nodes=nodes, used=used, pods_per_group=2)
    assert by_pod is not None
    assert by_pod.startswith("needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3 on 1 more node")
    parked = group(sts)
    by_parked = shortage_of(None, [parked], parked=[name], nodes=nodes, used=used, pods_per_group=2)
    assert by_parked is not None
    assert "on 2 more nodes" in by_parked
    assert shortage_of(None, [parked], parked=(), nodes=nodes, used=used, pods_per_group=2) is None
