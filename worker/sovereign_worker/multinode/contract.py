"""The group commands' contract: the argv the renderer writes and `group-node` reads back.

Pure, like `engine_args`: the operator imports it to render a group's pods, the worker's
commands parse exactly these options, so the two sides cannot drift apart.

Every pod of a group runs the same argv (a StatefulSet has one pod template); the pod's
rank comes from its StatefulSet ordinal, exposed as `RANK_ENV` through the downward API,
and decides whether it leads (rank 0: serves the API) or follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from sovereign_worker.engine_args import HOST_PATTERN

Backend = Literal["ray", "native"]

GROUP_NODE_COMMAND: Final = "group-node"
RANK_ENV: Final = "SOVEREIGN_NODE_RANK"
"""The pod's rank in its group: the StatefulSet ordinal (label apps.kubernetes.io/pod-index)."""
POD_IP_ENV: Final = "SOVEREIGN_POD_IP"
"""The pod's own address (status.podIP); Ray advertises it to the other nodes."""

# Ports inside a group. The group NetworkPolicy opens all TCP between the group's pods,
# because NCCL, Gloo, Ray and vLLM's native mode also use ephemeral ports.
MASTER_PORT: Final = 29500
"""torch.distributed's rendezvous on the leader (native backend)."""
LINK_PORT: Final = 29400
"""The leader's group link: members register here and exchange heartbeats (native backend)."""
RAY_PORT: Final = 6379
"""The Ray head's GCS port; outside Ray's default worker port range (10002-19999)."""
# Longer than a large model's fetch and verification on the slowest member, shorter than the
# engine's startup probe allows (an hour), so a group that cannot form fails with a message
# instead of being killed silently by the kubelet.
DEFAULT_JOIN_TIMEOUT: Final = 1800


class GroupCommand(BaseModel):
    """How one pod of a group starts; rendered once for all pods of the group."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Backend
    nnodes: int = Field(ge=2, le=64)
    leader_address: str = Field(pattern=HOST_PATTERN)
    """The leader pod's stable DNS name, from the group's headless Service."""
    gpus_per_node: int = Field(ge=1, le=64)
    join_timeout_seconds: int = Field(default=DEFAULT_JOIN_TIMEOUT, ge=1, le=86_400)
    master_port: int = Field(default=MASTER_PORT, ge=1, le=65535)
    link_port: int = Field(default=LINK_PORT, ge=1, le=65535)
    ray_port: int = Field(default=RAY_PORT, ge=1, le=65535)


def group_node_args(command: GroupCommand, model_dir: str, vllm_flags: Sequence[str]) -> list[str]:
    """`sovereign-worker group-node ...` args, the plan's vLLM flags after `--`."""
    args = [
        GROUP_NODE_COMMAND,
        "--backend",
        command.backend,
        "--nnodes",
        str(command.nnodes),
        "--leader-address",
        command.leader_address,
        "--gpus-per-node",
        str(command.gpus_per_node),
        "--join-timeout",
        str(command.join_timeout_seconds),
    ]
    if command.backend == "native":
        args += ["--master-port", str(command.master_port), "--link-port", str(command.link_port)]
    else:
        args += ["--ray-port", str(command.ray_port)]
    return [*args, "--model-dir", model_dir, "--", *vllm_flags]


def group_ports(command: GroupCommand) -> list[tuple[str, int]]:
    """(name, port) of the fixed ports a group's leader listens on besides the API."""
    if command.backend == "native":
        return [("rendezvous", command.master_port), ("group-link", command.link_port)]
    return [("ray-gcs", command.ray_port)]
