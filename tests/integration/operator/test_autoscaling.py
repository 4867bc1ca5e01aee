"""The autoscaler in the running operator, through the real scrape path.

kwok gives every pod an address from its node's podCIDR, which the local control plane
puts inside 127.0.0.0/8, so a server this test binds to a pod's IP on vLLM's port is what
the operator reaches at `http://<podIP>:8000/metrics`. Each engine pod gets one, serving
vLLM 0.32's real exposition (the captured page) with the gauge values the test sets.
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.local import OperatorProcess
from sovereign_operator.planning import ENGINE_PORT
from tests.integration.operator.conftest import (
    GROUP,
    PLURAL,
    VERSION,
    Md,
    model_deployment,
    wait_for,
)
from tests.unit.autoscaling.servers import vllm_page

pytestmark = pytest.mark.integration

# The captured page's model_name label; the test deployments serve under that name.
SERVED_NAME = "tiny"
# Short windows so a scale-up and a scale-down each take seconds, not minutes.
UP_SECONDS, DOWN_SECONDS = 2, 6


@pytest.fixture(scope="module")
def operator(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, restarted for this module with a one-second autoscaler tick
    and a short start-up grace (simulated pods carry no traffic while they start)."""
    original = tuple(operator.extra_args)
    operator.stop()
    operator.extra_args = (
        *original,
        "--autoscaler-interval=1",
        "--autoscaler-startup-grace=2",
    )
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        operator.extra_args = original
        operator.start()


class FakeVllm:
    """vLLM's /metrics on each engine pod's own address, with values the test controls.

    A thread follows the deployment's engine pods and starts a server on each new pod IP,
    so replicas added by a scale-up are scraped like the first one.
    """

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self.running, self.waiting, self.kv = 0.0, 0.0, 0.1
        self._core = k8s.CoreV1Api(api)
        self._selector = f"sovereign.dev/deployment={name},sovereign.dev/role=engine"
        self._namespace = namespace
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow, daemon=True)

    def set(self, *, running: float, waiting: float, kv: float = 0.1) -> None:
        self.running, self.waiting, self.kv = running, waiting, kv

    def page(self) -> bytes:
        return vllm_page(self.running, self.waiting, self.kv).encode()

    @property
    def addresses(self) -> list[str]:
        return sorted(self._servers)

    def __enter__(self) -> FakeVllm:
        self._follower.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._follower.join(10)
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            pods = self._core.list_namespaced_pod(
                self._namespace, label_selector=self._selector
            ).items
            for pod in pods:
                ip = pod.status.pod_ip if pod.status else None
                if ip and ip not in self._servers:
                    self._serve(ip)
            self._stop.wait(0.3)

    def _serve(self, ip: str) -> None:
        if not ipaddress.ip_address(ip).is_loopback:
            return  # not the local control plane: the test skips on `addresses`
        fake = self

        class Metrics(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = fake.page()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        server = ThreadingHTTPServer((ip, ENGINE_PORT), Metrics)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers[ip] = server


def autoscaled(name: str, namespace: str, **scaling: Any) -> dict[str, Any]:
    body = model_deployment(
        name,
        namespace,
        replicas=1,
        scaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "metric": "queueDepth",
            "target": 4,
            "scaleUpStabilizationSeconds": UP_SECONDS,
            "scaleDownStabilizationSeconds": DOWN_SECONDS,
            **scaling,
        },
    )
    body["spec"]["model"]["servedName"] = SERVED_NAME
    return body


def replicas(md: Md, namespace: str, name: str) -> int:
    return int(md.get(namespace, name)["spec"]["replicas"])


def last_scale(md: Md, namespace: str, name: str, old: int, new: int) -> dict[str, Any] | None:
    found: dict[str, Any] | None = md.get(namespace, name)["status"].get("lastScale")
    return found if found and (found["from"], found["to"]) == (old, new) else None


def scale_replicas(api: k8s.ApiClient, namespace: str, name: str) -> int:
    scale: Any = k8s.CustomObjectsApi(api).get_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return int(scale["spec"]["replicas"])


def events(api: k8s.ApiClient, namespace: str, name: str, reason: str) -> list[Any]:
    found = k8s.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return list(found.items)


def kubectl_get_md(kubectl: Path, kubeconfig: Path, namespace: str, name: str) -> dict[str, str]:
    """`kubectl get md NAME` as the user sees it: column name -> value."""
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "md", name, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    header, row = result.stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=False))


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def loopback_pods(engines: FakeVllm) -> list[str]:
    addresses = wait_for(lambda: engines.addresses, 60, "an engine pod with an address")
    if not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        pytest.skip("pod IPs are not on this machine's loopback (not the local control plane)")
    return addresses


