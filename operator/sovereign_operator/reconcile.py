"""One reconcile pass: desired vs observed -> actions, their execution, a truthful status.

`reconcile` runs one level-based pass for one ModelDeployment: plan and render the
children (pure), compare them with what the cluster holds (`actions.plan_actions`, pure),
act through a `ChildWriter`, compute the status from what was observed (`status`, pure),
and write it only when it changed. It never imports a Kubernetes client or kopf: the
writer is `kube.KubeWriter` in the operator and an in-memory fake in unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sovereign_operator.actions import Action, Apply, Written, plan_actions
from sovereign_operator.api.model_deployment import ModelDeploymentSpec, PlanStatus
from sovereign_operator.desired import Desired, GpuUsage, desired_state, gpu_shortage_for
from sovereign_operator.groups import (
    ObservedGroup,
    current_groups,
    next_placement_deadline,
    observe_groups,
    summarize,
)
from sovereign_operator.hooks import AuditHook, DeploymentKey, OperatorAction, PolicyVerdict
from sovereign_operator.observe import WORKLOAD_KINDS, ChildRef
from sovereign_operator.planning import ENGINE_PORT, ServingPlan
from sovereign_operator.reconcile_context import (
    ApiError,
    ChildWriter,
    Observation,
    Outcome,
    ReconcileContext,
    StatusMemo,
)
from sovereign_operator.render.group_names import leader_selector
from sovereign_operator.render.meta import engine_name, selector_labels, service_name
from sovereign_operator.status import Observed, compute_status, parse_previous, status_patch

__all__ = [  # the pass's vocabulary, for callers that import it from here
    "ApiError",
    "ChildWriter",
    "Observation",
    "Outcome",
    "ReconcileContext",
    "StatusMemo",
    "reconcile",
]


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
        audit_id = ctx.writer.take_audit_id(action.ref)
        await audit(_action_record(key, action, ctx.now(), responses.get(action.ref), audit_id))
    return done, responses, None


def _action_record(
    key: DeploymentKey,
    action: Action,
    now: datetime,
    response: Mapping[str, Any] | None,
    audit_id: str | None,
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
            audit_id=audit_id,
        )
    return OperatorAction(
        key,
        "delete",
        str(action.ref),
        "not in the current plan",
        "",
        now,
        target_uid=action.child.uid or None,
        audit_id=audit_id,
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
    usage = GpuUsage(ctx.writer)
    desired, verdict = await desired_state(
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
    shortage = await gpu_shortage_for(stuck, desired, groups, observation.nodes, usage)
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
    desired: Desired, groups: Sequence[ObservedGroup], now: datetime
) -> float | None:
    serving = desired.plan
    if not desired.multi_node or serving is None:
        return None
    timeout = timedelta(seconds=serving.spec.multi_node.placement_timeout)
    deadline = next_placement_deadline(current_groups(groups, serving.template_hash), timeout)
    if deadline is None:
        return None
    return max((deadline - now).total_seconds(), 0.0) + 1.0  # just past it, not just before
