"""One reconcile pass: desired vs observed -> actions, their execution, a truthful status.

`reconcile` runs one level-based pass for one ModelDeployment: plan and render the
children (pure), compare them with what the cluster holds (`actions.plan_actions`, pure),
act through a `ChildWriter`, compute the status from what was observed (`status`, pure),
and write it only when it changed. It never imports a Kubernetes client or kopf: the
writer is `kube.KubeWriter` in the operator and an in-memory fake in unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from sovereign_operator.actions import Action, Apply, Written, plan_actions
from sovereign_operator.api.model_deployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PlanStatus,
)
from sovereign_operator.api.problems import InvalidSpec, parse
from sovereign_operator.capacity import gpu_shortage, gpus_per_node_by_type
from sovereign_operator.groups import (
    ObservedGroup,
    current_groups,
    decide_parking,
    next_placement_deadline,
    observe_groups,
    parking_pending,
    shortage_of,
    summarize,
)
from sovereign_operator.hooks import (
    AuditHook,
    DeploymentKey,
    Hooks,
    OperatorAction,
    PolicyVerdict,
)
from sovereign_operator.observe import (
    WORKLOAD_KINDS,
    ChildRef,
    NodeSnapshot,
    ObservedChild,
    PodSnapshot,
)
from sovereign_operator.planning import (
    DEFAULT_ENGINE_IMAGE,
    ENGINE_PORT,
    ClusterFacts,
    ServingPlan,
    plan,
)
from sovereign_operator.render import (
    Manifest,
    Owner,
    RenderOptions,
    UnsupportedPlanError,
    render_children,
)
from sovereign_operator.render.group_names import leader_selector
from sovereign_operator.render.meta import engine_name, selector_labels, service_name
from sovereign_operator.status import (
    Observed,
    Refusal,
    Transition,
    compute_status,
    parse_previous,
    status_patch,
)


class ApiError(Exception):
    """A request the API server refused or never answered (after retries), with what it said."""

    def __init__(self, target: str, code: int | None, message: str) -> None:
        self.target = target
        self.code = code
        super().__init__(f"{target}: {code or 'no response'}: {message}")


class ChildWriter(Protocol):
    """The writes (and the one cluster-wide read) reconcile needs."""

    async def apply(self, manifest: Manifest) -> Mapping[str, Any]: ...

    async def delete(self, ref: ChildRef, uid: str, *, foreground: bool = False) -> None: ...

    def take_audit_id(self, ref: ChildRef) -> str | None:
        """The API server's Audit-ID of the last write of `ref` (None if unknown), once."""
        ...

    async def patch_status(self, key: DeploymentKey, patch: Mapping[str, Any]) -> None: ...

    async def gpu_usage(self) -> Mapping[str, int]:
        """nvidia.com/gpu requested per node by all scheduled pods in the cluster."""
        ...


@dataclass(frozen=True)
class Observation:
    """This ModelDeployment's children and engine pods, and the cluster's nodes."""

    children: Sequence[ObservedChild] = ()
    pods: Sequence[PodSnapshot] = ()
    nodes: Sequence[NodeSnapshot] = ()


@dataclass
class StatusMemo:
    """The status we last wrote, and the ones it replaced (most recent last).

    Watch-driven passes read the ModelDeployment from a cache that may not have our own
    last status write yet. Seeing a status we already replaced means "stale", not "someone
    changed it": the pass then continues from what we wrote, so it neither repeats the
    write nor posts the same transition Event twice.
    """

    written: ModelDeploymentStatus
    superseded: list[ModelDeploymentStatus | None] = field(default_factory=list)

    KEEP: ClassVar[int] = 8

    def resolve(self, observed: ModelDeploymentStatus | None) -> ModelDeploymentStatus | None:
        return self.written if observed in self.superseded else observed

    def record(
        self, replaced: ModelDeploymentStatus | None, written: ModelDeploymentStatus
    ) -> None:
        self.superseded = [*self.superseded, replaced, self.written][-self.KEEP :]
        self.written = written


