"""Operator benchmark on the local control plane: latency, burst, API writes, memory.

The operator runs as `make demo` runs it: the chart installed with operator.enabled=false
and `sovereign run` on this machine as the chart's ServiceAccount. Scenarios:

1. apply -> Ready with engine pods: `ready` ModelDeployments of 1 GPU, one at a time,
   timed from `kubectl apply` to Ready=True (kwok plays the kubelet; the fake cluster has
   40 GPUs, so this scenario stays small).
2. apply -> all children created: `latency` ModelDeployments, one at a time, timed from
   `kubectl apply` to the engine Deployment (applied last) appearing in a watch.
3. A burst of `burst` ModelDeployments created at once (8 client threads) until every one
   has status.observedGeneration and all five children.
4. API writes per ModelDeployment, from the API server's audit log (every mutating request
   of the operator's ServiceAccount, by resource): during the burst, and during one full
   resync period after it settled (target: 0).
5. Operator RSS with 0 ModelDeployments and after the burst.

Scenarios 2-4 use replicas: 0, so they measure the operator rather than the scheduler and
kwok (1000 pods would not fit 40 GPUs anyway).

    .venv/bin/python bench/operator_bench.py [--latency 100] [--burst 1000] [--ready 20]
        [--resync-seconds 60] [--kubeconfig PATH]

Without --kubeconfig (or SOVEREIGN_KUBECONFIG) it starts its own control plane in a
temporary folder. Writes bench/results/operator.json and bench/results/operator.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from sovereign_operator.devcluster import cluster as local
from sovereign_operator.devcluster import testkit
from sovereign_operator.devcluster.binaries import ensure_binaries
from sovereign_operator.devcluster.kube import api_client
from sovereign_operator.devcluster.processes import free_ports
from sovereign_operator.devcluster.state import CLUSTER_FILE, StateDir
from sovereign_operator.local import NAMESPACE, RELEASE, OperatorProcess, service_account_kubeconfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CHART = ROOT / "charts" / "sovereign-operator"
GROUP, VERSION, PLURAL = "sovereign.dev", "v1alpha1", "modeldeployments"
USER = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
DIGEST = "sha256:" + "ab" * 32
CHILD_KINDS = 5


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def md_body(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"source": f"pvc://model-store/models/{name}", "digest": DIGEST},
            "resources": {"gpus": 1},
            "replicas": replicas,
        },
    }


class Bench:
    def __init__(self, kubeconfig: Path, kubectl: Path, helm: Path, audit_log: Path | None) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.helm = helm
        self.audit_log = audit_log
        self.api: Any = api_client(kubeconfig)
        self.custom: Any = k8s.CustomObjectsApi(self.api)
        self.core: Any = k8s.CoreV1Api(self.api)
        self.apps: Any = k8s.AppsV1Api(self.api)
        self.workdir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
        self.namespaces: list[str] = []

    def run(self, *argv: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig),
                 "HELM_CACHE_HOME": str(self.workdir / "helm"), "HELM_CONFIG_HOME": str(self.workdir / "helm"),
                 "HELM_DATA_HOME": str(self.workdir / "helm")},
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr}")
        return result.stdout

    def install(self) -> Path:
        self.run(str(self.helm), "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE,
                 "--create-namespace", "--set", "operator.enabled=false", "--wait")  # fmt: skip
        return service_account_kubeconfig(self.kubeconfig, self.workdir / "operator.kubeconfig")

    def namespace(self, name: str, *, model_store: bool = False) -> str:
        testkit.create_namespace(self.api, name)
        self.namespaces.append(name)
        if model_store:
            volume = f"model-store-{name}"
            self.run(str(self.kubectl), "apply", "-f", "-", stdin=yaml.safe_dump_all([
                {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
                 "spec": {"capacity": {"storage": "2Ti"}, "accessModes": ["ReadOnlyMany"],
                          "storageClassName": "", "hostPath": {"path": "/var/lib/models"},
                          "claimRef": {"namespace": name, "name": "model-store"}}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "model-store", "namespace": name},
                 "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": volume,
                          "resources": {"requests": {"storage": "2Ti"}}}},
            ]))  # fmt: skip
        return name

    def kubectl_apply(self, body: dict[str, Any]) -> None:
        path = self.workdir / f"{body['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(body))
        self.run(str(self.kubectl), "apply", "-f", str(path))

    def list_mds(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL
        )["items"]
        return items

    def cleanup(self) -> None:
        """Best effort: the bench's namespaces and volumes (ModelDeployments are gone by now)."""
        for namespace in self.namespaces:
            try:
                self.core.delete_namespace(namespace)
                self.core.delete_persistent_volume(f"model-store-{namespace}")
            except ApiException as error:
                if error.status != 404:
                    raise

    def delete_all(self, namespace: str, timeout: float = 600) -> None:
        self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        wait(
            lambda: not self.list_mds(namespace), timeout, f"ModelDeployments in {namespace} to go"
        )


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def deployment_watch(bench: Bench, namespace: str) -> Iterator[dict[str, float]]:
    """Time (perf_counter) each engine Deployment was first seen, by ModelDeployment name."""
    seen: dict[str, float] = {}
    stop = threading.Event()
    apps: Any = k8s.AppsV1Api(api_client(bench.kubeconfig))

    def loop() -> None:
        while not stop.is_set():
            stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
            for event in stream.stream(
                apps.list_namespaced_deployment, namespace, timeout_seconds=2
            ):
                name = event["object"].metadata.labels.get("sovereign.dev/deployment")
                if name:
                    seen.setdefault(name, time.perf_counter())
                if stop.is_set():
                    stream.stop()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.5)
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def audit_writes(audit_log: Path, start: datetime, end: datetime) -> Counter[str]:
    """The operator's mutating requests in [start, end), by resource[/subresource].

    Reads the rotated files too (audit-TIMESTAMP.log beside audit.log): a burst of a
    thousand objects writes more than one file's worth.
    """
    found: Counter[str] = Counter()
    for path in sorted(audit_log.parent.glob(f"{audit_log.stem}*{audit_log.suffix}")):
        with path.open() as lines:
            for line in lines:
                entry = json.loads(line)
                if entry.get("stage") != "ResponseComplete" or entry.get("verb") not in WRITE_VERBS:
                    continue
                if entry["user"].get("username") != USER:
                    continue
                received = entry["requestReceivedTimestamp"].replace("Z", "+00:00")
                if start <= datetime.fromisoformat(received) < end:
                    ref = entry.get("objectRef", {})
                    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
                    found[f"{entry['verb']} {ref.get('resource', '?')}{sub}"] += 1
    return found


