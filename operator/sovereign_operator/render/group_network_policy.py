"""The NetworkPolicy inside one multi-node group: its pods may reach each other, nobody else.

Ports are not listed on purpose: NCCL, Gloo, Ray's object and node managers and vLLM's
native mode (torch.distributed plus its message queues) all pick ephemeral ports, so a list
would either break the group or have to open everything anyway. What is restricted is the
peer: only pods carrying this group's label, so one group (or one deployment) can never
reach into another. The deployment's engine NetworkPolicy still applies on top: the API,
DNS and the model store, exactly as for a single-node engine.
"""

from __future__ import annotations

from typing import Any

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.group_names import (
    GROUP_LABEL,
    group_labels,
    group_name,
    group_selector,
)
from sovereign_operator.render.meta import Manifest, Owner, object_meta


def render_group_network_policy(plan: ServingPlan, owner: Owner, index: int) -> Manifest:
    """All TCP, both ways, between the pods of group `index`; no UDP, no other peer."""
    group = group_name(plan.name, index, plan.template_hash)
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": {GROUP_LABEL: group}}}]
    all_tcp = [{"protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(
            group, plan.namespace, owner, group_labels(plan.name, group, index)
        ),
        "spec": {
            "podSelector": {"matchLabels": group_selector(plan.name, group)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers, "ports": all_tcp}],
            "egress": [{"to": peers, "ports": all_tcp}],
        },
    }