@dataclass(frozen=True)
class ReconcileContext:
    writer: ChildWriter
    options: RenderOptions = field(default_factory=RenderOptions)
    hooks: Hooks = field(default_factory=Hooks)
    default_image: str = DEFAULT_ENGINE_IMAGE
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    written: MutableMapping[ChildRef, Written] = field(default_factory=dict)
    """Our last write of each child; shared across passes, cleared when a child is deleted."""
    statuses: MutableMapping[tuple[str, str], StatusMemo] = field(default_factory=dict)
    """Our last status write per ModelDeployment (namespace, name)."""
    rendered: MutableMapping[tuple[str, str], tuple[tuple[Hashable, Hashable], _Desired]] = field(
        default_factory=dict
    )
    """The last rendering per ModelDeployment and what it was rendered from: (the spec and
    cluster facts it was planned from, the groups it parked)."""
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Outcome:
    """What one pass did and found."""

    key: DeploymentKey
    actions: tuple[Action, ...] = ()
    transitions: tuple[Transition, ...] = ()
    status_written: bool = False
    phase: str = ""
    desired_replicas: int = 0
    ready_replicas: int = 0
    error: ApiError | None = None
    refused: bool = False
    recheck_after: float | None = None
    """Seconds until a deadline this pass found (a group's placement timeout) runs out: the
    operator passes again then, since no watch event marks that moment."""

    @property
    def writes(self) -> int:
        return len(self.actions) + int(self.status_written)

    @property
    def result(self) -> str:
        """For metrics: error, refused, changed (something written) or noop."""
        if self.error is not None:
            return "error"
        if self.refused:
            return "refused"
        return "changed" if self.writes else "noop"


@dataclass(frozen=True)
class _Desired:
    spec: ModelDeploymentSpec | None
    plan: ServingPlan | None = None
    children: tuple[Manifest, ...] = ()
    refusal: Refusal | None = None
    parked: Mapping[str, str] = field(default_factory=dict)
    """Multi-node groups rendered with no pods after their placement timeout -> why."""

    @property
    def multi_node(self) -> bool:
        return self.plan is not None and self.plan.topology == "multi-node"


class _Usage:
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


async def _desired(
    key: DeploymentKey,
    generation: int,
    raw_spec: Any,
    observation: Observation,
    *,
    groups: Sequence[ObservedGroup],
    ctx: ReconcileContext,
    usage: _Usage,
) -> tuple[_Desired, PolicyVerdict | None]:
    try:
        spec = parse(ModelDeploymentSpec, raw_spec, prefix="spec")
    except InvalidSpec as invalid:
        return _Desired(None, refusal=Refusal("InvalidSpec", str(invalid))), None
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


def _plan(key: DeploymentKey, spec: ModelDeploymentSpec, facts: ClusterFacts) -> _Desired:
    try:
        return _Desired(spec, plan(key.name, key.namespace, spec, facts))
    except InvalidSpec as invalid:
        return _Desired(spec, refusal=Refusal("InvalidSpec", str(invalid).replace("\n", "; ")))


def _render(
    key: DeploymentKey, planned: _Desired, parked: Mapping[str, str], ctx: ReconcileContext
) -> _Desired:
    serving = planned.plan
    if planned.refusal is not None or serving is None:
        return planned
    owner = Owner.model_deployment(key.name, key.uid)
    try:
        children = render_children(serving, ctx.options, owner, parked)
    except UnsupportedPlanError as unsupported:
        return _Desired(planned.spec, serving, refusal=Refusal("UnsupportedPlan", str(unsupported)))
    return _Desired(planned.spec, serving, tuple(children), parked=dict(parked))


