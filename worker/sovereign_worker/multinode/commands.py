"""The click commands of multi-node groups, added to `sovereign-worker` by `register_commands`.

    sovereign-worker group-node --backend native|ray OPTIONS -- VLLM_FLAGS   # what pods run
    sovereign-worker native-leader | native-member OPTIONS -- VLLM_FLAGS
    sovereign-worker ray-leader | ray-member OPTIONS -- VLLM_FLAGS

Every pod of a group runs `group-node` with the same argv (one pod template per group); it
reads the pod's rank from SOVEREIGN_NODE_RANK and becomes the leader (rank 0) or a member.
The role commands exist for running and debugging one role by hand. Exit codes follow
`serve`: 0 after a clean SIGTERM, 1 when the group could not form, lost a pod or its engine
failed; the last line on stderr says which (the pod's termination message).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, NoReturn, get_args

import click

from sovereign_worker.multinode.common import EXIT_FAILED, GroupOptions
from sovereign_worker.multinode.contract import (
    GROUP_NODE_COMMAND,
    LINK_PORT,
    MASTER_PORT,
    POD_IP_ENV,
    RANK_ENV,
    RAY_PORT,
    Backend,
)
from sovereign_worker.multinode.link import GroupError
from sovereign_worker.multinode.native_group import run_native_leader, run_native_member
from sovereign_worker.multinode.ray_group import GPU, run_ray_leader, run_ray_member
from sovereign_worker.serve import ServeError

Runner = Callable[[GroupOptions], Coroutine[Any, Any, None]]

RUNNERS: Final[dict[tuple[str, bool], Runner]] = {
    ("native", True): run_native_leader,
    ("native", False): run_native_member,
    ("ray", True): run_ray_leader,
    ("ray", False): run_ray_member,
}
_PORT = click.IntRange(1, 65535)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


def _run(runner: Runner, options: GroupOptions) -> None:
    try:
        options.check_rank()
        asyncio.run(runner(options))
    except (GroupError, ServeError, OSError) as error:  # OSError: a child could not start
        _fail(str(error))
    logging.getLogger(__name__).info("stopped cleanly")


def _group_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every group command takes (the renderer writes them for `group-node`)."""
    decorators = [
        click.option("--nnodes", type=click.IntRange(2, 64), required=True, help="Pods in the group."),
        click.option(
            "--rank",
            type=click.IntRange(min=0),
            envvar=RANK_ENV,
            required=True,
            help=f"This pod's rank; 0 leads. Default: ${RANK_ENV} (the StatefulSet ordinal).",
        ),
        click.option(
            "--leader-address",
            required=True,
            help="The leader's DNS name or address (GROUP-0.GROUP.NAMESPACE.svc).",
        ),
        click.option(
            "--gpus-per-node", type=click.IntRange(1, 64), required=True, help="GPUs of each pod."
        ),
        click.option(
            "--join-timeout",
            type=click.FloatRange(min=1),
            default=1800,
            show_default=True,
            help="Seconds to wait for the rest of the group before failing.",
        ),
        click.option("--master-port", type=_PORT, default=MASTER_PORT, show_default=True, help="torch.distributed rendezvous port on the leader (native)."),
        click.option("--link-port", type=_PORT, default=LINK_PORT, show_default=True, help="The group link port on the leader (native)."),
        click.option("--ray-port", type=_PORT, default=RAY_PORT, show_default=True, help="The Ray head's port (ray)."),
        click.option(
            "--ray-gpu-resource",
            default=GPU,
            show_default=True,
            help="The Ray resource that counts GPUs (tests stand a custom resource in).",
        ),
        click.option("--pod-ip", envvar=POD_IP_ENV, default=None, help=f"This pod's address. Default: ${POD_IP_ENV}."),
        click.option(
            "--model-dir",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="The verified model folder (where fetch left it).",
        ),
        click.argument("vllm_flags", nargs=-1, type=click.UNPROCESSED),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _options(backend: Backend, values: dict[str, Any]) -> GroupOptions:
    return GroupOptions(
        backend=backend,
        nnodes=values["nnodes"],
        rank=values["rank"],
        leader_address=values["leader_address"],
        gpus_per_node=values["gpus_per_node"],
        join_timeout=values["join_timeout"],
        model_dir=values["model_dir"],
        vllm_flags=tuple(values["vllm_flags"]),
        master_port=values["master_port"],
        link_port=values["link_port"],
        ray_port=values["ray_port"],
        ray_gpu_resource=values["ray_gpu_resource"],
        pod_ip=values["pod_ip"],
    )


@click.command(GROUP_NODE_COMMAND)
@click.option("--backend", type=click.Choice(get_args(Backend)), required=True)
@_group_options
def group_node(backend: Backend, **values: Any) -> None:
    """Run this pod's part of a multi-node group: the leader on rank 0, a member otherwise."""
    options = _options(backend, values)
    _run(RUNNERS[(backend, options.rank == 0)], options)


def _role_command(name: str, backend: Backend, leader: bool, summary: str) -> click.Command:
    @_group_options
    def command(**values: Any) -> None:
        _run(RUNNERS[(backend, leader)], _options(backend, values))

    command.__doc__ = summary
    return click.command(name)(command)


ROLE_COMMANDS: Final = (
    _role_command("native-leader", "native", True, "Lead a group on vLLM's native multi-node mode (rank 0)."),
    _role_command("native-member", "native", False, "Join a native group and run vLLM headless."),
    _role_command("ray-leader", "ray", True, "Start the Ray head, wait for the members, run vLLM on Ray."),
    _role_command("ray-member", "ray", False, "Join the leader's Ray cluster and stay until stopped."),
)  # fmt: skip


def register_commands(main: click.Group) -> None:
    """Add `group-node` and the four role commands to the `sovereign-worker` group."""
    main.add_command(group_node)
    for command in ROLE_COMMANDS:
        main.add_command(command)
