"""What the autoscaling loop takes from kopf: an index of engine endpoints and the indexes.

The loop runs outside kopf's handlers (one operator-wide task), but reads what the
handlers' watch streams already hold instead of listing the API every tick:

- `autoscaler_endpoints`: one small `EngineEndpoint` (pod IP, readiness and since when,
  group and rank) per engine pod, fed by the same pod watch as the reconciler's
  `engine_pods` index (kopf opens one stream per resource), kept apart from it so the
  reconciler's pod snapshot does not grow fields it never reads;
- a raw event handler on ModelDeployments hands the loop, on the first event, the live
  index mappings (kopf gives indexes only to handlers; they are views kopf keeps current,
  so one capture stays valid). kopf runs resource handlers only once every index is
  filled, so the first tick never mistakes a half-read cluster for an empty one. Events
  go through the operator's own `kube.EventRecorder`, which needs no handler context.

`start` wires it all into a running operator: the loop as one task, the AutoscalerActive
reports into the reconciler's hooks, and the aggregated load onto its /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import kopf
from kubernetes_asyncio import client

from sovereign_operator.autoscaler_bridge import (
    ActivityReports,
    ClusterBridge,
    EngineEndpoint,
    engine_endpoint,
    held_by_audit,
    run_autoscaler,
)
from sovereign_operator.autoscaling.evidence import DEFAULT_TUNING
from sovereign_operator.autoscaling.external import ExternalLoadCollector
from sovereign_operator.handlers.model_deployment import MD, MD_INDEX, OWNED, lookup_from
from sovereign_operator.hooks import OperatorAction
from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.render.meta import ENGINE_ROLE, LABEL_DEPLOYMENT, LABEL_ROLE
from sovereign_operator.runtime import EventPoster, Lookup, Runtime

ENDPOINT_INDEX: Final = "autoscaler_endpoints"


@dataclass
class IndexView:
    """The operator's kopf indexes, once kopf has started (empty before)."""

    indexes: Mapping[str, Any] = field(default_factory=dict)
    captured: asyncio.Event = field(default_factory=asyncio.Event)

    def listing(self) -> Iterator[tuple[Mapping[str, Any], Sequence[EngineEndpoint]]]:
        """Every ModelDeployment as last seen, with its engine pods' endpoints."""
        deployments = self.indexes.get(MD_INDEX)
        endpoints = self.indexes.get(ENDPOINT_INDEX)
        if deployments is None or endpoints is None:
            return
        for key, store in list(deployments.items()):
            pods = endpoints.get(key)
            for md in store:
                yield md, list(pods) if pods is not None else []

    def lookup(self) -> Lookup:
        """What a reconcile nudge reads (the handlers' own lookup over these indexes)."""
        return lookup_from(self.indexes)


def register(registry: kopf.OperatorRegistry, view: IndexView) -> None:
    @kopf.index(
        "v1",
        "pods",
        labels={**OWNED, LABEL_ROLE: ENGINE_ROLE},
        id=ENDPOINT_INDEX,
        registry=registry,
    )
    async def autoscaler_endpoints(
        body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
    ) -> dict[tuple[str, str], EngineEndpoint]:
        return {(str(namespace), labels[LABEL_DEPLOYMENT]): engine_endpoint(body)}

    @kopf.on.event(*MD, id="autoscaler_context", registry=registry)
    async def capture_context(**kwargs: Any) -> None:
        if not view.captured.is_set():
            # kopf passes every index to resource handlers under its id, among other kwargs.
            view.indexes = {k: v for k, v in kwargs.items() if isinstance(v, kopf.Index)}
            view.captured.set()


def start(
    registry: kopf.OperatorRegistry,
    runtime: Runtime,
    *,
    api: client.ApiClient,
    metrics: OperatorMetrics,
    post_event: EventPoster,
) -> asyncio.Task[None]:
    """Register what the loop reads and start it; it ticks once kopf has handed over its
    indexes (at the first ModelDeployment event: with none, nothing scales).

    Call before kopf starts (the handlers must be registered by then) and `stop` the task
    when kopf returns.
    """
    view = IndexView()
    register(registry, view)
    reports = ActivityReports()
    # The loop's answers reach AutoscalerActive through the one status writer.
    runtime.hooks = replace(runtime.hooks, autoscaler=reports)
    external = ExternalLoadCollector()
    metrics.registry.register(external)

    async def audit(action: OperatorAction) -> None:
        await runtime.hooks.audit(action)  # late-bound: whatever audit hook is wired

    async def nudge(namespace: str, name: str) -> None:
        await runtime.nudge(namespace, name, view.lookup())

    bridge = ClusterBridge(
        api=api,
        listing=view.listing,
        patch_status=runtime.writer.patch_status,
        post_event=post_event,
        audit=audit,
        metrics=metrics,
        reports=reports,
        nudge=nudge,
        held=lambda: held_by_audit(runtime.hooks.audit_health()),
    )
    config = runtime.config
    tuning = replace(DEFAULT_TUNING, startup_grace_seconds=config.autoscaler_startup_grace)

    async def launch() -> None:
        await view.captured.wait()
        # Cancelling this task cancels the loop it awaits.
        await asyncio.create_task(
            run_autoscaler(
                bridge,
                interval_seconds=config.autoscaler_interval,
                external=external,
                tuning=tuning,
            ),
            name="autoscaler loop",
        )

    return asyncio.create_task(launch(), name="autoscaler")


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel the loop and wait for it to close its connections."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
