"""The headless Service of a multi-node group: stable DNS names for the group's pods.

Members find the leader at `GROUP-0.GROUP.NAMESPACE.svc`. The records are published before
the pods are ready (`publishNotReadyAddresses`), because the group forms before any pod is
ready: the leader only turns ready once its members have joined it.
"""

from __future__ import annotations

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.group_names import group_labels, group_name, group_selector
from sovereign_operator.render.group_statefulset import group_command
from sovereign_operator.render.meta import Manifest, Owner, object_meta
from sovereign_worker.multinode.contract import group_ports


def render_group_service(plan: ServingPlan, owner: Owner, index: int) -> Manifest:
    """Headless (no cluster IP, no load balancing): DNS records for each pod only."""
    group = group_name(plan.name, index, plan.template_hash)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(
            group, plan.namespace, owner, group_labels(plan.name, group, index)
        ),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": group_selector(plan.name, group),
            # Informational: DNS does not need ports, but `kubectl describe` then shows
            # what the group talks over.
            "ports": [
                {"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
                for port_name, port in group_ports(group_command(plan, group))
            ],
        },
    }
