"""`native-leader` and `native-member`: a group on vLLM's own multi-node mode, without Ray.

    leader (rank 0): vllm serve DIR ... --distributed-executor-backend mp --nnodes N
                     --node-rank 0 --master-addr LEADER --master-port P   (serves the API)
    member (rank R): the same with --node-rank R --headless              (workers only)

Both first form the group over the group link (`link`), so vLLM starts only once every pod
is there, and both end the group when any pod of it is lost. On SIGTERM each stops its vLLM
(which drains for --shutdown-timeout) and exits 0.
"""

from __future__ import annotations

import asyncio
import logging

from sovereign_worker.engine_args import MultiNodeLaunch
from sovereign_worker.multinode.common import (
    EXIT_MARGIN_SECONDS,
    LOST_GRACE_SECONDS,
    GroupOptions,
    child_environment,
    engine_command,
    exited_message,
    shutdown_event,
    watch_engine_health,
)
from sovereign_worker.multinode.health import HealthServer
from sovereign_worker.multinode.link import GroupError, LeaderLink, MemberLink, first_of
from sovereign_worker.multinode.process import Child, start_child
from sovereign_worker.serve import ServeError

log = logging.getLogger(__name__)


def _node(options: GroupOptions) -> MultiNodeLaunch:
    return MultiNodeLaunch(
        backend="native",
        nnodes=options.nnodes,
        node_rank=options.rank,
        master_addr=options.leader_address,
        master_port=options.master_port,
    )


async def run_native_leader(options: GroupOptions) -> None:
    """Form the group, run vLLM's API node, end the group when anything is lost.

    Returns after a clean shutdown (SIGTERM); raises GroupError or ServeError otherwise.
    """
    if options.rank != 0:
        raise ServeError(f"native-leader runs on rank 0; this pod is rank {options.rank}")
    command = engine_command(options, _node(options))
    stop = shutdown_event()
    link = LeaderLink(options.nnodes, options.link_port)
    await link.start()
    try:
        joined, _ = await first_of(
            stop=stop.wait(), joined=link.wait_for_members(options.join_timeout)
        )
        if joined == "stop":
            log.info("stopped before the group formed")
            return
        await link.release()
        engine = await start_child("vLLM", command.argv, child_environment(options.pod_ip))
        serving = asyncio.Event()
        health = asyncio.create_task(watch_engine_health(command.launch.port, serving))
        serving_task = asyncio.create_task(_mark_serving(link, serving))
        try:
            await _supervise(engine, link, stop, command.launch.shutdown_timeout_seconds)
        finally:
            health.cancel()
            serving_task.cancel()
            await engine.stop(LOST_GRACE_SECONDS)
    finally:
        await link.close()


async def _mark_serving(link: LeaderLink, serving: asyncio.Event) -> None:
    await serving.wait()
    link.state = "serving"


async def _supervise(engine: Child, link: LeaderLink, stop: asyncio.Event, drain: int) -> None:
    what, result = await first_of(stop=stop.wait(), exited=engine.wait(), lost=link.lost)
    if what == "stop":
        await link.close()  # the members are being stopped too: not a loss
        await engine.stop(drain + EXIT_MARGIN_SECONDS)
        return
    if what == "lost":
        log.error("%s; stopping vLLM so the group restarts as a whole", result)
        await engine.stop(LOST_GRACE_SECONDS)
        raise GroupError(f"{result}; the group stops so that it restarts as a whole")
    raise GroupError(exited_message("vLLM", int(result), engine.last_error()))


async def run_native_member(options: GroupOptions) -> None:
    """Join the leader, run vLLM's workers headless, end when the leader or vLLM is gone."""
    if options.rank == 0:
        raise ServeError("native-member runs on ranks 1 and up; rank 0 is the leader")
    command = engine_command(options, _node(options))
    stop = shutdown_event()
    link = MemberLink(options.leader_address, options.link_port, options.rank, options.nnodes)
    engine: Child | None = None

    def healthy() -> str | None:
        if engine is None or engine.returncode is not None:
            return "vLLM's workers are not running"
        if link.leader_state != "serving":
            return f"the group is not serving yet (leader: {link.leader_state})"
        return None

    health = HealthServer(command.launch.port, healthy)
    await health.start()
    try:
        joined, _ = await first_of(stop=stop.wait(), joined=link.join(options.join_timeout))
        if joined == "stop":
            log.info("stopped before joining the group")
            return
        engine = await start_child("vLLM", command.argv, child_environment(options.pod_ip))
        if link.lost is None:  # set by a successful join
            raise GroupError("the group link was not established")
        what, result = await first_of(stop=stop.wait(), exited=engine.wait(), lost=link.lost)
        if what == "stop":
            await engine.stop(command.launch.shutdown_timeout_seconds + EXIT_MARGIN_SECONDS)
            return
        if what == "lost":
            log.error("%s; stopping vLLM's workers", result)
            await engine.stop(LOST_GRACE_SECONDS)
            raise GroupError(f"{result}; the group stops so that it restarts as a whole")
        raise GroupError(exited_message("vLLM", int(result), engine.last_error()))
    finally:
        if engine is not None:
            await engine.stop(LOST_GRACE_SECONDS)
        await link.close()
        await health.stop()
