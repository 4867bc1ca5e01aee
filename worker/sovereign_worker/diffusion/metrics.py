"""The diffusers engine's `/metrics`, under the names the autoscaler reads from vLLM.

The autoscaler (sovereign_operator.autoscaling.exposition) reads three vLLM gauges, each
labelled `model_name`: requests running, requests waiting and KV-cache usage. The first two
come from the admission gate at scrape time. A diffusion model has no KV cache; the gauge is
exported as 0 so that one parser reads every engine, and the load is carried by the queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sovereign_worker.diffusion.admission import AdmissionGate

RUNNING: Final = "vllm:num_requests_running"
WAITING: Final = "vllm:num_requests_waiting"
KV_CACHE_USAGE: Final = "vllm:kv_cache_usage_perc"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Seconds per image request on a GPU run from under one (tiny models, turbo pipelines) to
# about a minute (1024x1024 at 50 steps).
_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class _GateCollector(Collector):
    def __init__(self, gate: AdmissionGate, model_name: str) -> None:
        self._gate = gate
        self._model_name = model_name

    def collect(self) -> Iterator[Metric]:
        for name, documentation, value in (
            (RUNNING, "Image requests being generated.", self._gate.running),
            (
                WAITING,
                "Image requests admitted and waiting for a generation slot.",
                self._gate.waiting,
            ),
            (KV_CACHE_USAGE, "Always 0: a diffusion model has no KV cache.", 0),
        ):
            family = GaugeMetricFamily(name, documentation, labels=["model_name"])
            family.add_metric([self._model_name], value)
            yield family


class EngineMetrics:
    """A registry of its own (no process-wide state), rendered by `/metrics`."""

    def __init__(self, gate: AdmissionGate, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_GateCollector(gate, model_name))
        self.requests = Counter(
            "sovereign_image_requests",
            "Image generation requests by HTTP status code.",
            ["model_name", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "sovereign_image_generation_seconds",
            "Time spent generating the images of one request (queue wait excluded).",
            ["model_name"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._model_name = model_name

    def count(self, status: int) -> None:
        self.requests.labels(self._model_name, str(status)).inc()

    def observe_generation(self, seconds: float) -> None:
        self.duration.labels(self._model_name).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
