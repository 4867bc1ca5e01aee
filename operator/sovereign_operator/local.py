"""Running the operator outside the cluster, as the chart's ServiceAccount.

On the local control plane pods are simulated, so the operator cannot run in one: the
demo, the integration tests and the benchmark install the chart with
`operator.enabled=false` and run `sovereign run` on the host with a TokenRequest token of
the chart's ServiceAccount. The operator then has exactly the chart's RBAC, no more.

`python -m sovereign_operator.local kubeconfig ...` writes such a kubeconfig for scripts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

RELEASE = "sovereign-operator"
NAMESPACE = "sovereign-system"
TOKEN_SECONDS = 24 * 3600


def service_account_kubeconfig(
    admin_kubeconfig: Path,
    out: Path,
    *,
    namespace: str = NAMESPACE,
    service_account: str = RELEASE,
    seconds: int = TOKEN_SECONDS,
) -> Path:
    """A kubeconfig that authenticates as `namespace/service_account` with a bound token."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    api = k8s_config.new_client_from_config(config_file=str(admin_kubeconfig))  # type: ignore[no-untyped-call]
    try:
        request: Any = {"spec": {"expirationSeconds": seconds}}
        token = k8s.CoreV1Api(api).create_namespaced_service_account_token(
            service_account, namespace, request
        )
    finally:
        api.close()
    user = f"system:serviceaccount:{namespace}:{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster["cluster"]}],
        "users": [{"name": user, "user": {"token": token.status.token if token.status else ""}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": user}}],
        "current-context": "operator",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


@dataclass
class OperatorProcess:
    """`sovereign run` as a child process, with its log in a file."""

    kubeconfig: Path
    log: Path
    metrics_port: int
    health_port: int
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "sovereign_operator.commands.run",
            f"--kubeconfig={self.kubeconfig}",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            "--bind-address=127.0.0.1",
            f"--operator-namespace={NAMESPACE}",
            *self.extra_args,
        ]

    def start(self, ready_timeout: float = 60.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=env)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"the operator exited with {self.process.returncode}; see {self.log}"
                )
            if self.probe("/readyz") == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the operator was not ready after {timeout:.0f} s; see {self.log}")

    def probe(self, path: str) -> int | None:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    @contextmanager
    def running(self, ready_timeout: float = 60.0) -> Iterator[OperatorProcess]:
        self.start(ready_timeout)
        try:
            yield self
        finally:
            self.stop()


@click.group()
def main() -> None:
    """Helpers for running the operator on this machine."""


@main.command("kubeconfig")
@click.option("--admin-kubeconfig", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--namespace", default=NAMESPACE, show_default=True)
@click.option("--service-account", default=RELEASE, show_default=True)
@click.option("--seconds", type=int, default=TOKEN_SECONDS, show_default=True)
def kubeconfig_command(
    admin_kubeconfig: Path, out: Path, namespace: str, service_account: str, seconds: int
) -> None:
    """Write a kubeconfig for a ServiceAccount's TokenRequest token."""
    service_account_kubeconfig(
        admin_kubeconfig, out, namespace=namespace, service_account=service_account, seconds=seconds
    )
    click.echo(out)


if __name__ == "__main__":
    main()
