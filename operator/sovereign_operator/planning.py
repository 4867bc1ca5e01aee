"""Spec + cluster facts -> ServingPlan: how many pods of which size, and how vLLM splits the model.

Pure. The rules follow vLLM's guidance: tensor parallel inside a node, pipeline parallel
across nodes. Every refusal names the field and what to change.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from sovereign_operator.api.base import MAX_NAME_LENGTH, NAME_PATTERN
from sovereign_operator.api.model_deployment import (
    EgressMode,
    EngineKind,
    ModelDeploymentSpec,
    ModelTask,
    MultiNodeBackend,
)
from sovereign_operator.api.problems import FieldProblem, InvalidSpec
from sovereign_worker.engine_args import EngineLaunch
from sovereign_worker.sources import ModelSource, Scheme, parse_model_source

DEFAULT_ENGINE_IMAGE: Final = "ghcr.io/sovereign-dev/sovereign-worker:0.1.0-vllm0.32.0"
ENGINE_PORT: Final = 8000
TRUST_REMOTE_CODE: Final = "--trust-remote-code"
# Schemes `sovereign-worker fetch` can serve today; others are refused at planning so a
# deployment never reaches a pod that cannot start.
FETCHABLE_SCHEMES: Final = frozenset({Scheme.PVC, Scheme.S3, Scheme.FILE})
# Engine settings only vLLM reads; the diffusers engine would silently ignore them.
_VLLM_ONLY_SETTINGS: Final = (
    "maxModelLen",
    "quantization",
    "gpuMemoryUtilization",
    "expertParallel",
)
_ENGINE_TASKS: Final = {
    EngineKind.VLLM: frozenset({ModelTask.TEXT_GENERATION, ModelTask.SPEECH_TO_TEXT}),
    EngineKind.DIFFUSERS: frozenset({ModelTask.TEXT_TO_IMAGE}),
}


@dataclass(frozen=True)
class ClusterFacts:
    """What planning needs to know about the cluster and the operator's configuration."""

    gpus_per_node_by_type: Mapping[str, int] = field(default_factory=dict)
    """Largest allocatable nvidia.com/gpu of a node, per nvidia.com/gpu.product label value."""
    default_gpus_per_node: int | None = None
    """Used when neither the spec nor the nodes say (e.g. `sovereign render --gpus-per-node`)."""
    default_image: str = DEFAULT_ENGINE_IMAGE
    allow_trust_remote_code: bool = False
    model_attention_heads: int | None = None
    """From the model's config.json when known, to check that tensor parallel divides it."""


@dataclass(frozen=True)
class PodResources:
    """Requests and limits of one engine pod."""

    gpus: int
    cpu: str
    memory: str
    shared_memory: str


@dataclass(frozen=True)
class ServingPlan:
    """Everything the renderers need, derived once from the spec and the facts."""

    name: str
    namespace: str
    spec: ModelDeploymentSpec
    source: ModelSource
    topology: Literal["single-node", "multi-node"]
    tensor: int
    pipeline: int
    pods_per_replica: int
    gpus_per_node: int | None
    pod: PodResources
    image: str
    engine: EngineLaunch
    template_hash: str
    """Changes whenever anything that shapes an engine pod changes (not replicas)."""

    @property
    def replicas(self) -> int:
        return self.spec.replicas

    @property
    def multi_node_backend(self) -> MultiNodeBackend | None:
        return self.spec.multi_node.backend if self.topology == "multi-node" else None

    @property
    def parallelism(self) -> str:
        return f"{self.tensor}x{self.pipeline}"


