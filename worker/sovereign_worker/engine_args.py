"""The engine contract: how vLLM is started, as one argv builder.

The operator renders the flags built here into the pod, and `sovereign-worker serve`
validates them again before it execs vLLM, so both sides apply one set of rules.
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sovereign_worker.extra_args import (
    MAX_EXTRA_ARGS,
    MAX_TOKEN_LENGTH,
    UNPRINTABLE,
    ArgProblem,
    validate_extra_args,
)

__all__ = [
    "MAX_EXTRA_ARGS",
    "MAX_TOKEN_LENGTH",
    "ArgProblem",
    "EngineLaunch",
    "MultiNodeLaunch",
    "build_vllm_argv",
    "build_vllm_flags",
    "validate_extra_args",
]

# Every address of the pod; the NetworkPolicy admits only the gateway and the metrics scraper.
LISTEN_HOST: Final = "0.0.0.0"  # noqa: S104
SERVED_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$"
# A DNS name or an IPv4 address: the leader's stable name from the group's headless Service.
HOST_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"


Dtype = Literal["auto", "bfloat16", "float", "float16", "float32", "half"]


class MultiNodeLaunch(BaseModel):
    """This pod's place in a multi-node group; set at run time by the group commands.

    Never rendered into a pod spec: the rank differs per pod of one StatefulSet, so the
    `sovereign-worker` group commands build it from the pod's identity when they start.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["ray", "native"]
    nnodes: int = Field(ge=2, le=64)
    node_rank: int = Field(default=0, ge=0)
    master_addr: str | None = Field(default=None, pattern=HOST_PATTERN)
    """The leader's address (native backend); the Ray backend finds the cluster itself."""
    master_port: int = Field(default=29500, ge=1, le=65535)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.backend == "native" and self.master_addr is None:
            raise ValueError("the native backend needs master_addr, the leader's address")
        if self.backend == "ray" and self.node_rank != 0:
            raise ValueError("with Ray only the leader (rank 0) runs vLLM")
        return self

    @property
    def headless(self) -> bool:
        """Followers run vLLM's workers only; the leader serves the API."""
        return self.node_rank > 0


class EngineLaunch(BaseModel):
    """Exactly how to start vLLM for one engine; `build_vllm_flags` turns it into argv."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    served_name: str = Field(pattern=SERVED_NAME_PATTERN)
    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    port: int = Field(default=8000, ge=1, le=65535)
    max_model_len: int | None = Field(default=None, ge=1)
    dtype: Dtype = "auto"
    quantization: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    enable_expert_parallel: bool = False
    trust_remote_code: bool = False
    shutdown_timeout_seconds: int = Field(default=30, ge=0, le=3600)
    extra_args: tuple[str, ...] = ()
    multi_node: MultiNodeLaunch | None = None
    """Set only for pods of a multi-node group; None for single-node engines."""

    @model_validator(mode="after")
    def _multi_node_layout(self) -> Self:
        node = self.multi_node
        if node is not None and node.backend == "native":
            # vLLM splits the world (tensor x pipeline) evenly over the nodes.
            world = self.tensor_parallel_size * self.pipeline_parallel_size
            if world % node.nnodes:
                raise ValueError(
                    f"tensor x pipeline ({world}) must be a multiple of nnodes ({node.nnodes})"
                )
        return self


def build_vllm_flags(launch: EngineLaunch) -> list[str]:
    """vLLM's flags for `launch`, in a fixed order, the validated extra args last.

    Raises ValueError naming every problem when the extra args are refused.
    """
    problems = validate_extra_args(
        launch.extra_args, allow_trust_remote_code=launch.trust_remote_code
    )
    if problems:
        raise ValueError("refused engine extra args: " + "; ".join(map(str, problems)))
    return [
        *_serving_flags(launch),
        *_parallel_flags(launch),
        *_multi_node_flags(launch.multi_node),
        *_model_flags(launch),
        *_safety_flags(launch),
        *launch.extra_args,
    ]


def build_vllm_argv(model_dir: str, launch: EngineLaunch) -> list[str]:
    """The whole command: `vllm serve MODEL_DIR FLAGS...`."""
    if not model_dir.startswith("/") or any(c in model_dir for c in UNPRINTABLE):
        raise ValueError(f"model directory must be an absolute single-line path, got {model_dir!r}")
    return ["vllm", "serve", model_dir, *build_vllm_flags(launch)]


def _serving_flags(launch: EngineLaunch) -> list[str]:
    return [
        "--served-model-name",
        launch.served_name,
        "--host",
        LISTEN_HOST,
        "--port",
        str(launch.port),
    ]


def _parallel_flags(launch: EngineLaunch) -> list[str]:
    flags = ["--tensor-parallel-size", str(launch.tensor_parallel_size)]
    # vLLM's default is 1; leaving it out keeps single-node commands short.
    if launch.pipeline_parallel_size > 1:
        flags += ["--pipeline-parallel-size", str(launch.pipeline_parallel_size)]
    return flags


def _multi_node_flags(node: MultiNodeLaunch | None) -> list[str]:
    """The flags that join this process to its group; users cannot pass these (extra_args)."""
    if node is None:
        return []
    if node.backend == "ray":
        # vLLM places its workers on the Ray cluster the leader formed (RAY_ADDRESS).
        return ["--distributed-executor-backend", "ray"]
    if node.master_addr is None:  # refused by MultiNodeLaunch already; keeps mypy sure
        raise ValueError("the native backend needs the leader's address")
    flags = [
        "--distributed-executor-backend",
        "mp",
        "--nnodes",
        str(node.nnodes),
        "--node-rank",
        str(node.node_rank),
        "--master-addr",
        node.master_addr,
        "--master-port",
        str(node.master_port),
    ]
    if node.headless:
        flags.append("--headless")
    return flags


def _model_flags(launch: EngineLaunch) -> list[str]:
    flags: list[str] = []
    if launch.max_model_len is not None:
        flags += ["--max-model-len", str(launch.max_model_len)]
    flags += ["--dtype", launch.dtype]
    if launch.quantization is not None:
        flags += ["--quantization", launch.quantization]
    if launch.gpu_memory_utilization is not None:
        # repr gives the shortest text that reads back as the same float (0.9, not 0.90000001).
        flags += ["--gpu-memory-utilization", repr(launch.gpu_memory_utilization)]
    if launch.enable_expert_parallel:
        flags.append("--enable-expert-parallel")
    return flags


def _safety_flags(launch: EngineLaunch) -> list[str]:
    # Remote code is off by default in vLLM 0.32 already; saying so explicitly keeps the
    # rendered pod self-evident to reviewers and survives a changed default.
    trust = "--trust-remote-code" if launch.trust_remote_code else "--no-trust-remote-code"
    # vLLM drains in-flight requests for this long on SIGTERM instead of aborting them.
    return [trust, "--shutdown-timeout", str(launch.shutdown_timeout_seconds)]
