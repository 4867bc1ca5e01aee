"""The autoscaler's one operator-wide task: scrape, record, decide, scale.

Every `interval_seconds` the loop lists the autoscaled ModelDeployments with their engine
replicas, scrapes the `/metrics` of every ready replica of all of them at once (one bounded
fan-out, not a kopf daemon per object: a thousand deployments cost one task and one
connection pool), records a snapshot per deployment, and for `scaling.mode: internal` asks
the policy for a decision. It calls `apply_scale` only when the answer differs from the
current replicas; until the listing shows a requested count (or for RESEND_AFTER_SECONDS),
that count is what "current" means, so a lagging cache neither repeats nor undoes it.

Everything that touches the cluster is injected, so this module imports neither kopf nor
a Kubernetes client; the operator wires in:

- `list_deployments()`: the autoscaled ModelDeployments, each with its replicas (for
  multi-node groups: one endpoint per group, the leader's) and its status.lastScale;
- `apply_scale(namespace, name, replicas, decision)`: patch the scale subresource, set
  status.lastScale, emit an Event and an audit record;
- `report_activity(namespace, name, activity)` (optional): set the AutoscalerActive
  condition; called only when its status or reason changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sovereign_operator.api.model_deployment import ScalingSpec
from sovereign_operator.autoscaling.evidence import DEFAULT_TUNING, ReplicaSample, Snapshot, Tuning
from sovereign_operator.autoscaling.external import ExternalLoadCollector, aggregate
from sovereign_operator.autoscaling.history import DeploymentKey, HistoryStore
from sovereign_operator.autoscaling.policy import Decision, Direction, ScaleChange, decide
from sovereign_operator.autoscaling.scraper import ScrapeResult, ScrapeTarget

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplicaEndpoint:
    """One replica to scrape: an engine pod, or a multi-node group's leader (whose vLLM
    API server, and so its /metrics, only serves once the whole group has joined).
    Terminating pods are left out: they are draining, not capacity."""

    name: str
    metrics_url: str
    ready: bool
    ready_since: float
    """When the pod's Ready condition last turned True (Unix seconds)."""


@dataclass(frozen=True, slots=True)
class AutoscaledDeployment:
    """What the loop needs to know about one ModelDeployment with `spec.scaling`."""

    namespace: str
    name: str
    uid: str
    scaling: ScalingSpec
    replicas: int
    """spec.replicas as the scale subresource reports it."""
    endpoints: tuple[ReplicaEndpoint, ...]
    last_change: ScaleChange | None = None
    """status.lastScale, so step limits survive an operator restart."""
    served_model_name: str | None = None

    @property
    def key(self) -> DeploymentKey:
        return (self.namespace, self.name, self.uid)


@dataclass(frozen=True, slots=True)
class Activity:
    """What the AutoscalerActive condition should say."""

    active: bool
    reason: str
    """CamelCase condition reason: Active, NoMetrics, External or ScaleFailed."""
    message: str