def scenario_ready(bench: Bench, count: int) -> dict[str, Any]:
    ns = bench.namespace("bench-ready", model_store=True)
    times = []
    for index in range(count):
        name = f"ready-{index:03d}"
        started = time.perf_counter()
        bench.kubectl_apply(md_body(name, ns, replicas=1))

        def ready(name: str = name) -> bool:
            status = bench.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name
            ).get("status", {})
            return any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )

        wait(ready, 120, f"{name} Ready", interval=0.02)
        times.append(time.perf_counter() - started)
    bench.delete_all(ns)
    return summary(times)


def scenario_latency(bench: Bench, count: int) -> dict[str, Any]:
    ns = bench.namespace("bench-latency")
    times = []
    with deployment_watch(bench, ns) as seen:
        for index in range(count):
            name = f"lat-{index:03d}"
            started = time.perf_counter()
            bench.kubectl_apply(md_body(name, ns, replicas=0))
            created = wait(partial(seen.get, name), 60, f"{name}'s children", interval=0.005)
            times.append(created - started)
    bench.delete_all(ns)
    return summary(times)


def children_complete(bench: Bench, namespace: str) -> Counter[str]:
    """Children per ModelDeployment, from raw listings (deserializing thousands of objects
    into client models would cost the machine more CPU than the operator under test)."""
    counts: Counter[str] = Counter()
    selector = "app.kubernetes.io/managed-by=sovereign-operator"
    listings: tuple[Any, ...] = (
        bench.core.list_namespaced_service_account,
        bench.core.list_namespaced_service,
        k8s.NetworkingV1Api(bench.api).list_namespaced_network_policy,
        k8s.PolicyV1Api(bench.api).list_namespaced_pod_disruption_budget,
        bench.apps.list_namespaced_deployment,
    )
    for listing in listings:
        response = listing(namespace, label_selector=selector, _preload_content=False)
        for item in json.loads(response.data)["items"]:
            counts[item["metadata"]["labels"].get("sovereign.dev/deployment", "")] += 1
    return counts


