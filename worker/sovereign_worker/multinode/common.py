"""What every group command shares: its options, vLLM's argv, the environment, signals.

The vLLM flags after `--` are the ones the renderer wrote for the plan, checked exactly as
`serve` checks them (and the model folder too: a pod whose fetch-and-verify step did not
leave a model there refuses to start). The group's own flags (`--nnodes`, `--node-rank`,
`--headless`, the executor backend) are added here from the pod's identity, never taken
from the rendered flags: users cannot pass them at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from pydantic import ValidationError

from sovereign_worker.engine_args import EngineLaunch, MultiNodeLaunch, build_vllm_argv
from sovereign_worker.multinode.contract import Backend
from sovereign_worker.serve import ServeError, engine_environment, launch_from_flags, vllm_argv

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
# After a pod of the group is lost there is nothing left to drain: stop fast.
LOST_GRACE_SECONDS: Final = 5.0
# Beyond vLLM's own --shutdown-timeout drain, for its processes to exit.
EXIT_MARGIN_SECONDS: Final = 15.0
HEALTH_POLL_SECONDS: Final = 2.0


@dataclass(frozen=True)
class GroupOptions:
    """The parsed options of a group command."""

    backend: Backend
    nnodes: int
    rank: int
    leader_address: str
    gpus_per_node: int
    join_timeout: float
    model_dir: Path
    vllm_flags: tuple[str, ...]
    master_port: int
    link_port: int
    ray_port: int
    ray_gpu_resource: str
    pod_ip: str | None

    def check_rank(self) -> None:
        if not 0 <= self.rank < self.nnodes:
            raise ServeError(
                f"rank {self.rank} is outside this {self.nnodes}-node group; the rank comes "
                "from the pod's StatefulSet ordinal (label apps.kubernetes.io/pod-index)"
            )


@dataclass(frozen=True)
class EngineCommand:
    argv: list[str]
    launch: EngineLaunch


def engine_command(options: GroupOptions, node: MultiNodeLaunch) -> EngineCommand:
    """vLLM's argv for this pod: the rendered flags, checked like `serve`, plus `node`'s."""
    vllm_argv(options.model_dir, options.vllm_flags)  # the same checks as `serve`, first
    base = launch_from_flags(options.vllm_flags)
    try:
        launch = EngineLaunch.model_validate({**base.model_dump(), "multi_node": node})
    except ValidationError as error:
        raise ServeError(f"invalid group layout: {error}") from None
    return EngineCommand(build_vllm_argv(str(options.model_dir), launch), launch)


def child_environment(pod_ip: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The sovereignty environment of `serve`, plus the address vLLM advertises to its peers.

    Without VLLM_HOST_IP vLLM guesses its address from the default route, which a pod
    without egress may not have.
    """
    env = engine_environment(os.environ)
    if pod_ip:
        env["VLLM_HOST_IP"] = pod_ip
    env.update(extra or {})
    return env


def shutdown_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT: the kubelet stopping the pod, or someone pressing Ctrl-C."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, event.set)
    return event


async def watch_engine_health(port: int, report: asyncio.Event) -> None:
    """Set `report` once vLLM's /health answers 200 on `port` (it keeps polling until then)."""
    url = f"http://127.0.0.1:{port}/health"
    timeout = aiohttp.ClientTimeout(total=HEALTH_POLL_SECONDS * 2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not report.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        log.info("vLLM answers on port %d: the group is serving", port)
                        report.set()
                        return
            await asyncio.sleep(HEALTH_POLL_SECONDS)


def exited_message(name: str, code: int, last_error: str | None) -> str:
    reason = f": {last_error}" if last_error else ""
    return f"{name} exited with code {code}{reason}"