ListDeployments = Callable[[], Awaitable[Sequence[AutoscaledDeployment]]]
ApplyScale = Callable[[str, str, int, Decision], Awaitable[None]]
ReportActivity = Callable[[str, str, Activity], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(slots=True)
class TickReport:
    """What one tick did, for logs, tests and benchmarks."""

    at: float
    decisions: dict[DeploymentKey, Decision] = field(default_factory=dict)
    scaled: list[DeploymentKey] = field(default_factory=list)
    scrape_errors: int = 0


class Scrape(Protocol):
    """The scraping interface the loop needs (`Scraper` implements it): one result per
    target, in the targets' order."""

    async def scrape(self, targets: Sequence[ScrapeTarget]) -> list[ScrapeResult]: ...


# If a scale request was sent but the listing still shows the old count after this long,
# the listing is trusted again (the write may have been lost, or overwritten by someone).
RESEND_AFTER_SECONDS = 30.0


class AutoscalerLoop:
    """The loop's state (histories, requests in flight, reported activity) and its tick."""

    def __init__(
        self,
        *,
        list_deployments: ListDeployments,
        apply_scale: ApplyScale,
        scraper: Scrape,
        report_activity: ReportActivity | None = None,
        external: ExternalLoadCollector | None = None,
        interval_seconds: float = 5.0,
        scale_timeout_seconds: float = 10.0,  # for each apply_scale and report_activity
        tuning: Tuning = DEFAULT_TUNING,
        clock: Clock = time.time,
    ) -> None:
        self._list = list_deployments
        self._apply_scale = apply_scale
        self._scraper = scraper
        self._report_activity = report_activity
        self._external = external
        self._interval = interval_seconds
        self._scale_timeout = scale_timeout_seconds
        self._tuning = tuning
        self._clock = clock
        self._histories = HistoryStore()
        self._requested: dict[DeploymentKey, tuple[int, float]] = {}
        self._own_changes: dict[DeploymentKey, ScaleChange] = {}
        self._activity: dict[DeploymentKey, Activity] = {}

    async def run(self) -> None:
        """Tick every interval until cancelled; a failing tick is logged, never fatal."""
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("autoscaler tick failed")
            await asyncio.sleep(max(self._interval - (time.monotonic() - started), 0.0))

    async def tick(self) -> TickReport:
        """One round: list, scrape everything at once, record and decide per deployment,
        then apply the changes and report AutoscalerActive, each set concurrently."""
        deployments = list(await self._list())
        targets = [
            ScrapeTarget(e.name, e.metrics_url, d.served_model_name)
            for d in deployments
            for e in d.endpoints
            if e.ready
        ]
        # Results come back in the targets' order: walk them alongside the endpoints.
        results = await self._scraper.scrape(targets)
        now = self._clock()
        report = TickReport(at=now, scrape_errors=sum(r.error is not None for r in results))

        answers = iter(results)
        changes: list[tuple[DeploymentKey, AutoscaledDeployment, Decision, list[str]]] = []
        news: list[tuple[DeploymentKey, AutoscaledDeployment, Activity]] = []
        for deployment in deployments:
            key = deployment.key
            current = self._current(key, deployment, now)
            snapshot, errors = _snapshot(deployment, current, answers, now)
            history = self._histories.get(key)
            history.record(snapshot, deployment.scaling, self._tuning)
            if self._external is not None and (load := aggregate(snapshot)) is not None:
                self._external.update(deployment.namespace, deployment.name, load)
            if deployment.scaling.mode == "external":
                news += self._news(key, deployment, _EXTERNAL)
                continue
            decision = decide(
                history.evidence(),
                current=current,
                scaling=deployment.scaling,
                now=now,
                last_change=self._last_change(key, deployment),
                tuning=self._tuning,
            )
            report.decisions[key] = decision
            if decision.changed:
                changes.append((key, deployment, decision, errors))
            else:
                news += self._news(key, deployment, _activity(deployment, decision, errors))

        failures = await asyncio.gather(*(self._scale(k, d, c, now) for k, d, c, _ in changes))
        for (key, deployment, decision, errors), failure in zip(changes, failures, strict=True):
            if failure is None:
                report.scaled.append(key)
            activity = failure or _activity(deployment, decision, errors)
            news += self._news(key, deployment, activity)
        await asyncio.gather(*(self._report(k, d, a) for k, d, a in news))
        self._forget_all_but(deployments)
        return report

    async def _scale(
        self, key: DeploymentKey, deployment: AutoscaledDeployment, decision: Decision, now: float
    ) -> Activity | None:
        """Apply a changed answer; None when it went through, else what to report."""
        try:
            async with asyncio.timeout(self._scale_timeout):
                await self._apply_scale(
                    deployment.namespace, deployment.name, decision.replicas, decision
                )
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # any failure is reported, never fatal
            why = str(failure) or type(failure).__name__
            logger.warning(
                "scaling %s/%s to %d failed: %s",
                deployment.namespace,
                deployment.name,
                decision.replicas,
                why,
            )
            return Activity(False, "ScaleFailed", why[:512])
        self._requested[key] = (decision.replicas, now)
        self._own_changes[key] = ScaleChange(now, decision.current, decision.replicas)
        return None

    def _news(
        self, key: DeploymentKey, deployment: AutoscaledDeployment, activity: Activity
    ) -> list[tuple[DeploymentKey, AutoscaledDeployment, Activity]]:
        """[the report to send] when AutoscalerActive's status or reason changes, else []:
        messages with numbers change every tick and are not worth a status write."""
        previous = self._activity.get(key)
        if previous is not None and (previous.active, previous.reason) == (
            activity.active,
            activity.reason,
        ):
            return []
        self._activity[key] = activity
        return [(key, deployment, activity)]

    def _current(self, key: DeploymentKey, deployment: AutoscaledDeployment, now: float) -> int:
        """The replicas to decide from: what we last asked for while the listing still
        shows the count before it (so a lagging listing neither repeats the request nor
        reverses it), else what the listing shows."""
        requested = self._requested.get(key)
        if requested is None:
            return deployment.replicas
        replicas, at = requested
        if deployment.replicas == replicas or now - at >= RESEND_AFTER_SECONDS:
            del self._requested[key]  # caught up, or the write was lost: trust the listing
            return deployment.replicas
        return replicas

    def _last_change(
        self, key: DeploymentKey, deployment: AutoscaledDeployment
    ) -> ScaleChange | None:
        """The newer of status.lastScale and the change this loop made itself (the
        listing may not show our own status write yet)."""
        own = self._own_changes.get(key)
        listed = deployment.last_change
        if own is None or (listed is not None and listed.at > own.at):
            return listed
        return own

    async def _report(
        self, key: DeploymentKey, deployment: AutoscaledDeployment, activity: Activity
    ) -> None:
        """Pass an AutoscalerActive change on; on failure it is tried again next tick."""
        if self._report_activity is None:
            return
        try:
            async with asyncio.timeout(self._scale_timeout):
                await self._report_activity(deployment.namespace, deployment.name, activity)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "reporting AutoscalerActive for %s/%s", deployment.namespace, deployment.name
            )
            self._activity.pop(key, None)  # try again next tick

    def _forget_all_but(self, deployments: Sequence[AutoscaledDeployment]) -> None:
        keys = {d.key for d in deployments}
        self._histories.retain_only(keys)
        for table in (self._requested, self._own_changes, self._activity):
            for key in [k for k in table if k not in keys]:
                del table[key]
        if self._external is not None:
            self._external.retain_only((d.namespace, d.name) for d in deployments)


