"""`ray-leader` and `ray-member`: a group on a Ray cluster, vLLM's classic multi-node path.

    leader (rank 0): ray start --head --block ...; wait until every member's node joined
                     with its GPUs; vllm serve DIR ... --distributed-executor-backend ray
    member (rank R): ray start --address LEADER:PORT --block ..., retried until it answers

The leader watches Ray's node table for as long as vLLM runs: when a node of the group
dies, it stops vLLM and exits non-zero, so the group restarts as a whole. Ray runs with its
dashboard off and usage reporting disabled; its ports are reachable only inside the group.

vLLM's CPU build refuses the Ray executor ("current platform cpu does not support ray"), so
on CPU the group forms and the leader then fails with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sovereign_worker.engine_args import MultiNodeLaunch
from sovereign_worker.multinode.common import (
    EXIT_MARGIN_SECONDS,
    LOST_GRACE_SECONDS,
    GroupOptions,
    child_environment,
    engine_command,
    exited_message,
    shutdown_event,
)
from sovereign_worker.multinode.health import HealthServer
from sovereign_worker.multinode.link import GroupError, first_of
from sovereign_worker.multinode.process import Child, start_child
from sovereign_worker.serve import ServeError

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 2.0
RAY_STOP_SECONDS: Final = 30.0
# How long a member tolerates an unreachable head before it leaves; Ray's own raylet gives
# up only after a minute (gcs_rpc_server_reconnect_timeout_s).
LEADER_SILENCE_SECONDS: Final = 20.0
GPU: Final = "GPU"
# A `ray start` that fails sooner than this never joined; one that ran longer was a member.
REGISTER_SECONDS: Final = 60.0


@dataclass(frozen=True)
class RayNode:
    address: str
    alive: bool
    gpus: float


def _ray_executable(env: Mapping[str, str]) -> str:
    found = shutil.which("ray", path=env.get("PATH"))
    if found is None:
        raise ServeError("'ray' is not on PATH; the engine image must provide Ray")
    return found


def _resource_flags(options: GroupOptions) -> list[str]:
    """GPUs as Ray sees them; tests stand other resource names in for GPUs."""
    if options.ray_gpu_resource == GPU:
        return ["--num-gpus", str(options.gpus_per_node)]
    return ["--resources", json.dumps({options.ray_gpu_resource: options.gpus_per_node})]


def _common_ray_flags(options: GroupOptions) -> list[str]:
    flags = ["--block", "--disable-usage-stats", *_resource_flags(options)]
    if options.pod_ip:
        # Without it Ray guesses the address from the default route, which may not be the
        # pod network (and a pod without egress may have no default route at all).
        flags += ["--node-ip-address", options.pod_ip]
    return flags


def _ray() -> Any:
    """The `ray` module, imported on use: only Ray groups need it, and only their image has
    it (it is not a dependency of this package, so it is typed as Any here)."""
    return importlib.import_module("ray")


class RayWatcher:
    """Reads Ray's node table as a driver of the cluster (`ray.nodes()`)."""

    def __init__(self, address: str, resource: str) -> None:
        self._address = address
        self._resource = resource
        self._connected = False

    def nodes(self) -> list[RayNode]:
        """Blocking; run it in a thread. Connects on first use."""
        ray = _ray()
        if not self._connected:
            ray.init(
                address=self._address,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
            self._connected = True
        raw: list[dict[str, Any]] = ray.nodes()
        return [
            RayNode(
                address=str(node.get("NodeManagerAddress", "?")),
                alive=bool(node.get("Alive")),
                gpus=float((node.get("Resources") or {}).get(self._resource, 0)),
            )
            for node in raw
        ]

    def close(self) -> None:
        if self._connected:
            _ray().shutdown()


def _usable(nodes: list[RayNode], gpus: int) -> list[RayNode]:
    return [node for node in nodes if node.alive and node.gpus >= gpus]


async def _wait_for_nodes(
    watcher: RayWatcher, head: Child, options: GroupOptions, stop: asyncio.Event
) -> bool:
    """True once the group's nodes joined; False on stop; GroupError on timeout."""
    deadline = time.monotonic() + options.join_timeout
    seen: list[RayNode] = []
    last_error = ""
    while time.monotonic() < deadline and not stop.is_set():
        if head.returncode is not None:
            raise GroupError(exited_message("the Ray head", head.returncode, head.last_error()))
        try:
            seen = await asyncio.to_thread(watcher.nodes)
        except Exception as error:  # Ray raises many kinds while its head starts
            last_error = f" (last error: {error})"
        else:
            if len(_usable(seen, options.gpus_per_node)) >= options.nnodes:
                log.info("all %d Ray nodes joined: %s", options.nnodes, [n.address for n in seen])
                return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    if stop.is_set():
        return False
    usable = _usable(seen, options.gpus_per_node)
    raise GroupError(
        f"only {len(usable)} of {options.nnodes} Ray nodes with {options.gpus_per_node} "
        f"{options.ray_gpu_resource} joined within {options.join_timeout:.0f} s "
        f"(joined: {', '.join(n.address for n in usable) or 'none'}){last_error}; every member "
        f"must reach the head on TCP port {options.ray_port}: check that all of the group's "
        "pods are scheduled and running and what the missing ones log"
    )


async def _watch_nodes(watcher: RayWatcher, options: GroupOptions) -> str:
    """Returns a message when the group has lost a node."""
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            nodes = await asyncio.to_thread(watcher.nodes)
        except Exception as error:  # any failure to read the table counts as a loss
            return f"the Ray head stopped answering: {error}"
        usable = _usable(nodes, options.gpus_per_node)
        if len(usable) < options.nnodes:
            gone = [n.address for n in nodes if not n.alive]
            return (
                f"a member left the Ray cluster: {len(usable)} of {options.nnodes} nodes "
                f"alive (dead: {', '.join(gone) or 'unknown'})"
            )


async def run_ray_leader(options: GroupOptions) -> None:
    """Start the head, wait for the members, run vLLM on Ray; end when a node is lost."""
    if options.rank != 0:
        raise ServeError(f"ray-leader runs on rank 0; this pod is rank {options.rank}")
    command = engine_command(options, MultiNodeLaunch(backend="ray", nnodes=options.nnodes))
    host = options.pod_ip or "127.0.0.1"
    address = f"{host}:{options.ray_port}"
    env = child_environment(options.pod_ip)
    stop = shutdown_event()
    head_argv = [
        _ray_executable(env),
        "start",
        "--head",
        "--port",
        str(options.ray_port),
        "--include-dashboard",
        "false",
        *_common_ray_flags(options),
    ]
    head = await start_child("the Ray head", head_argv, env)
    watcher = RayWatcher(address, options.ray_gpu_resource)
    engine: Child | None = None
    try:
        if not await _wait_for_nodes(watcher, head, options, stop):
            return
        # vLLM joins the cluster this head formed instead of starting its own.
        engine = await start_child("vLLM", command.argv, {**env, "RAY_ADDRESS": address})
        what, result = await first_of(
            stop=stop.wait(),
            exited=engine.wait(),
            lost=_watch_nodes(watcher, options),
            head=head.wait(),
        )
        if what == "stop":
            await engine.stop(command.launch.shutdown_timeout_seconds + EXIT_MARGIN_SECONDS)
            return
        if what == "lost":
            log.error("%s; stopping vLLM so the group restarts as a whole", result)
            raise GroupError(f"{result}; the group stops so that it restarts as a whole")
        if what == "head":
            raise GroupError(exited_message("the Ray head", int(result), head.last_error()))
        raise GroupError(exited_message("vLLM", int(result), engine.last_error()))
    finally:
        if engine is not None:
            await engine.stop(LOST_GRACE_SECONDS)
        await asyncio.to_thread(watcher.close)
        await head.stop(RAY_STOP_SECONDS)


def _resolve(host: str) -> str:
    return socket.gethostbyname(host)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=POLL_SECONDS):
            return True
    except OSError:
        return False


