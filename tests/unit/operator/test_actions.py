"""actions: the comparison behind drift repair, and the plan of applies and prunes."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from sovereign_operator.actions import Apply, Prune, Written, differences, plan_actions
from sovereign_operator.observe import ChildRef, observe_child
from sovereign_operator.reconcile import ReconcileContext, reconcile
from tests.unit.operator.fakes import MD_UID, FakeCluster, md_body

pytestmark = pytest.mark.unit


def rendered(cluster: FakeCluster | None = None) -> list[dict[str, Any]]:
    """The children of the default body, as a first pass applies them."""
    cluster = cluster or FakeCluster()
    asyncio.run(reconcile(md_body(), cluster.observe(), ReconcileContext(writer=cluster)))
    return copy.deepcopy(cluster.applied)


def test_differences_ignore_fields_the_server_added() -> None:
    desired = {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}}
    observed = {
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "a", "imagePullPolicy": "Always"}]}},
        }
    }
    assert differences(desired, observed) == []


def test_differences_name_the_path_someone_changed() -> None:
    desired = {"spec": {"replicas": 1, "selector": {"app": "x"}}}
    observed = {"spec": {"replicas": 5, "selector": {"app": "x"}}}
    assert differences(desired, observed) == [".spec.replicas"]


def test_empty_maps_and_lists_equal_absent_ones() -> None:
    assert differences({"spec": {"nodeSelector": {}, "tolerations": []}}, {"spec": {}}) == []


def test_quantities_compare_by_value_not_spelling() -> None:
    assert differences({"memory": "1Gi", "cpu": "1"}, {"memory": "1024Mi", "cpu": "1000m"}) == []
    assert differences({"memory": "1Gi"}, {"memory": "2Gi"}) == [".memory"]


def test_a_list_of_another_length_is_drift() -> None:
    assert differences({"args": ["a", "b"]}, {"args": ["a", "b", "c"]}) == [".args"]


def test_a_missing_field_is_drift_but_a_false_boolean_is_not_a_missing_one() -> None:
    assert differences({"spec": {"paused": False}}, {"spec": {}}) == [".spec.paused"]


def test_matching_children_need_no_action() -> None:
    cluster = FakeCluster()
    desired = rendered(cluster)
    observed = [observe_child(obj) for obj in cluster.objects.values()]
    assert plan_actions(desired, observed, MD_UID) == []


def test_missing_children_are_applied_in_render_order() -> None:
    desired = rendered()
    actions = plan_actions(desired, [], MD_UID)
    assert [type(a) for a in actions] == [Apply] * 5
    assert [a.ref.kind for a in actions] == [
        "ServiceAccount",
        "NetworkPolicy",
        "Service",
        "PodDisruptionBudget",
        "Deployment",
    ]


def test_a_changed_spec_hash_reapplies_that_child_only() -> None:
    cluster = FakeCluster()
    desired = rendered(cluster)
    observed = [observe_child(obj) for obj in cluster.objects.values()]
    service = next(m for m in desired if m["kind"] == "Service")
    service["metadata"]["annotations"]["sovereign.dev/spec-hash"] = "new"
    actions = plan_actions(desired, observed, MD_UID)
    assert [(type(a), a.ref.kind, a.reason) for a in actions] == [  # type: ignore[union-attr]
        (Apply, "Service", "changed")
    ]


def test_a_hand_edit_under_an_unchanged_hash_is_drift() -> None:
    cluster = FakeCluster()
    desired = rendered(cluster)
    cluster.deployment()["spec"]["replicas"] = 5
    observed = [observe_child(obj) for obj in cluster.objects.values()]
    (action,) = plan_actions(desired, observed, MD_UID)
    assert isinstance(action, Apply)
    assert (action.reason, action.drift) == ("drifted", (".spec.replicas",))


def test_only_owned_children_outside_the_plan_are_pruned_workloads_first() -> None:
    cluster = FakeCluster()
    rendered(cluster)
    observed = [observe_child(obj) for obj in cluster.objects.values()]
    foreign = observe_child(
        {**cluster.deployment(), "metadata": {"name": "x", "namespace": "clinical-ai"}}
    )
    actions = plan_actions([], [*observed, foreign], MD_UID)
    assert all(isinstance(a, Prune) for a in actions)
    assert next(a.ref.kind for a in actions) == "Deployment"
    assert "x" not in [a.ref.name for a in actions]
    assert len(actions) == 5


def test_a_child_being_deleted_is_left_alone() -> None:
    cluster = FakeCluster()
    desired = rendered(cluster)
    deployment = cluster.deployment()
    deployment["metadata"]["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    deployment["spec"]["replicas"] = 9
    observed = [observe_child(obj) for obj in cluster.objects.values()]
    assert plan_actions(desired, observed, MD_UID) == []


def test_a_lagging_cache_does_not_trigger_a_second_write() -> None:
    cluster = FakeCluster()
    desired = rendered(cluster)
    deployment = cluster.deployment()
    ref = ChildRef.of(deployment)
    stale = observe_child({**deployment, "metadata": {**deployment["metadata"], "generation": 1}})
    stale.body["spec"]["replicas"] = 7  # what the cache held before our write landed
    others = [observe_child(o) for r, o in cluster.objects.items() if r != ref]
    written = {ref: Written(deployment["metadata"]["uid"], 2, at=100.0)}
    assert plan_actions(desired, [*others, stale], MD_UID, written=written, now=101.0) == []
    # Absent from the cache right after our write: not recreated within the grace period...
    assert plan_actions(desired, others, MD_UID, written=written, now=101.0) == []
    # ...but recreated once it has passed (or after a DELETED event clears the record).
    (action,) = plan_actions(desired, others, MD_UID, written=written, now=1000.0)
    assert isinstance(action, Apply)
    assert action.reason == "missing"
