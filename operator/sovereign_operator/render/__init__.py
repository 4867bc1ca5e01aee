"""ServingPlan -> child manifests (pure): one module per child kind, plain JSON-ready dicts.

`render_children` is the one entry point the reconciler and `sovereign render` use.
"""

from __future__ import annotations

from collections.abc import Mapping

from sovereign_operator.api.model_deployment import EngineKind
from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.engine_deployment import render_engine_deployment
from sovereign_operator.render.group_names import group_name
from sovereign_operator.render.group_network_policy import render_group_network_policy
from sovereign_operator.render.group_service import render_group_service
from sovereign_operator.render.group_statefulset import render_group_statefulset
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


# Engine kinds whose engine container args exist (render.pod.serve_args); a kind added to
# the API before its serve command is refused here rather than rendered as vLLM.
_RENDERED_ENGINES = frozenset({EngineKind.VLLM, EngineKind.DIFFUSERS})


class UnsupportedPlanError(NotImplementedError):
    """A valid plan this version cannot render yet; the message names what is missing."""


def render_children(
    plan: ServingPlan,
    options: RenderOptions,
    owner: Owner | None = None,
    parked: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """Every child of a ModelDeployment, each carrying its spec-hash, in apply order.

    Without an owner (or one without a uid, as in `sovereign render` with no cluster) the
    children carry no ownerReferences. `parked` maps the names of multi-node groups that
    exceeded their placement timeout to the note their StatefulSet keeps (see `groups`);
    those groups are rendered with no pods.

    NetworkPolicies are applied before the workloads so that no engine pod ever runs
    without its isolation, and the ServiceAccount before the pods that name it.
    """
    _check_supported(plan)
    owner = owner or Owner.model_deployment(plan.name)
    head = [render_service_account(plan, owner), render_network_policy(plan, options, owner)]
    if plan.topology == "multi-node":
        children = [*head, *_group_children(plan, options, owner, parked or {})]
    else:
        children = [
            *head,
            render_service(plan, owner),
            render_pdb(plan, owner),
            render_engine_deployment(plan, options, owner),
        ]
    return [with_spec_hash(child) for child in children]


def _group_children(
    plan: ServingPlan, options: RenderOptions, owner: Owner, parked: Mapping[str, str]
) -> list[Manifest]:
    """Per group (replica): a NetworkPolicy, a headless Service and a StatefulSet."""
    indices = range(plan.replicas)
    names = [group_name(plan.name, index, plan.template_hash) for index in indices]
    return [
        *(render_group_network_policy(plan, owner, index) for index in indices),
        render_service(plan, owner),
        render_pdb(plan, owner),
        *(render_group_service(plan, owner, index) for index in indices),
        *(
            render_group_statefulset(plan, options, owner, index, parked.get(names[index]))
            for index in indices
        ),
    ]


def _check_supported(plan: ServingPlan) -> None:
    """Refuse plans whose renderer does not exist yet, rather than render something wrong."""
    if plan.spec.engine.kind not in _RENDERED_ENGINES:
        raise UnsupportedPlanError(
            f"{plan.name}: engine kind {plan.spec.engine.kind.value} needs its own serve "
            "command in the engine pod, which this version does not render yet; use "
            "engine.kind vllm or diffusers"
        )
