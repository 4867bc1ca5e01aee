"""The children a ModelDeployment should have: its spec parsed, planned and rendered.

Planning and rendering are pure and most of a pass's cost, so a rendering is reused while
nothing it depends on changed (spec generation, cluster facts, parked groups). Multi-node
groups past their placement timeout are rendered parked (no pods); `gpu_shortage_for`
says what the cluster lacks for the pods or groups that cannot be placed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import InvalidSpec, parse
from sovereign_operator.capacity import gpu_shortage, gpus_per_node_by_type
from sovereign_operator.groups import (
    ObservedGroup,
    current_groups,
    decide_parking,
    parking_pending,
    shortage_of,
)
from sovereign_operator.hooks import DeploymentKey, PolicyVerdict
from sovereign_operator.observe import NodeSnapshot, PodSnapshot
from sovereign_operator.planning import ClusterFacts, ServingPlan, plan
from sovereign_operator.reconcile_context import (
    ApiError,
    ChildWriter,
    Observation,
    ReconcileContext,
)
from sovereign_operator.render import Manifest, Owner, UnsupportedPlanError, render_children
from sovereign_operator.status import Refusal


@dataclass(frozen=True)
class Desired:
    """What a pass wants: the parsed spec, its plan and rendered children, or the refusal
    that says why there are none."""

    spec: ModelDeploymentSpec | None
    plan: ServingPlan | None = None
    children: tuple[Manifest, ...] = ()
    refusal: Refusal | None = None
    parked: Mapping[str, str] = field(default_factory=dict)
    """Multi-node groups rendered with no pods after their placement timeout -> why."""

    @property
    def multi_node(self) -> bool:
        return self.plan is not None and self.plan.topology == "multi-node"


class GpuUsage:
    """The cluster's GPU usage, read at most once per pass and only when a pass needs it
    (it is a cluster-wide read)."""

    def __init__(self, writer: ChildWriter) -> None:
        self._writer = writer
        self._read = False
        self._value: Mapping[str, int] | None = None

    async def get(self) -> Mapping[str, int] | None:
        """None when the API server did not answer (callers then say less, not wrong)."""
        if not self._read:
            self._read = True
            try:
                self._value = await self._writer.gpu_usage()
            except ApiError:
                self._value = None
        return self._value


async def desired_state(
    key: DeploymentKey,
    generation: int,
    raw_spec: Any,
    observation: Observation,
    *,
    groups: Sequence[ObservedGroup],
    ctx: ReconcileContext,
    usage: GpuUsage,
) -> tuple[Desired, PolicyVerdict | None]:
    """The desired children (reused while unchanged) and the policy verdict on the spec."""
    try:
        spec = parse(ModelDeploymentSpec, raw_spec, prefix="spec")
    except InvalidSpec as invalid:
        return Desired(None, refusal=Refusal("InvalidSpec", str(invalid))), None
    # A policy violation is not a refusal here: the spec is still planned, so the status
    # can tell what runs from what is held (see `_policy_hold`).
    verdict = await ctx.hooks.policy(key, spec)
    facts = ClusterFacts(
        gpus_per_node_by_type=gpus_per_node_by_type(observation.nodes),
        default_image=ctx.default_image,
        allow_trust_remote_code=verdict.allow_trust_remote_code,
    )
    # Rendering (and hashing every child) is most of a pass's cost, and watch-driven passes
    # repeat it for an unchanged spec: reuse it while nothing it depends on has changed.
    # A spec change always bumps metadata.generation.
    source = (
        key.uid,
        generation,
        tuple(sorted(facts.gpus_per_node_by_type.items())),
        facts.default_image,
        facts.allow_trust_remote_code,
    )
    # Parked groups change the rendering without a spec change, so they are part of the key.
    cached = ctx.rendered.get((key.namespace, key.name))
    previous = cached[1] if cached is not None and cached[0][0] == source else None
    planned = previous or _plan(key, spec, facts)
    parked = await _parking(
        planned, groups, observation=observation, ctx=ctx, usage=usage, previous=previous
    )
    rendering = (source, tuple(sorted(parked.items())))
    if cached is not None and cached[0] == rendering:
        return cached[1], verdict
    desired = _render(key, planned, parked, ctx)
    ctx.rendered[(key.namespace, key.name)] = (rendering, desired)
    return desired, verdict


def _plan(key: DeploymentKey, spec: ModelDeploymentSpec, facts: ClusterFacts) -> Desired:
    try:
        return Desired(spec, plan(key.name, key.namespace, spec, facts))
    except InvalidSpec as invalid:
        return Desired(spec, refusal=Refusal("InvalidSpec", str(invalid).replace("\n", "; ")))


def _render(
    key: DeploymentKey, planned: Desired, parked: Mapping[str, str], ctx: ReconcileContext
) -> Desired:
    serving = planned.plan
    if planned.refusal is not None or serving is None:
        return planned
    owner = Owner.model_deployment(key.name, key.uid)
    try:
        children = render_children(serving, ctx.options, owner, parked)
    except UnsupportedPlanError as unsupported:
        return Desired(planned.spec, serving, refusal=Refusal("UnsupportedPlan", str(unsupported)))
    return Desired(planned.spec, serving, tuple(children), parked=dict(parked))


async def _parking(
    planned: Desired,
    groups: Sequence[ObservedGroup],
    *,
    observation: Observation,
    ctx: ReconcileContext,
    usage: GpuUsage,
    previous: Desired | None,
) -> dict[str, str]:
    """The multi-node groups to render with no pods (see `groups.decide_parking`)."""
    serving = planned.plan
    if planned.refusal is not None or serving is None or not planned.multi_node:
        return {}
    now = ctx.now()
    timeout = timedelta(seconds=serving.spec.multi_node.placement_timeout)
    current = current_groups(groups, serving.template_hash)
    if not parking_pending(current, now, timeout):
        return {}
    return decide_parking(
        current,
        now,
        timeout,
        nodes=observation.nodes,
        used=await usage.get(),
        pods_per_group=serving.pods_per_replica,
        previous=previous.parked if previous is not None else {},
    )


async def gpu_shortage_for(
    stuck: Sequence[PodSnapshot],
    desired: Desired,
    groups: Sequence[ObservedGroup],
    nodes: Sequence[NodeSnapshot],
    usage: GpuUsage,
) -> str | None:
    """What the cluster lacks for the pods that cannot be placed, or for a parked group
    (whose pods are gone) to come back; None when GPUs are not what is missing."""
    if not stuck and not desired.parked:
        return None
    used = await usage.get()
    if used is None:
        return None  # the scheduler's own message is still reported
    if desired.multi_node and desired.plan is not None:
        first = stuck[0] if stuck else None
        found = shortage_of(
            first,
            groups,
            parked=desired.parked,
            nodes=nodes,
            used=used,
            pods_per_group=desired.plan.pods_per_replica,
        )
        if found is not None or first is None or first.group:
            return found
    return gpu_shortage(stuck[0], nodes, used) if stuck else None