def scenario_burst(
    bench: Bench, operator: OperatorProcess, count: int, resync: float
) -> dict[str, Any]:
    ns = bench.namespace("bench-burst")
    assert operator.process is not None
    rss_idle = rss_mib(operator.process.pid)
    names = [f"burst-{i:04d}" for i in range(count)]
    began = datetime.now(UTC)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: bench.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, md_body(n, ns, replicas=0)), names))  # fmt: skip
    created = time.perf_counter() - started

    def converged(md: dict[str, Any]) -> bool:
        status = md.get("status") or {}
        progressing = [c for c in status.get("conditions", []) if c["type"] == "Progressing"]
        return (
            status.get("observedGeneration") == 1
            and bool(progressing)
            and (progressing[0]["status"] == "False")
        )

    def reconciled() -> bool:
        # Every status must have caught up with its Deployment's controller, not only exist.
        observed = [m for m in bench.list_mds(ns) if converged(m)]
        if len(observed) < count:
            return False
        children = children_complete(bench, ns)
        return sum(1 for n in names if children[n] == CHILD_KINDS) == count

    wait(reconciled, 1800, "the burst to be reconciled", interval=3.0)
    elapsed = time.perf_counter() - started
    # Status keeps following the Deployments for a while (their controller reports after
    # our create): "settled" is when the operator has written nothing for 20 s.
    quiet_since, last = time.monotonic(), operator_writes(operator)
    while time.monotonic() - quiet_since < 20:
        time.sleep(2)
        now = operator_writes(operator)
        if now != last:
            quiet_since, last = time.monotonic(), now
    settle = time.perf_counter() - started
    settled = datetime.now(UTC)
    rss_loaded = rss_mib(operator.process.pid)

    noop_before = reconcile_count(operator, "noop")
    time.sleep(resync * 1.5)
    resynced = datetime.now(UTC)
    noop_passes = reconcile_count(operator, "noop") - noop_before
    result: dict[str, Any] = {
        "count": count,
        "create_requests_s": round(created, 1),
        "all_reconciled_s": round(elapsed, 1),
        "quiet_after_s": round(settle, 1),
        "per_second": round(count / elapsed, 1),
        "rss_mib": {"idle": rss_idle, f"{count}_objects": rss_loaded},
        "resync": {"window_s": resync * 1.5, "noop_passes": noop_passes},
    }
    result["windows"] = {
        "create": [began.isoformat(), settled.isoformat()],
        "resync": [settled.isoformat(), resynced.isoformat()],
    }
    if bench.audit_log is not None:
        on_create = audit_writes(bench.audit_log, began, settled)
        on_resync = audit_writes(bench.audit_log, settled, resynced)
        result["writes_per_md_on_create"] = round(sum(on_create.values()) / count, 2)
        result["writes_on_create_by_request"] = {
            k: round(v / count, 2) for k, v in sorted(on_create.items())
        }
        result["writes_per_md_on_noop_resync"] = round(sum(on_resync.values()) / count, 3)
        result["writes_on_noop_resync_by_request"] = dict(sorted(on_resync.items()))
    return result


def operator_writes(operator: OperatorProcess) -> float:
    """Every write the reconciler sent so far (its own counter)."""
    return sum(
        float(line.split()[-1])
        for line in operator.metrics().splitlines()
        if line.startswith("sovereign_operator_api_writes_total{")
    )


