"""The operator's own Prometheus metrics.

Everything lives in one `CollectorRegistry` per operator (not prometheus_client's global
one), so tests and an embedded operator never see each other's numbers. Per-deployment
series are removed when their ModelDeployment goes, so the exposition does not grow with
every object ever served.
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sovereign_operator.api.model_deployment import Phase
from sovereign_operator.hooks import DeploymentKey

PREFIX: Final = "sovereign_operator"
# A no-op pass takes about a millisecond; one that writes waits on the API server.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class OperatorMetrics:
    """Reconciles, latency, deployments by phase, replicas, and API traffic."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Reconcile passes by result: noop, changed, refused (spec cannot be served), error.",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one reconcile pass.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.deployments = Gauge(
            f"{PREFIX}_deployments",
            "ModelDeployments by status.phase.",
            ["phase"],
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            f"{PREFIX}_desired_replicas",
            "spec.replicas of each ModelDeployment.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.ready_replicas = Gauge(
            f"{PREFIX}_ready_replicas",
            "Ready engine replicas of each ModelDeployment.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            f"{PREFIX}_api_errors",
            "Kubernetes API requests that failed, by HTTP status (0: no response) and verb.",
            ["code", "verb"],
            registry=self.registry,
        )
        self.api_writes = Counter(
            f"{PREFIX}_api_writes",
            "Mutating Kubernetes API requests the reconciler sent, by verb and kind.",
            ["verb", "kind"],
            registry=self.registry,
        )
        self._phases: dict[DeploymentKey, str] = {}
        for phase in Phase:
            self.deployments.labels(phase.value).set(0)

    def observe_reconcile(
        self,
        key: DeploymentKey,
        *,
        result: str,
        seconds: float,
        phase: str,
        desired: int,
        ready: int,
    ) -> None:
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.observe(seconds)
        if phase:
            self._phases[_plain(key)] = phase
            self._refresh_phases()
            self.desired_replicas.labels(key.namespace, key.name).set(desired)
            self.ready_replicas.labels(key.namespace, key.name).set(ready)

    def forget(self, key: DeploymentKey) -> None:
        """Drop a deleted ModelDeployment's series."""
        self._phases.pop(_plain(key), None)
        self._refresh_phases()
        for gauge in (self.desired_replicas, self.ready_replicas):
            with contextlib.suppress(KeyError):
                gauge.remove(key.namespace, key.name)

    def api_error(self, code: int | None, verb: str) -> None:
        self.api_errors.labels(str(code or 0), verb).inc()

    def api_write(self, verb: str, kind: str) -> None:
        self.api_writes.labels(verb, kind).inc()

    def _refresh_phases(self) -> None:
        tally = Tally(self._phases.values())
        for phase in Phase:
            self.deployments.labels(phase.value).set(tally.get(phase.value, 0))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


def _plain(key: DeploymentKey) -> DeploymentKey:
    # The phase tally is per object name: a re-created object (new uid) replaces the old.
    return DeploymentKey(key.namespace, key.name)