def plan(name: str, namespace: str, spec: ModelDeploymentSpec, facts: ClusterFacts) -> ServingPlan:
    """Decide the serving topology, or raise InvalidSpec listing every problem."""
    problems = [
        *_check_name(name),
        *_check_engine_task(spec),
        *_check_source(spec),
        *_check_trust_remote_code(spec, facts),
        *_check_network(spec),
    ]
    gpus_per_node, node_problems = _gpus_per_node(spec, facts)
    problems += node_problems
    if problems:
        raise InvalidSpec(problems)
    tensor, pipeline, pods, layout_problems = _layout(spec, gpus_per_node)
    layout_problems += _check_heads(tensor, facts)
    layout_problems += _check_expert_parallel(spec, tensor)
    if layout_problems:
        raise InvalidSpec(layout_problems)
    pod = _pod_resources(spec, spec.resources.gpus // pods)
    engine = _engine_launch(name, spec, tensor, pipeline, facts)
    image = spec.engine.image or facts.default_image
    return ServingPlan(
        name=name,
        namespace=namespace,
        spec=spec,
        source=parse_model_source(spec.model.source),
        topology="single-node" if pods == 1 else "multi-node",
        tensor=tensor,
        pipeline=pipeline,
        pods_per_replica=pods,
        gpus_per_node=gpus_per_node,
        pod=pod,
        image=image,
        engine=engine,
        template_hash=_template_hash(spec, image, tensor, pipeline, pod),
    )


def _check_name(name: str) -> list[FieldProblem]:
    if len(name) > MAX_NAME_LENGTH:
        return [
            FieldProblem(
                "metadata.name",
                f"is {len(name)} characters; at most {MAX_NAME_LENGTH} so derived child names fit",
            )
        ]
    if not re.match(NAME_PATTERN, name):
        return [
            FieldProblem(
                "metadata.name",
                f"{name!r} must start with a letter and hold only lowercase letters, digits "
                "and '-', because it names the model's Service",
            )
        ]
    return []


def _check_network(spec: ModelDeploymentSpec) -> list[FieldProblem]:
    source = parse_model_source(spec.model.source)
    network = spec.network
    if (
        source.scheme is Scheme.S3
        and network.egress is EgressMode.MODEL_STORE
        and not network.model_store_cidrs
    ):
        return [
            FieldProblem(
                "spec.network.modelStoreCidrs",
                "an s3:// source is fetched over the network: list the model store's address "
                "blocks here, or the NetworkPolicy blocks the fetch",
            )
        ]
    return []


def _check_engine_task(spec: ModelDeploymentSpec) -> list[FieldProblem]:
    kind, task = spec.engine.kind, spec.model.task
    problems = []
    if task not in _ENGINE_TASKS[kind]:
        fitting = [k.value for k, tasks in _ENGINE_TASKS.items() if task in tasks]
        problems.append(
            FieldProblem(
                "spec.engine.kind",
                f"engine {kind.value} cannot serve task {task.value}; use engine.kind "
                f"{' or '.join(fitting)}",
            )
        )
    if kind is EngineKind.DIFFUSERS:
        if spec.engine.extra_args:
            problems.append(
                FieldProblem(
                    "spec.engine.extraArgs", "are vLLM flags; remove them for the diffusers engine"
                )
            )
        problems += [
            FieldProblem(
                f"spec.engine.{name}", "is a vLLM setting; remove it for the diffusers engine"
            )
            for name in _VLLM_ONLY_SETTINGS
            if spec.engine.model_dump(by_alias=True)[name] not in (None, False)
        ]
        if spec.resources.gpus != 1:
            problems.append(
                FieldProblem(
                    "spec.resources.gpus", "the diffusers engine runs on exactly 1 GPU per replica"
                )
            )
    return problems


def _check_source(spec: ModelDeploymentSpec) -> list[FieldProblem]:
    source = parse_model_source(spec.model.source)
    if source.scheme not in FETCHABLE_SCHEMES:
        supported = ", ".join(sorted(f"{s.value}://" for s in FETCHABLE_SCHEMES))
        return [
            FieldProblem(
                "spec.model.source",
                f"{source.scheme.value}:// cannot be fetched by this worker version yet; "
                f"use one of {supported}",
            )
        ]
    return []


def _check_trust_remote_code(spec: ModelDeploymentSpec, facts: ClusterFacts) -> list[FieldProblem]:
    if facts.allow_trust_remote_code:
        return []
    return [
        FieldProblem(
            f"spec.engine.extraArgs[{index}]",
            f"{TRUST_REMOTE_CODE} runs code shipped with the model; it is refused unless a "
            "ModelPolicy sets allowTrustRemoteCode: true",
        )
        for index, token in enumerate(spec.engine.extra_args)
        if _is_trust_remote_code(token)
    ]


def _gpus_per_node(
    spec: ModelDeploymentSpec, facts: ClusterFacts
) -> tuple[int | None, list[FieldProblem]]:
    """How many GPUs a node of the wanted type offers, from the spec, the nodes, or a default."""
    resources = spec.resources
    known = dict(facts.gpus_per_node_by_type)
    offered = None
    if resources.gpu_type is not None and known:
        if resources.gpu_type not in known:
            types = ", ".join(f"{t} ({n} per node)" for t, n in sorted(known.items()))
            return None, [
                FieldProblem(
                    "spec.resources.gpuType",
                    f"no node offers {resources.gpu_type}; the cluster has {types}",
                )
            ]
        offered = known[resources.gpu_type]
    if resources.gpus_per_node is not None:
        if offered is not None and resources.gpus_per_node > offered:
            return None, [
                FieldProblem(
                    "spec.resources.gpusPerNode",
                    f"is {resources.gpus_per_node} but nodes of type {resources.gpu_type} offer "
                    f"{offered}; lower it or leave it out",
                )
            ]
        return resources.gpus_per_node, []
    if offered is not None:
        return offered, []
    if resources.gpu_type is None and known:
        return max(known.values()), []
    return facts.default_gpus_per_node, []


def _layout(
    spec: ModelDeploymentSpec, gpus_per_node: int | None
) -> tuple[int, int, int, list[FieldProblem]]:
    """(tensor, pipeline, pods per replica, problems) for the spec's GPUs on such nodes."""
    gpus = spec.resources.gpus
    if gpus_per_node is None or gpus <= gpus_per_node:
        override = spec.parallelism
        if override is not None:
            return override.tensor, override.pipeline, 1, []
        return gpus, 1, 1, []
    return _multi_node_layout(spec, gpus_per_node)


def _multi_node_layout(
    spec: ModelDeploymentSpec, gpus_per_node: int
) -> tuple[int, int, int, list[FieldProblem]]:
    """Tensor parallel inside a node, pipeline parallel across nodes (vLLM's guidance)."""
    gpus, override = spec.resources.gpus, spec.parallelism
    nodes = gpus // gpus_per_node
    tensor, pipeline = (override.tensor, override.pipeline) if override else (gpus_per_node, nodes)
    problems = []
    if gpus % gpus_per_node:
        lower = nodes * gpus_per_node
        problems.append(
            FieldProblem(
                "spec.resources.gpus",
                f"{gpus} GPUs span nodes of {gpus_per_node} GPUs but are not a multiple of "
                f"{gpus_per_node}; use {lower} or {lower + gpus_per_node}",
            )
        )
    elif spec.engine.kind is not EngineKind.VLLM:
        problems.append(FieldProblem("spec.resources.gpus", "only the vllm engine spans nodes"))
    elif gpus_per_node % tensor:
        problems.append(
            FieldProblem(
                "spec.parallelism.tensor",
                f"{tensor} does not divide the {gpus_per_node} GPUs of a node; tensor "
                "parallel groups must stay inside a node (use a divisor of gpusPerNode)",
            )
        )
    return tensor, pipeline, max(nodes, 1), problems


def _check_heads(tensor: int, facts: ClusterFacts) -> list[FieldProblem]:
    heads = facts.model_attention_heads
    if heads is not None and heads % tensor:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0 and d <= 64]
        return [
            FieldProblem(
                "spec.resources.gpus",
                f"tensor parallel size {tensor} does not divide the model's {heads} attention "
                f"heads; choose a tensor size among {divisors}",
            )
        ]
    return []


