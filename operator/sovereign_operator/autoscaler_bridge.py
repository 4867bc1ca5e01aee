"""The autoscaling loop's hands on the cluster: what to scrape, how to scale, what to report.

`autoscaling.loop.AutoscalerLoop` is cluster-agnostic; this module gives it the three
callables it needs, built on what the operator already has:

- `list_deployments` reads the kopf indexes the handlers keep (ModelDeployments, and one
  `EngineEndpoint` per engine pod from the same pod watch the reconciler uses), so a tick
  costs no API request. A single-node replica is one pod; a multi-node group is scraped
  at its leader (rank 0), the only pod whose vLLM serves the API and its /metrics.
- `apply_scale` patches the ModelDeployment's `/scale` subresource (the only path the
  autoscaler writes replicas through), guarded by a JSON-patch `test` of the count it
  decided from, so a change someone made meanwhile is never overwritten; then it writes
  `status.lastScale`, posts an Event and hands the decision to the audit hook.
- `report_activity` does not write conditions itself: it records the answer where the
  reconciler's `AutoscalerHook` reads it and nudges a reconcile, so `AutoscalerActive` is
  written by the one status writer, in the same patch as every other condition.

It imports kubernetes_asyncio (for the scale patch) but never kopf: indexes arrive as
plain mappings, Events through the runtime's poster.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from sovereign_operator.api.base import GROUP, VERSION
from sovereign_operator.api.model_deployment import ModelDeploymentSpec, ScalingSpec
from sovereign_operator.autoscaling.evidence import DEFAULT_TUNING, Tuning
from sovereign_operator.autoscaling.external import ExternalLoadCollector
from sovereign_operator.autoscaling.loop import (
    Activity,
    AutoscaledDeployment,
    AutoscalerLoop,
    ReplicaEndpoint,
)
from sovereign_operator.autoscaling.policy import Decision, ScaleChange
from sovereign_operator.autoscaling.scraper import Scraper
from sovereign_operator.hooks import (
    AuditHealthReport,
    AuditHook,
    AutoscalerReport,
    DeploymentKey,
    OperatorAction,
)
from sovereign_operator.kube import _message, audit_id_of  # the API server's own words
from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.planning import ENGINE_PORT
from sovereign_operator.reconcile import ApiError
from sovereign_operator.render.group_names import GROUP_LABEL, LEADER_INDEX, POD_INDEX_LABEL
from sovereign_operator.runtime import EventPoster

logger = logging.getLogger(__name__)

MD_PLURAL: Final = "modeldeployments"
# status.lastScale.reason's limit in the CRD schema.
MAX_REASON: Final = 1024
SCALE_TIMEOUT_SECONDS: Final = 10
# The loop's reason for `scaling.mode: external`.
EXTERNAL: Final = "External"


@dataclass(frozen=True, slots=True)
class EngineEndpoint:
    """What the autoscaler needs of one engine pod, built once per pod event (kept in a
    kopf index) so a tick only filters these, at thousands of pods every few seconds."""

    pod: str
    replica: ReplicaEndpoint
    """The replica this pod stands for: itself, or for a group leader, its group."""
    deleting: bool
    leader: bool = True
    """Rank 0 of its group; always True for a single-node replica."""


def engine_endpoint(pod: Mapping[str, Any], port: int = ENGINE_PORT) -> EngineEndpoint:
    """The endpoint view of a raw engine Pod, as its watch event delivers it.

    A pod without an IP cannot be scraped, so it counts as not ready (starting) whatever
    its condition says.
    """
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    ready, since = False, 0.0
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
            since = _unix(condition.get("lastTransitionTime"))
    name = str(meta.get("name", ""))
    group = labels.get(GROUP_LABEL) or None
    rank = labels.get(POD_INDEX_LABEL)
    if group is not None and rank is None:
        # Clusters before 1.28 set no pod-index label: the StatefulSet ordinal ends the name.
        rank = name.rpartition("-")[2]
    ip = str(status.get("podIP") or "")
    replica = (
        ReplicaEndpoint(str(group or name), metrics_url(ip, port), ready, since)
        if ip
        else ReplicaEndpoint(str(group or name), "", ready=False, ready_since=0.0)
    )
    return EngineEndpoint(
        pod=name,
        replica=replica,
        deleting=meta.get("deletionTimestamp") is not None,
        leader=group is None or rank == LEADER_INDEX,
    )


def _unix(stamp: Any) -> float:
    if not stamp:
        return 0.0
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def metrics_url(ip: str, port: int = ENGINE_PORT) -> str:
    """`http://IP:PORT/metrics`, with IPv6 addresses (the only ones with colons; the API
    server has validated podIP) in brackets."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/metrics"