def test_queueing_scales_up_through_scale_and_idling_scales_down_after_the_window(
    operator: OperatorProcess,
    model_store: str,
    namespace: str,
    md: Md,
    api: k8s.ApiClient,
    cluster: Any,
) -> None:
    name = "queued"
    md.create(autoscaled(name, namespace))
    with FakeVllm(api, namespace, name) as engines:
        engines.set(running=4, waiting=0)
        loopback_pods(engines)
        active = md.wait_condition(namespace, name, "AutoscalerActive", "True", timeout=60)
        assert active["reason"] == "Active"
        assert replicas(md, namespace, name) == 1

        # 20 waiting on one replica running 4: 24 in flight need 6 replicas, capped at 3.
        engines.set(running=4, waiting=20)
        wait_for(lambda: replicas(md, namespace, name) == 3, 60, "a scale-up to 3")
        assert scale_replicas(api, namespace, name) == 3
        # status.lastScale follows the scale write (a second request).
        up = wait_for(lambda: last_scale(md, namespace, name, 1, 3), 30, "lastScale 1 -> 3")
        assert "requests waiting" in up["reason"]
        wait_for(lambda: events(api, namespace, name, "ScaledUp"), 30, "a ScaledUp event")

        def shown() -> dict[str, str] | None:
            row = kubectl_get_md(cluster.kubectl, cluster.kubeconfig, namespace, name)
            return row if (row.get("READY"), row.get("PHASE")) == ("3/3", "Ready") else None

        row = wait_for(shown, 60, "kubectl get md to show 3/3 Ready")
        assert row["NAME"] == name

        # Idle: every replica (the new ones too, once past their grace) reports nothing to do.
        engines.set(running=0, waiting=0)
        wait_for(lambda: len(engines.addresses) >= 3, 60, "servers on the new pods")
        wait_for(lambda: replicas(md, namespace, name) < 3, 90, "a scale-down")
        # One step shrinks by at most half (rounded down, at least one): 3 -> 2.
        assert replicas(md, namespace, name) == 2
        down = wait_for(lambda: last_scale(md, namespace, name, 3, 2), 30, "lastScale 3 -> 2")
        assert "stayed low" in down["reason"]
        # A scale-up restarts the scale-down window (times are whole seconds).
        assert seconds(down["time"]) - seconds(up["time"]) >= DOWN_SECONDS - 1
        wait_for(lambda: events(api, namespace, name, "ScaledDown"), 30, "a ScaledDown event")
        wait_for(
            lambda: (
                kubectl_get_md(cluster.kubectl, cluster.kubeconfig, namespace, name)
                .get("READY", "")
                .endswith("/2")
            ),
            60,
            "kubectl get md to show 2 desired",
        )


def test_external_mode_leaves_replicas_alone_and_publishes_the_load(
    operator: OperatorProcess, model_store: str, namespace: str, md: Md, api: k8s.ApiClient
) -> None:
    name = "external"
    md.create(autoscaled(name, namespace, mode="external"))
    with FakeVllm(api, namespace, name) as engines:
        engines.set(running=4, waiting=20, kv=0.5)
        loopback_pods(engines)

        def published() -> dict[str, float] | None:
            values = {
                sample.name: sample.value
                for family in text_string_to_metric_families(operator.metrics())
                for sample in family.samples
                if sample.labels == {"namespace": namespace, "modeldeployment": name}
            }
            return values or None

        load = wait_for(published, 60, "the deployment's load on the operator's /metrics")
        assert load["sovereign_modeldeployment_requests_waiting"] == 20
        assert load["sovereign_modeldeployment_requests_running"] == 4
        assert load["sovereign_modeldeployment_kv_cache_usage"] == 0.5
        assert load["sovereign_modeldeployment_replicas"] == 1

        condition = md.wait_condition(namespace, name, "AutoscalerActive", "False", timeout=30)
        assert condition["reason"] == "ExternalAutoscaler"
        # Far past the scale-up window under sustained queueing: still one replica.
        time.sleep(3 * UP_SECONDS + 2)
        assert replicas(md, namespace, name) == 1
        assert "lastScale" not in md.get(namespace, name)["status"]
        assert not events(api, namespace, name, "ScaledUp")
