"""Snapshots of raw objects: what the indexes keep, and what they leave out."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.observe import gpus_in_use, observe_child, observe_pod, pod_gpu_request

pytestmark = pytest.mark.unit


def raw_pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "m-engine-1",
            "namespace": "ns",
            "labels": {"sovereign.dev/deployment": "m"},
            "annotations": {"sovereign.dev/template-hash": "h1"},
        },
        "spec": {
            "nodeName": "h100-0",
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["eu"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "initContainers": [{"name": "fetch", "resources": {}}],
            "containers": [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": "4"}}}],
        },
        "status": status,
    }


def test_a_ready_pod_as_kwok_reports_it() -> None:
    snapshot = observe_pod(
        raw_pod(
            phase="Running",
            conditions=[{"type": "Ready", "status": "True"}],
            initContainerStatuses=[
                {"name": "fetch", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ],
        )
    )
    assert (snapshot.deployment, snapshot.template_hash, snapshot.node_name) == (
        "m",
        "h1",
        "h100-0",
    )
    assert (snapshot.ready, snapshot.gpus, snapshot.fetch_done, snapshot.fetch_failure) == (
        True,
        4,
        True,
        None,
    )
    assert snapshot.required_terms == ((("zone", "In", ("eu",)),),)


def test_a_failed_fetch_keeps_the_workers_message() -> None:
    snapshot = observe_pod(
        raw_pod(
            initContainerStatuses=[
                {
                    "name": "fetch",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 3, "message": "digest mismatch for config.json"}
                    },
                }
            ]
        )
    )
    assert (snapshot.fetch_done, snapshot.fetch_failure) == (
        False,
        "digest mismatch for config.json",
    )


def test_an_unschedulable_pod_keeps_the_schedulers_message() -> None:
    snapshot = observe_pod(
        raw_pod(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/8 nodes",
                }
            ]
        )
    )
    assert snapshot.unschedulable == "0/8 nodes"


def test_a_crash_loop_is_reported_with_the_last_termination() -> None:
    snapshot = observe_pod(
        raw_pod(
            containerStatuses=[
                {
                    "name": "engine",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "CUDA out of memory"}},
                }
            ]
        )
    )
    assert snapshot.crash == "CrashLoopBackOff after 4 restarts: CUDA out of memory"


def test_gpu_requests_follow_the_schedulers_init_container_rule() -> None:
    spec = {
        "initContainers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}}],
        "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
            {"resources": {"requests": {"nvidia.com/gpu": "1"}}},
        ],
    }
    assert pod_gpu_request(spec) == 2
    spec["initContainers"] = []
    assert pod_gpu_request(spec) == 2


def test_usage_counts_only_pods_holding_their_node() -> None:
    def gpu_pod(node: str, phase: str, gpus: int) -> dict[str, Any]:
        return {
            "spec": {
                "nodeName": node,
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
            },
            "status": {"phase": phase},
        }

    pods = [
        gpu_pod("a", "Running", 4),
        gpu_pod("a", "Pending", 2),
        gpu_pod("a", "Succeeded", 8),
        gpu_pod("", "Pending", 8),
    ]
    assert gpus_in_use(pods) == {"a": 6}


def test_child_snapshots_drop_managed_fields_and_non_workload_status() -> None:
    service = observe_child(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "m",
                "namespace": "ns",
                "uid": "u1",
                "labels": {"sovereign.dev/deployment": "m"},
                "managedFields": [{"manager": "x"}],
                "ownerReferences": [{"uid": "owner", "controller": True}],
            },
            "spec": {"ports": []},
            "status": {"loadBalancer": {}},
        }
    )
    assert "managedFields" not in service.body["metadata"]
    assert (service.owner_uid, service.deployment, service.status) == ("owner", "m", {})
    deployment = observe_child(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "status": {"replicas": 2},
        }
    )
    assert deployment.status == {"replicas": 2}