def replica_endpoints(pods: Iterable[EngineEndpoint]) -> tuple[ReplicaEndpoint, ...]:
    """One endpoint per replica: each single-node pod, each group's leader. Terminating
    pods are draining, not capacity, and are left out."""
    live = [p for p in pods if p.leader and not p.deleting]
    return tuple(p.replica for p in sorted(live, key=_pod_name))


def _pod_name(endpoint: EngineEndpoint) -> str:
    return endpoint.pod


def autoscaled(
    md: Mapping[str, Any], pods: Iterable[EngineEndpoint]
) -> AutoscaledDeployment | None:
    """The loop's view of a ModelDeployment, or None when it is not autoscaled (no
    `spec.scaling`), is being deleted, or its scaling settings do not parse (reconcile
    reports those as InvalidSpec; the autoscaler leaves such a deployment alone)."""
    meta = md.get("metadata") or {}
    spec = md.get("spec") or {}
    raw_scaling = spec.get("scaling")
    if raw_scaling is None or meta.get("deletionTimestamp"):
        return None
    try:
        scaling = ScalingSpec.model_validate(raw_scaling)
    except ValidationError:
        return None
    replicas = spec.get("replicas")
    if replicas is None:
        replicas = ModelDeploymentSpec.model_fields["replicas"].default
    model = spec.get("model") or {}
    return AutoscaledDeployment(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        scaling=scaling,
        replicas=int(replicas),
        endpoints=replica_endpoints(pods),
        last_change=last_change((md.get("status") or {}).get("lastScale")),
        # vLLM labels its gauges with the served name, which defaults to the object's name.
        served_model_name=str(model.get("servedName") or meta.get("name", "")),
    )


def last_change(raw: Mapping[str, Any] | None) -> ScaleChange | None:
    """status.lastScale as the policy's ScaleChange (so step limits survive a restart)."""
    if not raw:
        return None
    try:
        return ScaleChange(_unix(raw["time"]), int(raw["from"]), int(raw["to"]))
    except (KeyError, TypeError, ValueError):
        return None


def last_scale_status(decision: Decision, at: datetime) -> dict[str, Any]:
    """The `status.lastScale` merge-patch value for a decision that was applied."""
    return {
        "time": at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "from": decision.current,
        "to": decision.replicas,
        "reason": decision.reason.message[:MAX_REASON],
    }


def scale_patch(current: int, replicas: int) -> list[dict[str, Any]]:
    """A JSON patch of the scale subresource that applies only while replicas are `current`.

    The `test` makes the write conditional on the count the decision was made from: a
    person or another controller who changed replicas meanwhile wins, and the next tick
    decides again from their number. Scale.spec.replicas is omitted when 0, so from zero
    the write is unconditional.
    """
    change = {"op": "add", "path": "/spec/replicas", "value": replicas}
    if current == 0:
        return [change]
    return [{"op": "test", "path": "/spec/replicas", "value": current}, change]


def scale_event(decision: Decision) -> tuple[str, str, str]:
    """(type, reason, message) of the Event a change posts."""
    up = decision.replicas > decision.current
    reason = "ScaledUp" if up else "ScaledDown"
    return "Normal", reason, decision.reason.message[:MAX_REASON]


