"""One StatefulSet per multi-node group: `pods_per_replica` pods, one per node.

Why a StatefulSet per group rather than one for all replicas: a group is the unit that
starts, fails and is replaced together, and its pods need stable names (the members find
the leader at `GROUP-0.GROUP`). Why the template hash in the name: a spec change then
creates new groups and the old ones are removed whole, so one group never mixes pods of
two templates (`updateStrategy: OnDelete` keeps the controller from rolling pods in place
when something outside the hash, such as operator settings, changes).
"""

from __future__ import annotations

from typing import Any, Final

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.group_names import (
    GROUP_LABEL,
    POD_INDEX_LABEL,
    group_labels,
    group_name,
    group_selector,
    leader_address,
)
from sovereign_operator.render.meta import Manifest, Owner, object_meta
from sovereign_operator.render.options import RenderOptions
from sovereign_operator.render.pod import PodRole, render_pod_template
from sovereign_worker import sovereignty
from sovereign_worker.engine_args import build_vllm_flags
from sovereign_worker.multinode.contract import (
    POD_IP_ENV,
    RANK_ENV,
    GroupCommand,
    group_node_args,
    group_ports,
)

PARKED_ANNOTATION: Final = "sovereign.dev/parked"
"""On a group scaled to zero after its placement timeout: when and why, for people."""
HOSTNAME_TOPOLOGY: Final = "kubernetes.io/hostname"


def group_command(plan: ServingPlan, group: str) -> GroupCommand:
    """The group command every pod of `group` runs."""
    if plan.multi_node_backend is None or plan.gpus_per_node is None:
        raise ValueError(f"{plan.name}: a {plan.topology} plan has no groups")
    return GroupCommand(
        backend=plan.multi_node_backend.value,
        nnodes=plan.pods_per_replica,
        leader_address=leader_address(group, plan.namespace),
        gpus_per_node=plan.pod.gpus,
    )


def group_pod_role(plan: ServingPlan, group: str, index: int) -> PodRole:
    """The engine pod, changed to run the group command and to spread over distinct nodes."""
    command = group_command(plan, group)
    return PodRole(
        engine_args=group_node_args(command, sovereignty.MODEL_DIR, build_vllm_flags(plan.engine)),
        extra_labels=group_labels(plan.name, group, index),
        extra_env=[
            # The downward API gives each pod its ordinal and address; the same template
            # then serves the leader (ordinal 0) and every member.
            _field_env(RANK_ENV, f"metadata.labels['{POD_INDEX_LABEL}']"),
            _field_env(POD_IP_ENV, "status.podIP"),
        ],
        extra_ports=[
            {"name": port_name, "containerPort": port, "protocol": "TCP"}
            for port_name, port in group_ports(command)
        ],
        pod_anti_affinity={
            # Required, not preferred: two pods of one group on one node would ask that
            # node for twice its GPUs, and the group could never start.
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {GROUP_LABEL: group}},
                    "topologyKey": HOSTNAME_TOPOLOGY,
                }
            ]
        },
    )


def render_group_statefulset(
    plan: ServingPlan,
    options: RenderOptions,
    owner: Owner,
    index: int,
    parked: str | None = None,
) -> Manifest:
    """The StatefulSet of replica `index`; `parked` (why, as stored) scales it to zero."""
    group = group_name(plan.name, index, plan.template_hash)
    meta = object_meta(group, plan.namespace, owner, group_labels(plan.name, group, index))
    if parked is not None:
        meta["annotations"] = {PARKED_ANNOTATION: parked}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "replicas": 0 if parked is not None else plan.pods_per_replica,
            "serviceName": group,
            # OrderedReady would deadlock: the leader waits for its members before it is
            # ready, and the members would wait for the leader to be ready before starting.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": group_selector(plan.name, group)},
            "template": render_pod_template(plan, options, group_pod_role(plan, group, index)),
        },
    }


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
