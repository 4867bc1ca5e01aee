"""ServingPlan -> child manifests (pure): one module per child kind, plain JSON-ready dicts.

`render_children` is the one entry point the reconciler and `sovereign render` use.
"""

from __future__ import annotations

from sovereign_operator.api.model_deployment import EngineKind
from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.engine_deployment import render_engine_deployment
from sovereign_operator.render.meta import SPEC_HASH_ANNOTATION, Manifest, Owner, with_spec_hash
from sovereign_operator.render.network_policy import render_network_policy
from sovereign_operator.render.options import RenderOptions
from sovereign_operator.render.pdb import render_pdb
from sovereign_operator.render.service import render_service
from sovereign_operator.render.service_account import render_service_account

__all__ = [
    "SPEC_HASH_ANNOTATION",
    "Manifest",
    "Owner",
    "RenderOptions",
    "UnsupportedPlanError",
    "render_children",
]


class UnsupportedPlanError(NotImplementedError):
    """A valid plan this version cannot render yet; the message names what is missing."""


def render_children(
    plan: ServingPlan, options: RenderOptions, owner: Owner | None = None
) -> list[Manifest]:
    """Every child of a ModelDeployment, each carrying its spec-hash, in apply order.

    Without an owner (or one without a uid, as in `sovereign render` with no cluster) the
    children carry no ownerReferences.

    The NetworkPolicy is applied before the Deployment so that no engine pod ever runs
    without its isolation, and the ServiceAccount before the pods that name it.
    """
    _check_supported(plan)
    owner = owner or Owner.model_deployment(plan.name)
    children = [
        render_service_account(plan, owner),
        render_network_policy(plan, options, owner),
        render_service(plan, owner),
        render_pdb(plan, owner),
        render_engine_deployment(plan, options, owner),
    ]
    return [with_spec_hash(child) for child in children]


def _check_supported(plan: ServingPlan) -> None:
    """Refuse plans whose renderer does not exist yet, rather than render something wrong."""
    if plan.topology != "single-node":
        raise UnsupportedPlanError(
            f"{plan.name}: a {plan.topology} plan ({plan.pods_per_replica} pods per replica, "
            f"tensor x pipeline {plan.parallelism}) needs the multi-node group renderer "
            "(a StatefulSet per group, a headless Service, a group NetworkPolicy), which this "
            "version does not have; give each replica at most one node's GPUs for now"
        )
    if plan.spec.engine.kind is not EngineKind.VLLM:
        raise UnsupportedPlanError(
            f"{plan.name}: engine kind {plan.spec.engine.kind.value} needs its own serve "
            "command in the engine pod, which this version does not render yet; use "
            "engine.kind vllm for now"
        )