def audit_record(
    key: DeploymentKey, decision: Decision, at: datetime, audit_id: str | None = None
) -> OperatorAction:
    """The audit record of an applied decision, with the inputs it was taken on and the
    API server's Audit-ID of the /scale patch."""
    reason = decision.reason
    inputs = {k: v for k, v in reason.as_record().items() if v is not None}
    extra = {k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()}
    return OperatorAction(
        key,
        "apply",
        f"ModelDeployment/{key.name}/scale",
        "Autoscaled",
        reason.message,
        at,
        {"from": str(decision.current), "to": str(decision.replicas), **extra},
        audit_id=audit_id,
    )


def condition_report(activity: Activity) -> AutoscalerReport:
    return AutoscalerReport(
        "True" if activity.active else "False", activity.reason, activity.message
    )


class ActivityReports:
    """The loop's latest AutoscalerActive answers, read by reconcile through `Hooks.autoscaler`.

    A report is returned only while it still fits the spec reconcile is looking at: a
    deployment whose scaling was removed, or switched between internal and external,
    gets the condition derived from its spec until the loop has looked at it again.
    External mode is always derived from the spec (`ExternalAutoscaler`): the loop has
    nothing to add there, and one name for one state keeps alerts simple.
    """

    def __init__(self) -> None:
        self._reports: dict[tuple[str, str], Activity] = {}

    def set(self, namespace: str, name: str, activity: Activity) -> None:
        self._reports[(namespace, name)] = activity

    def retain_only(self, keys: Iterable[tuple[str, str]]) -> None:
        keep = set(keys)
        self._reports = {k: v for k, v in self._reports.items() if k in keep}

    def __call__(self, key: DeploymentKey, spec: ModelDeploymentSpec) -> AutoscalerReport | None:
        activity = self._reports.get((key.namespace, key.name))
        if activity is None or spec.scaling is None:
            return None
        if spec.scaling.mode == "external" or activity.reason == EXTERNAL:
            return None
        return condition_report(activity)


Listing = Callable[[], Iterable[tuple[Mapping[str, Any], Sequence[EngineEndpoint]]]]
"""Every ModelDeployment as last seen, with its engine pods' endpoints (from the indexes)."""
Nudge = Callable[[str, str], Awaitable[None]]
"""Reconcile this ModelDeployment soon (the runtime's coalesced nudge)."""
StatusPatch = Callable[[DeploymentKey, Mapping[str, Any]], Awaitable[None]]


def held_by_audit(health: AuditHealthReport | None) -> str | None:
    """Why scale changes must wait for the audit trail, or None when they may go ahead."""
    if health is None or not health.pause:
        return None
    return f"held by audit.failurePolicy: pause ({health.message})"


class ScaleHeld(Exception):
    """A scale change the operator may not make now (the audit trail cannot record it)."""