async def _wait_for_head(options: GroupOptions, deadline: float, stop: asyncio.Event) -> str:
    """The head's IP once its port answers; the DNS record may not exist at first."""
    last_error = "no attempt"
    while time.monotonic() < deadline and not stop.is_set():
        try:
            ip = await asyncio.to_thread(_resolve, options.leader_address)
            if await asyncio.to_thread(_reachable, ip, options.ray_port):
                return ip
            last_error = f"{ip}:{options.ray_port} refused or did not answer"
        except OSError as error:
            last_error = f"{options.leader_address} does not resolve ({error})"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    if stop.is_set():
        return ""
    raise GroupError(
        f"the Ray head at {options.leader_address}:{options.ray_port} did not answer within "
        f"{options.join_timeout:.0f} s (last: {last_error}); check that the leader pod "
        "(rank 0) is running and what it logs"
    )


async def _watch_head(ip: str, port: int) -> str:
    silent_since: float | None = None
    while True:
        await asyncio.sleep(POLL_SECONDS)
        if await asyncio.to_thread(_reachable, ip, port):
            silent_since = None
            continue
        silent_since = silent_since or time.monotonic()
        if time.monotonic() - silent_since > LEADER_SILENCE_SECONDS:
            return f"the Ray head {ip}:{port} has not answered for {LEADER_SILENCE_SECONDS:.0f} s"


async def run_ray_member(options: GroupOptions) -> None:
    """Join the leader's Ray cluster (retrying until it answers) and stay until told to stop."""
    if options.rank == 0:
        raise ServeError("ray-member runs on ranks 1 and up; rank 0 is the leader")
    # The member runs no vLLM, but it checks the flags and the verified model like the
    # leader: a pod whose fetch step failed never joins a group.
    command = engine_command(options, MultiNodeLaunch(backend="ray", nnodes=options.nnodes))
    env = child_environment(options.pod_ip)
    stop = shutdown_event()
    deadline = time.monotonic() + options.join_timeout
    node: Child | None = None

    def healthy() -> str | None:
        if node is None or node.returncode is not None:
            return "this pod's Ray node is not running"
        return None

    health = HealthServer(command.launch.port, healthy)
    await health.start()
    try:
        while not stop.is_set():
            ip = await _wait_for_head(options, deadline, stop)
            if not ip:
                return
            argv = [_ray_executable(env), "start", "--address", f"{ip}:{options.ray_port}"]
            node = await start_child("the Ray node", [*argv, *_common_ray_flags(options)], env)
            started = time.monotonic()
            what, result = await first_of(
                stop=stop.wait(), exited=node.wait(), head=_watch_head(ip, options.ray_port)
            )
            if what == "stop":
                return
            if what == "head":
                # Ray would drain for 30 s towards a head that is gone: stop it fast.
                await node.stop(LOST_GRACE_SECONDS)
                raise GroupError(f"{result}; leaving so the group restarts as a whole")
            # A node that could not register (the head was still starting) tries again
            # until the join deadline; one that ran for a while and then died ends the pod.
            message = exited_message("ray start", int(result), node.last_error())
            if time.monotonic() >= deadline or time.monotonic() - started > REGISTER_SECONDS:
                raise GroupError(message)
            log.warning("%s; retrying", message)
    finally:
        if node is not None:
            await node.stop(RAY_STOP_SECONDS)
        await health.stop()
