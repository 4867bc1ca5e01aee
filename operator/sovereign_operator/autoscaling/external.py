"""Each deployment's aggregated engine load, published for HPA or KEDA (external mode).

With `scaling.mode: external` the operator does not scale; an HPA or a KEDA ScaledObject
targets the ModelDeployment's scale subresource and reads these gauges through Prometheus
(and, for the HPA, an external-metrics adapter). The loop publishes every autoscaled
deployment, internal ones too, so dashboards see the same numbers the policy sees.

Totals are published, not averages: HPA `External` metrics with an `AverageValue` target
and KEDA's Prometheus trigger both divide by the current replica count themselves. A
deployment whose latest load is older than `stale_after_seconds` is left out of the page,
so the consumer sees missing data (and holds) instead of a zero (and scales down).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from sovereign_operator.autoscaling.evidence import Snapshot

PREFIX: Final = "sovereign_modeldeployment_"
LABELS: Final = ("namespace", "modeldeployment")


@dataclass(frozen=True, slots=True)
class AggregatedLoad:
    """One deployment's load summed over the replicas that answered."""

    at: float
    waiting: float
    running: float
    kv_cache_usage: float
    """Mean over the observed replicas (each replica's usage is a fraction of its own cache)."""
    observed: int
    replicas: int


def aggregate(snapshot: Snapshot) -> AggregatedLoad | None:
    """The deployment's load in one scrape round, or None when no ready replica answered."""
    loads = [s.load for s in snapshot.samples if s.ready and s.load is not None]
    if not loads:
        return None
    return AggregatedLoad(
        at=snapshot.at,
        waiting=sum(load.waiting for load in loads),
        running=sum(load.running for load in loads),
        kv_cache_usage=sum(load.kv_cache_usage for load in loads) / len(loads),
        observed=len(loads),
        replicas=snapshot.replicas,
    )


_GAUGES: Final = (
    ("requests_waiting", "Requests waiting in the engines of a ModelDeployment (sum).", "waiting"),
    ("requests_running", "Requests running in the engines of a ModelDeployment (sum).", "running"),
    (
        "kv_cache_usage",
        "KV-cache usage of a ModelDeployment's engines (mean fraction, 0-1).",
        "kv_cache_usage",
    ),
    ("observed_replicas", "Replicas (groups) whose metrics were read.", "observed"),
    ("replicas", "Desired replicas (groups) when the load was read.", "replicas"),
)


class ExternalLoadCollector:
    """A prometheus-client collector: register it once, feed it from the loop.

    collect() runs on the metrics server's thread, update() on the event loop's, hence
    the lock.
    """

    def __init__(
        self, *, stale_after_seconds: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._stale_after = stale_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._loads: dict[tuple[str, str], AggregatedLoad] = {}

    def update(self, namespace: str, name: str, load: AggregatedLoad) -> None:
        with self._lock:
            self._loads[(namespace, name)] = load

    def retain_only(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget deployments that are gone or no longer autoscaled."""
        keep = set(keys)
        with self._lock:
            self._loads = {k: v for k, v in self._loads.items() if k in keep}

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        with self._lock:
            fresh = sorted(
                (key, load)
                for key, load in self._loads.items()
                if now - load.at <= self._stale_after
            )
        for suffix, documentation, attribute in _GAUGES:
            family = GaugeMetricFamily(PREFIX + suffix, documentation, labels=LABELS)
            for (namespace, name), load in fresh:
                family.add_metric([namespace, name], float(getattr(load, attribute)))
            yield family
