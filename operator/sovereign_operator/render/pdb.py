"""The PodDisruptionBudget that keeps voluntary evictions to one engine pod at a time."""

from __future__ import annotations

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.meta import (
    Manifest,
    Owner,
    engine_name,
    labels,
    object_meta,
    selector_labels,
)


def render_pdb(plan: ServingPlan, owner: Owner) -> Manifest:
    """maxUnavailable 1 rather than minAvailable: a single-replica deployment must still let
    a node drain finish (minAvailable 1 would block it forever), while larger ones lose at
    most one replica's capacity to drains at any moment.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(engine_name(plan.name), plan.namespace, owner, labels(plan.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(plan.name)},
            # A pod that never became ready (e.g. still loading weights) can be evicted
            # without waiting for the budget; it serves nothing yet.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