def reconcile_count(operator: OperatorProcess, result: str) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith(f'sovereign_operator_reconciles_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


def markdown(report: dict[str, Any]) -> str:
    burst = report["burst"]
    rows = [
        ("apply -> Ready, with engine pod (p50 / p99)", f"{report['ready']['p50_ms']} / {report['ready']['p99_ms']} ms over {report['ready']['n']}"),
        ("apply -> all children created (p50 / p99)", f"{report['latency']['p50_ms']} / {report['latency']['p99_ms']} ms over {report['latency']['n']}"),
        (f"burst of {burst['count']}: all reconciled", f"{burst['all_reconciled_s']} s ({burst['per_second']} /s); no more writes after {burst['quiet_after_s']} s"),
        (f"burst of {burst['count']}: all deleted (children first)", f"{burst.get('all_deleted_s', 'n/a')} s"),
        ("API writes per ModelDeployment on create", str(burst.get("writes_per_md_on_create", "n/a"))),
        ("API writes per ModelDeployment on a no-op resync", f"{burst.get('writes_per_md_on_noop_resync', 'n/a')} ({burst['resync']['noop_passes']:.0f} passes)"),
        ("operator RSS, idle", f"{burst['rss_mib']['idle']} MiB"),
        (f"operator RSS, {burst['count']} ModelDeployments", f"{burst['rss_mib'][str(burst['count']) + '_objects']} MiB"),
    ]  # fmt: skip
    lines = ["| measure | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    if "writes_on_create_by_request" in burst:
        lines += ["", "Writes per ModelDeployment on create, by request:", "",
                  "| request | per ModelDeployment |", "|---|---|",
                  *(f"| {k} | {v} |" for k, v in burst["writes_on_create_by_request"].items())]  # fmt: skip
    lines += ["", f"Machine: {report['machine']}; {report['when']}."]
    return "\n".join(lines) + "\n"


def write_results(report: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "operator.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "operator.md").write_text(markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ready", type=int, default=20)
    parser.add_argument("--latency", type=int, default=100)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--resync-seconds", type=float, default=60.0)
    parser.add_argument("--kubeconfig", type=Path, default=os.environ.get("SOVEREIGN_KUBECONFIG"))
    args = parser.parse_args()

    state_root: Path | None = None
    if args.kubeconfig is None:
        state_root = Path(tempfile.mkdtemp(prefix="operator-bench-cluster-")) / "state"
        info = local.up(state_root, progress=lambda m: print(f"[cluster] {m}", file=sys.stderr))
        kubeconfig = StateDir(Path(info.state_dir)).admin_kubeconfig
    else:
        kubeconfig = Path(args.kubeconfig)
    state = StateDir(kubeconfig.parent) if (kubeconfig.parent / CLUSTER_FILE).is_file() else None
    binaries = ensure_binaries()
    bench = Bench(
        kubeconfig, binaries.kubectl, binaries.helm, state.logs / "audit.log" if state else None
    )
    try:
        operator_kubeconfig = bench.install()
        metrics_port, health_port = free_ports(2)
        operator = OperatorProcess(
            kubeconfig=operator_kubeconfig,
            log=bench.workdir / "operator.log",
            metrics_port=metrics_port,
            health_port=health_port,
            extra_args=("--all-namespaces", f"--resync-seconds={args.resync_seconds}"),
        )
        with operator.running():
            time.sleep(5)
            print(f"ready: {args.ready} apply -> Ready ...", file=sys.stderr)
            ready = scenario_ready(bench, args.ready)
            print(f"latency: {args.latency} apply -> children ...", file=sys.stderr)
            latency = scenario_latency(bench, args.latency)
            print(f"burst: {args.burst} ModelDeployments ...", file=sys.stderr)
            burst = scenario_burst(bench, operator, args.burst, args.resync_seconds)
            report: dict[str, Any] = {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
                "ready": ready,
                "latency": latency,
                "burst": burst,
                "operator_log": str(operator.log),
            }
            write_results(report)
            print("deleting the burst (the operator finalizes each one) ...", file=sys.stderr)
            started = time.perf_counter()
            bench.delete_all("bench-burst")
            report["burst"]["all_deleted_s"] = round(time.perf_counter() - started, 1)
            write_results(report)
            print(markdown(report))
    finally:
        bench.cleanup()
        bench.api.close()
        if state_root is not None:
            local.down(state_root)


if __name__ == "__main__":
    try:
        main()
    except (TimeoutError, RuntimeError, ApiException) as error:
        print(f"operator bench failed: {error}", file=sys.stderr)
        sys.exit(1)