class ClusterBridge:
    """`list_deployments`, `apply_scale` and `report_activity` for the loop."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        listing: Listing,
        patch_status: StatusPatch,
        post_event: EventPoster,
        audit: AuditHook,
        metrics: OperatorMetrics,
        reports: ActivityReports,
        nudge: Nudge,
        held: Callable[[], str | None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = client.CustomObjectsApi(api)
        self._listing = listing
        self._patch_status = patch_status
        self._post_event = post_event
        self._audit = audit
        self._metrics = metrics
        self._reports = reports
        self._nudge = nudge
        self._held = held
        self._now = now
        self._bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._nudges: set[asyncio.Task[None]] = set()

    async def list_deployments(self) -> list[AutoscaledDeployment]:
        deployments = []
        bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        for md, pods in self._listing():
            deployment = autoscaled(md, pods)
            if deployment is not None:
                deployments.append(deployment)
                bodies[(deployment.namespace, deployment.name)] = md
        self._bodies = bodies
        self._reports.retain_only(bodies)
        return deployments

    async def apply_scale(
        self, namespace: str, name: str, replicas: int, decision: Decision
    ) -> None:
        """Scale through `/scale`; then lastScale, an Event and the audit record.

        Only the scale itself can fail the change (the loop reports ScaleFailed and decides
        again). What follows it is reported in the log: the change has happened by then,
        and failing it would make the loop decide again from a count that is gone.
        A change that could not be audited is not made (`held` says why, e.g. under
        audit.failurePolicy: pause); the loop reports it as ScaleFailed and tries again.
        """
        why_held = self._held()
        if why_held is not None:
            raise ScaleHeld(why_held)
        audit_id = await self._scale(namespace, name, decision.current, replicas)
        logger.info("%s/%s: %s", namespace, name, decision.reason.message)
        at = self._now()
        body = self._bodies.get((namespace, name)) or {}
        key = DeploymentKey(namespace, name, str((body.get("metadata") or {}).get("uid", "")))
        try:
            await self._patch_status(key, {"lastScale": last_scale_status(decision, at)})
        except ApiError:
            logger.exception("%s/%s: writing status.lastScale", namespace, name)
        if body:
            try:
                self._post_event(body, *scale_event(decision))
            except Exception:  # Events are best effort; status and audit carry the change
                logger.exception("%s/%s: posting the scale Event", namespace, name)
        try:
            await self._audit(audit_record(key, decision, at, audit_id))
        except Exception:  # the audit hook has its own failure policy; the scale stands
            logger.exception("%s/%s: auditing the scale change", namespace, name)

    async def _scale(self, namespace: str, name: str, current: int, replicas: int) -> str | None:
        """Patch /scale; returns the API server's Audit-ID of the patch."""
        try:
            # The generated client passes `_content_type` through **kwargs (its type hints
            # do not list it); without it the list body would be sent as a merge patch.
            # `_with_http_info`: (data, status, headers); the headers carry the Audit-ID.
            answer = await self._api.patch_namespaced_custom_object_scale_with_http_info(  # type: ignore[call-arg]
                GROUP,
                VERSION,
                namespace,
                MD_PLURAL,
                name,
                scale_patch(current, replicas),
                _content_type="application/json-patch+json",
                _request_timeout=SCALE_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            self._metrics.api_error(error.status, "patch")
            if error.status == 422 and current:
                raise ApiError(
                    f"ModelDeployment/{name}/scale",
                    error.status,
                    f"replicas are no longer {current} (changed by someone else); "
                    "deciding again from the new count",
                ) from error
            raise ApiError(
                f"ModelDeployment/{name}/scale", error.status, _message(error)
            ) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            self._metrics.api_error(None, "patch")
            raise ApiError(f"ModelDeployment/{name}/scale", None, repr(error)) from error
        self._metrics.api_write("patch", "ModelDeployment/scale")
        return audit_id_of(answer[2])

    async def report_activity(self, namespace: str, name: str, activity: Activity) -> None:
        """Record the answer for the status writer and ask for a reconcile pass.

        The pass runs in its own task: it may wait for a reconcile slot, and the loop
        must neither wait for that nor cancel a pass halfway by timing out.
        """
        self._reports.set(namespace, name, activity)
        if activity.reason == EXTERNAL:
            return  # the condition is derived from the spec; nothing to rewrite
        task = asyncio.create_task(self._nudge_quietly(namespace, name))
        self._nudges.add(task)
        task.add_done_callback(self._nudges.discard)

    async def _nudge_quietly(self, namespace: str, name: str) -> None:
        try:
            await self._nudge(namespace, name)
        except Exception:
            logger.exception("%s/%s: reconcile after an autoscaler report", namespace, name)

    async def close(self) -> None:
        """Cancel the reconcile passes still pending (the operator is stopping)."""
        for task in list(self._nudges):
            task.cancel()
        await asyncio.gather(*self._nudges, return_exceptions=True)


async def run_autoscaler(
    bridge: ClusterBridge,
    *,
    interval_seconds: float,
    external: ExternalLoadCollector | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> None:
    """The operator's one autoscaling task: ticks until cancelled, then closes its
    connections and the reconcile nudges still pending."""
    async with Scraper() as scraper:
        loop = AutoscalerLoop(
            list_deployments=bridge.list_deployments,
            apply_scale=bridge.apply_scale,
            report_activity=bridge.report_activity,
            scraper=scraper,
            external=external,
            interval_seconds=interval_seconds,
            tuning=tuning,
        )
        try:
            await loop.run()
        finally:
            await bridge.close()