_EXTERNAL = Activity(
    False,
    "External",
    "scaling.mode is external: an HPA or KEDA scales through the scale subresource; "
    "the operator publishes the load as sovereign_modeldeployment_* metrics",
)


def _activity(
    deployment: AutoscaledDeployment, decision: Decision, errors: Sequence[str]
) -> Activity:
    reason = decision.reason
    # A hold without an observed value is the policy's "no fresh evidence" answer.
    if reason.direction is Direction.HOLD and reason.observed is None:
        detail = f" ({len(errors)} scrapes failed, e.g. {errors[0]})" if errors else ""
        return Activity(False, "NoMetrics", (reason.message + detail)[:1024])
    scaling = deployment.scaling
    return Activity(
        True,
        "Active",
        f"scaling on {scaling.metric} (target {scaling.target:g} per replica) between "
        f"{scaling.min_replicas} and {scaling.max_replicas} replicas",
    )


def _snapshot(
    deployment: AutoscaledDeployment, replicas: int, answers: Iterator[ScrapeResult], now: float
) -> tuple[Snapshot, list[str]]:
    """The deployment's snapshot (taking one answer per ready endpoint) and its errors."""
    samples = []
    errors = []
    for endpoint in deployment.endpoints:
        load = None
        if endpoint.ready:
            result = next(answers)
            load = result.load
            if result.error is not None:
                errors.append(f"{endpoint.name}: {result.error}")
        samples.append(ReplicaSample(endpoint.name, endpoint.ready, endpoint.ready_since, load))
    return Snapshot(at=now, replicas=replicas, samples=tuple(samples)), errors
