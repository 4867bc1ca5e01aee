"""Group pods as local processes: `sovereign-worker group-node` with the argv the renderer
writes (`contract.group_node_args`) and the environment the pod template gives.

Two differences from a cluster, both forced by running every "pod" on one host: each pod
gets its own API port in the vLLM flags (members answer /health on it), and the leader's
address is 127.0.0.1 instead of its headless-Service DNS name. A pod "dies" by SIGKILL of
its whole process tree, as when its container is killed.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sovereign_worker.multinode.contract import POD_IP_ENV, RANK_ENV, GroupCommand, group_node_args
from sovereign_worker.sovereignty import sovereignty_env
from tests.engine.support import WORKER, record_start, tail

# Until `register_commands` is called from sovereign_worker.cli, the same click group is
# run with the group commands added; afterwards the installed entry point is used as is.
_SHIM: Final = (
    "from sovereign_worker.cli import main\n"
    "from sovereign_worker.multinode.commands import register_commands\n"
    "register_commands(main)\n"
    "main()\n"
)


def psutil_module() -> Any:
    """psutil comes with vLLM, not with this package: imported where vLLM runs only, so
    collecting this tier on a machine without vLLM still works (its tests then skip)."""
    return importlib.import_module("psutil")


def worker_argv() -> list[str]:
    """How to run `sovereign-worker` with the group commands on this checkout."""
    probe = subprocess.run(
        [str(WORKER), "group-node", "--help"], capture_output=True, check=False, timeout=60
    )
    return [str(WORKER)] if probe.returncode == 0 else [sys.executable, "-c", _SHIM]


def pod_environment(root: Path, rank: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The engine container's environment: the sovereignty variables (their writable
    emptyDirs recreated under `root`), the downward-API rank and address, no AWS_*."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    for name, value in sovereignty_env().items():
        env[name] = value
        if value.startswith("/"):
            folder = root / value.lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            env[name] = str(folder)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env[RANK_ENV] = str(rank)
    env[POD_IP_ENV] = "127.0.0.1"
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; the CPU backend's KV cache, sized for CI
    return env | (extra or {})


@dataclass
class GroupPod:
    rank: int
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def last_line(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self) -> int:
        """HTTP status of GET /health on the pod's port; 0 when nothing answers."""
        try:
            url = f"http://127.0.0.1:{self.port}/health"
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    def wait(self, seconds: float) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"rank {self.rank} still runs after {seconds:.0f} s:\n{tail(self.log)}"
            ) from None

    def tree(self) -> list[Any]:
        """The pod's processes (psutil.Process), the main one first; empty once it is gone."""
        psutil = psutil_module()
        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """The container dies: every process of the pod at once."""
        for process in self.tree():
            with contextlib.suppress(psutil_module().NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        """The kubelet stops the pod: SIGTERM to its main process only."""
        self.process.send_signal(signal.SIGTERM)


def start_pod(
    rank: int,
    command: GroupCommand,
    model_dir: Path,
    vllm_flags: Sequence[str],
    root: Path,
    *,
    port: int,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
) -> GroupPod:
    """Start one pod of the group as its engine container would run; `options` are added
    before the rendered ones (the Ray tests name their stand-in GPU resource there)."""
    pod_root = root / f"pod-{rank}"
    pod_root.mkdir(parents=True, exist_ok=True)
    log = pod_root / "engine.log"
    rendered = group_node_args(command, str(model_dir), vllm_flags)
    argv = [*worker_argv(), rendered[0], *options, *rendered[1:]]
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv,
            env=pod_environment(pod_root, rank, env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record_start(f"{command.backend} group rank {rank}")
    return GroupPod(rank, process, log, port)


def stop_pods(pods: Sequence[GroupPod]) -> None:
    """Leave nothing behind: SIGTERM, then SIGKILL every process of every pod."""
    for pod in pods:
        if pod.process.poll() is None:
            pod.terminate()
    deadline = time.monotonic() + 40
    for pod in pods:
        with contextlib.suppress(subprocess.TimeoutExpired):
            pod.process.wait(timeout=max(deadline - time.monotonic(), 1))
        pod.kill()


def wait_until(check: Any, seconds: float, what: str, pods: Sequence[GroupPod]) -> None:
    """Poll `check()` until true; fail with every pod's log tail when it never is."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        for pod in pods:
            if pod.process.poll() is not None:
                raise AssertionError(
                    f"rank {pod.rank} exited with {pod.process.returncode} while waiting for "
                    f"{what}:\n{tail(pod.log)}"
                )
        time.sleep(1)
    logs = "\n".join(f"--- rank {pod.rank}\n{tail(pod.log, 30)}" for pod in pods)
    raise AssertionError(f"{what} did not happen within {seconds:.0f} s:\n{logs}")