def _check_expert_parallel(spec: ModelDeploymentSpec, tensor: int) -> list[FieldProblem]:
    if spec.engine.expert_parallel and tensor < 2:
        return [
            FieldProblem(
                "spec.engine.expertParallel",
                "needs a tensor parallel size of at least 2 to spread experts over; "
                "give the replica more GPUs or turn it off",
            )
        ]
    return []


def _pod_resources(spec: ModelDeploymentSpec, gpus_per_pod: int) -> PodResources:
    """Requests per pod; defaults scale with the GPUs so a bigger pod gets more CPU and memory."""
    resources = spec.resources
    return PodResources(
        gpus=gpus_per_pod,
        cpu=resources.cpu or str(2 + 2 * gpus_per_pod),
        memory=resources.memory or f"{16 + 16 * gpus_per_pod}Gi",
        shared_memory=resources.shared_memory or ("8Gi" if gpus_per_pod > 1 else "2Gi"),
    )


def _is_trust_remote_code(token: str) -> bool:
    return token == TRUST_REMOTE_CODE or token.startswith(TRUST_REMOTE_CODE + "=")


def _engine_launch(
    name: str, spec: ModelDeploymentSpec, tensor: int, pipeline: int, facts: ClusterFacts
) -> EngineLaunch:
    engine = spec.engine
    # --trust-remote-code asked for in extraArgs (and allowed by policy, else planning
    # refused it) becomes the launch's own setting, so the flag appears exactly once.
    trusted = facts.allow_trust_remote_code and any(map(_is_trust_remote_code, engine.extra_args))
    return EngineLaunch(
        served_name=spec.model.served_name or name,
        tensor_parallel_size=tensor,
        pipeline_parallel_size=pipeline,
        port=ENGINE_PORT,
        max_model_len=engine.max_model_len,
        dtype=engine.dtype,
        quantization=engine.quantization,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        enable_expert_parallel=engine.expert_parallel,
        trust_remote_code=trusted,
        extra_args=tuple(t for t in engine.extra_args if not _is_trust_remote_code(t)),
    )


def _template_hash(
    spec: ModelDeploymentSpec, image: str, tensor: int, pipeline: int, pod: PodResources
) -> str:
    """A short hash of everything that shapes an engine pod; replicas and scaling are left out."""
    shaping = spec.model_dump(mode="json", by_alias=True, exclude={"replicas", "scaling", "audit"})
    shaping |= {"image": image, "layout": [tensor, pipeline], "pod": pod.__dict__}
    canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