async def _parking(
    planned: _Desired,
    groups: Sequence[ObservedGroup],
    *,
    observation: Observation,
    ctx: ReconcileContext,
    usage: _Usage,
    previous: _Desired | None,
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


def plan_status(serving: ServingPlan) -> PlanStatus:
    return PlanStatus(
        topology=serving.topology,
        tensor=serving.tensor,
        pipeline=serving.pipeline,
        nodes_per_replica=serving.pods_per_replica,
        gpus_per_pod=serving.pod.gpus,
        gpu_type=serving.spec.resources.gpu_type,
        image=serving.image,
        parallelism=serving.parallelism,
    )


def endpoint(key: DeploymentKey) -> str:
    """The in-cluster URL of the OpenAI-compatible API (cluster-domain independent)."""
    return f"http://{service_name(key.name)}.{key.namespace}.svc:{ENGINE_PORT}/v1"


def selector(name: str, multi_node: bool = False) -> str:
    """status.selector, which the scale subresource (and so an HPA) counts replicas by:
    for multi-node plans only the groups' leaders, one pod per replica."""
    labels = leader_selector(name) if multi_node else selector_labels(name)
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


async def _shortage(
    stuck: Sequence[PodSnapshot],
    desired: _Desired,
    groups: Sequence[ObservedGroup],
    nodes: Sequence[NodeSnapshot],
    usage: _Usage,
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


async def _execute(
    key: DeploymentKey, actions: Sequence[Action], ctx: ReconcileContext, audit: AuditHook
) -> tuple[list[Action], dict[ChildRef, Mapping[str, Any]], ApiError | None]:
    """Run actions in order, stopping at the first refusal: a NetworkPolicy that failed
    must not be followed by the Deployment it was meant to isolate."""
    done: list[Action] = []
    responses: dict[ChildRef, Mapping[str, Any]] = {}
    for action in actions:
        try:
            if isinstance(action, Apply):
                response = await ctx.writer.apply(action.manifest)
                responses[action.ref] = response
                meta = response.get("metadata") or {}
                ctx.written[action.ref] = Written(
                    str(meta.get("uid", "")),
                    int(meta.get("generation") or 0),
                    ctx.monotonic(),
                    str(meta.get("resourceVersion", "")),
                )
            else:
                workload = action.ref.kind in WORKLOAD_KINDS
                await ctx.writer.delete(action.ref, action.child.uid, foreground=workload)
                ctx.written.pop(action.ref, None)
        except ApiError as error:
            return done, responses, error
        done.append(action)
        record = _action_record(key, action, ctx.now(), responses.get(action.ref))
        await audit(replace(record, audit_id=ctx.writer.take_audit_id(action.ref)))
    return done, responses, None


def _action_record(
    key: DeploymentKey, action: Action, now: datetime, response: Mapping[str, Any] | None
) -> OperatorAction:
    if isinstance(action, Apply):
        detail = ", ".join(action.drift[:8])
        meta = (response or {}).get("metadata") or {}
        return OperatorAction(
            key,
            "apply",
            str(action.ref),
            action.reason,
            detail,
            now,
            target_uid=meta.get("uid"),
            target_generation=meta.get("generation"),
        )
    return OperatorAction(
        key,
        "delete",
        str(action.ref),
        "not in the current plan",
        "",
        now,
        target_uid=action.child.uid or None,
    )


def _stamped(audit: AuditHook, generation: int, spec: ModelDeploymentSpec | None) -> AuditHook:
    """The audit hook, with what every record of this pass carries: generation and model."""

    async def record(action: OperatorAction) -> None:
        model = spec.model if spec is not None else None
        await audit(
            replace(
                action,
                generation=generation,
                model_source=model.source if model else None,
                model_digest=model.digest if model else None,
            )
        )

    return record


def _engine_workload(
    key: DeploymentKey,
    observation: Observation,
    responses: Mapping[ChildRef, Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    """generation + status of the engine Deployment: the apply response when we just wrote
    it (fresher than the watch), else the observed object."""
    for ref, response in responses.items():
        if ref.kind == "Deployment" and ref.name == engine_name(key.name):
            meta = response.get("metadata") or {}
            return {"generation": meta.get("generation"), "status": response.get("status") or {}}
    for child in observation.children:
        if child.ref.kind == "Deployment" and child.ref.name == engine_name(key.name):
            return (
                None if child.deleting else {"generation": child.generation, "status": child.status}
            )
    return None


async def reconcile(
    md: Mapping[str, Any], observation: Observation, ctx: ReconcileContext
) -> Outcome:
    """One level-based pass for one ModelDeployment; safe to run any number of times."""
    meta = md.get("metadata") or {}
    key = DeploymentKey(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")))
    if meta.get("deletionTimestamp"):
        return Outcome(key)
    generation = int(meta.get("generation") or 0)
    groups = observe_groups(observation.children, observation.pods, key.uid)
    usage = _Usage(ctx.writer)
    desired, verdict = await _desired(
        key, generation, md.get("spec"), observation, groups=groups, ctx=ctx, usage=usage
    )
    actions: list[Action] = []
    if desired.refusal is None:
        actions = plan_actions(
            desired.children,
            observation.children,
            key.uid,
            written=ctx.written,
            now=ctx.monotonic(),
        )
    audit_health = ctx.hooks.audit_health()
    policy_hold = _policy_hold(verdict)
    withheld = 0
    if policy_hold is not None or (audit_health is not None and audit_health.pause):
        # A policy that forbids the spec, or audit.failurePolicy: pause while the trail
        # cannot record: nothing is changed, what runs is left alone, the status says why.
        withheld, actions = len(actions), []
    audit = _stamped(ctx.hooks.audit, generation, desired.spec)
    done, responses, error = await _execute(key, actions, ctx, audit)

    memo = ctx.statuses.get((key.namespace, key.name))
    previous = parse_previous(md.get("status"))
    if memo is not None:
        previous = memo.resolve(previous)
    spec = desired.spec
    template_hash = desired.plan.template_hash if desired.plan else None
    stuck = [
        p
        for p in observation.pods
        if p.unschedulable and p.template_hash == template_hash and not p.deleting
    ]
    shortage = await _shortage(stuck, desired, groups, observation.nodes, usage)
    observed = Observed(
        generation=generation,
        spec=spec,
        plan=plan_status(desired.plan) if desired.plan else None,
        template_hash=template_hash,
        refusal=desired.refusal,
        deployment=_engine_workload(key, observation, responses),
        pods=observation.pods,
        groups=summarize(groups, template_hash or "", spec.replicas, desired.parked)
        if desired.multi_node and spec is not None
        else None,
        shortage=shortage,
        apply_error=str(error) if error else None,
        policy=verdict or PolicyVerdict(),
        autoscaler=ctx.hooks.autoscaler(key, spec) if spec is not None else None,
        audit=audit_health,
        withheld=withheld,
        policy_hold=policy_hold,
        selector=selector(key.name, desired.multi_node),
        endpoint=endpoint(key),
    )
    status, transitions = compute_status(observed, previous, ctx.now())
    patch = status_patch(status, previous)
    if patch is not None:
        try:
            await ctx.writer.patch_status(key, patch)
        except ApiError as failed:
            return Outcome(
                key,
                tuple(done),
                error=error or failed,
                refused=desired.refusal is not None or policy_hold is not None,
            )
        if memo is None:
            ctx.statuses[(key.namespace, key.name)] = StatusMemo(status, [previous])
        else:
            memo.record(previous, status)
    for transition in transitions:
        await audit(
            OperatorAction(
                key,
                "condition",
                transition.type,
                transition.reason,
                transition.message,
                ctx.now(),
                {"status": transition.status, "previous": transition.previous or ""},
            )
        )
    return Outcome(
        key=key,
        actions=tuple(done),
        transitions=tuple(transitions),
        status_written=patch is not None,
        phase=status.phase.value,
        desired_replicas=spec.replicas if spec is not None else 0,
        ready_replicas=status.ready_replicas,
        error=error,
        refused=desired.refusal is not None or policy_hold is not None,
        recheck_after=_placement_recheck(desired, groups, ctx.now()),
    )


def _policy_hold(verdict: PolicyVerdict | None) -> str | None:
    """Why a ModelPolicy forbids rolling out this spec (None: it may be rolled out)."""
    if verdict is None or not verdict.enforce or verdict.status != "False":
        return None
    return verdict.message


def _placement_recheck(
    desired: _Desired, groups: Sequence[ObservedGroup], now: datetime
) -> float | None:
    serving = desired.plan
    if not desired.multi_node or serving is None:
        return None
    timeout = timedelta(seconds=serving.spec.multi_node.placement_timeout)
    deadline = next_placement_deadline(current_groups(groups, serving.template_hash), timeout)
    if deadline is None:
        return None
    return max((deadline - now).total_seconds(), 0.0) + 1.0  # just past it, not just before
