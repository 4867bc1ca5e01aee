"""The engine Deployment of a single-node plan: one pod per replica."""

from __future__ import annotations

from typing import Final

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.meta import (
    Manifest,
    Owner,
    engine_name,
    labels,
    object_meta,
    selector_labels,
)
from sovereign_operator.render.options import RenderOptions
from sovereign_operator.render.pod import render_pod_template

# Fetching and verifying hundreds of GB, then loading them, legitimately takes long; the
# Deployment should report ProgressDeadlineExceeded only when a rollout is truly stuck.
PROGRESS_DEADLINE_SECONDS: Final = 7200
REVISION_HISTORY_LIMIT: Final = 3


def render_engine_deployment(plan: ServingPlan, options: RenderOptions, owner: Owner) -> Manifest:
    """A Deployment whose pod template is the shared engine pod."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(engine_name(plan.name), plan.namespace, owner, labels(plan.name)),
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": selector_labels(plan.name)},
            # No surge: a surge pod needs a whole replica's worth of free GPUs, which a
            # GPU cluster rarely has spare, so it would sit Pending and stall the rollout
            # (and hold back the old pods) until the progress deadline. Replacing one pod at
            # a time frees the GPUs the new pod needs; a single-replica deployment accepts a
            # short outage per rollout in exchange for rollouts that always finish.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "template": render_pod_template(plan, options),
        },
    }
