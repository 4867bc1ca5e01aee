"""GPU shortage messages: how many GPUs a pod needs and how many the best node has free."""

from __future__ import annotations

import pytest

from sovereign_operator.capacity import gpu_shortage, gpus_per_node_by_type
from sovereign_operator.observe import Taint, Toleration, observe_node
from tests.unit.operator.fakes import CLUSTER_NODES, H100, L40S, node, pod

pytestmark = pytest.mark.unit

H100_POD = {"nvidia.com/gpu.product": H100}


def test_gpus_per_node_by_type_takes_the_largest_node_of_each_product() -> None:
    nodes = [*CLUSTER_NODES, node("h100-small", H100, 4)]
    assert gpus_per_node_by_type(nodes) == {H100: 8, L40S: 4}


def test_busy_nodes_give_the_largest_free_count() -> None:
    used = {"h100-0": 8, "h100-1": 6, "h100-2": 4, "h100-3": 8}
    wants_eight = pod(gpus=8, node_selector=H100_POD, unschedulable="...")
    assert gpu_shortage(wants_eight, CLUSTER_NODES, used) == (
        "needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3, largest free is 4 (on h100-2)"
    )


def test_more_gpus_than_any_node_has_says_so() -> None:
    huge = pod(gpus=16, unschedulable="...")
    message = gpu_shortage(huge, CLUSTER_NODES, {})
    assert message == (
        "needs 16 nvidia.com/gpu on one node, largest free is 8 "
        "(on h100-3, NVIDIA-H100-80GB-HBM3); no matching node has more than 8 in total"
    )


def test_a_node_with_enough_free_gpus_means_gpus_are_not_the_problem() -> None:
    assert (
        gpu_shortage(pod(gpus=4, node_selector=H100_POD, unschedulable="..."), CLUSTER_NODES, {})
        is None
    )


def test_no_node_matching_the_placement_is_named_as_such() -> None:
    resident = pod(
        gpus=8,
        node_selector={**H100_POD, "node-restriction.kubernetes.io/region": "eu-central"},
        unschedulable="...",
    )
    message = gpu_shortage(resident, CLUSTER_NODES, {})
    assert message is not None
    assert "no ready, schedulable node matches the placement" in message
    assert "node-restriction.kubernetes.io/region=eu-central" in message


def test_untolerated_taints_and_cordoned_nodes_do_not_count() -> None:
    tainted = observe_node(
        {
            "metadata": {"name": "h100-t", "labels": {"nvidia.com/gpu.product": H100}},
            "spec": {"taints": [{"key": "dedicated", "value": "training", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    cordoned = observe_node(
        {
            "metadata": {"name": "h100-c", "labels": {"nvidia.com/gpu.product": H100}},
            "spec": {"unschedulable": True},
            "status": {
                "allocatable": {"nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    busy = node("h100-busy", H100, 8)
    message = gpu_shortage(
        pod(gpus=8, node_selector=H100_POD, unschedulable="..."),
        [tainted, cordoned, busy],
        {"h100-busy": 8},
    )
    assert message is not None
    assert "largest free is 0 (on h100-busy)" in message


def test_tolerations_follow_the_schedulers_rule() -> None:
    gpu_taint = Taint("nvidia.com/gpu", "", "NoSchedule")
    assert Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule").tolerates(gpu_taint)
    assert Toleration("", "Exists", "", "").tolerates(gpu_taint)
    assert not Toleration("other", "Exists", "", "").tolerates(gpu_taint)
    assert not Toleration("nvidia.com/gpu", "Equal", "x", "NoSchedule").tolerates(gpu_taint)


def test_pods_without_gpus_have_no_gpu_shortage() -> None:
    assert gpu_shortage(pod(gpus=0, unschedulable="..."), CLUSTER_NODES, {}) is None
