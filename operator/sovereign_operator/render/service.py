"""The ClusterIP Service in front of the engine pods."""

from __future__ import annotations

from typing import Final

from sovereign_operator.planning import ENGINE_PORT, ServingPlan
from sovereign_operator.render.group_names import leader_selector
from sovereign_operator.render.meta import (
    Manifest,
    Owner,
    labels,
    object_meta,
    selector_labels,
    service_name,
)

HTTP_PORT_NAME: Final = "http"


def render_service(plan: ServingPlan, owner: Owner) -> Manifest:
    """ClusterIP only: the engine is reached inside the cluster, through the gateway.

    In a multi-node plan only each group's leader (rank 0) serves the API; the members run
    vLLM headless and must never receive requests.
    """
    multi_node = plan.topology == "multi-node"
    selector = leader_selector(plan.name) if multi_node else selector_labels(plan.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(service_name(plan.name), plan.namespace, owner, labels(plan.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": HTTP_PORT_NAME,
                    "port": ENGINE_PORT,
                    "targetPort": HTTP_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
