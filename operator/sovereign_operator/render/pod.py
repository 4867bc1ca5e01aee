"""The engine pod template: shared by the single-node Deployment and multi-node groups.

The pod runs two processes: an init container that fetches and verifies the model bytes
(`sovereign-worker fetch`), then the engine (`sovereign-worker serve -- <vLLM flags>`),
which starts only if verification succeeded. Everything about the pod is locked down to
the Pod Security Standards `restricted` profile plus a read-only root filesystem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sovereign_operator.api.model_deployment import EngineKind, ModelSpec
from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.diffusers_engine import diffusers_args
from sovereign_operator.render.meta import TEMPLATE_HASH_ANNOTATION, engine_name, labels
from sovereign_operator.render.options import RenderOptions
from sovereign_operator.render.placement import affinity, node_selector, tolerations
from sovereign_operator.render.probes import engine_probes, termination_grace_seconds
from sovereign_worker import sovereignty
from sovereign_worker.engine_args import build_vllm_flags
from sovereign_worker.paths import claim_mount_path
from sovereign_worker.sources import Scheme

FETCH_CONTAINER: Final = "fetch"
ENGINE_CONTAINER: Final = "engine"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# Numeric ids let the kubelet enforce runAsNonRoot without reading the image's /etc/passwd.
# The worker image must own its files by this user and group.
ENGINE_UID: Final = 1000
ENGINE_GID: Final = 1000
SHM_VOLUME: Final = "dshm"
MODEL_VOLUME: Final = "model"
# The emptyDir model cache's size limit when spec.model.cache.sizeLimit is not set: room for
# a 70B model in bf16 (~141 GB) with headroom; bigger models should name a cache claim.
DEFAULT_MODEL_CACHE_LIMIT: Final = "256Gi"
# Bounded so a misbehaving engine cannot fill the node's disk; generous because going over
# evicts the pod. vLLM's torch.compile cache and Ray's session files are the big writers.
WRITABLE_DIR_LIMIT: Final = "8Gi"


@dataclass(frozen=True)
class PodRole:
    """What a multi-node group's pods change in the engine pod; the defaults are single-node.

    Everything else (security, volumes, fetch step, probes, placement) is shared, so a
    group's pods are exactly as locked down as a single-node engine.
    """

    engine_args: Sequence[str] | None = None
    """The engine container's args; None runs `serve` with the plan's vLLM flags."""
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    extra_env: Sequence[Mapping[str, Any]] = ()
    extra_ports: Sequence[Mapping[str, Any]] = ()
    pod_anti_affinity: Mapping[str, Any] | None = None


SINGLE_NODE: Final = PodRole()


def render_pod_template(
    plan: ServingPlan, options: RenderOptions, role: PodRole = SINGLE_NODE
) -> dict[str, Any]:
    """The pod template: labels, the template-hash annotation, and the locked-down spec."""
    return {
        "metadata": {
            "labels": {**labels(plan.name), **role.extra_labels},
            "annotations": {
                TEMPLATE_HASH_ANNOTATION: plan.template_hash,
                # `kubectl logs` and `kubectl exec` pick the engine, not the fetch step.
                "kubectl.kubernetes.io/default-container": ENGINE_CONTAINER,
            },
        },
        "spec": _pod_spec(plan, options, role),
    }


def _pod_spec(plan: ServingPlan, options: RenderOptions, role: PodRole) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": engine_name(plan.name),
        # The engine never calls the API server: no token in the pod at all.
        "automountServiceAccountToken": False,
        # Service links inject one variable per Service in the namespace into the engine's
        # environment: noise at best, a way to steer clients at worst.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": ENGINE_UID,
            "runAsGroup": ENGINE_GID,
            "fsGroup": ENGINE_GID,
            # Re-owning a multi-hundred-GB cache claim at every start would take minutes.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": termination_grace_seconds(plan.engine),
        "initContainers": [_fetch_container(plan, options)],
        "containers": [_engine_container(plan, options, role)],
        "volumes": _volumes(plan),
        "nodeSelector": node_selector(plan.spec),
        "tolerations": tolerations(plan.spec),
    }
    pod_affinity = affinity(plan.spec)
    if role.pod_anti_affinity is not None:
        pod_affinity["podAntiAffinity"] = dict(role.pod_anti_affinity)
    if pod_affinity:
        spec["affinity"] = pod_affinity
    return spec


def _container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _sovereignty_env() -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in sovereignty.sovereignty_env().items()]


def _fetch_container(plan: ServingPlan, options: RenderOptions) -> dict[str, Any]:
    model = plan.spec.model
    return {
        "name": FETCH_CONTAINER,
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [options.worker_command],
        "args": [
            "fetch",
            "--source",
            model.source,
            "--digest",
            model.digest,
            "--dest",
            sovereignty.MODEL_DIR,
        ],
        "env": _sovereignty_env() + _s3_env(model),
        # The pod's effective request is the larger of the init and the regular containers,
        # so asking for the engine's CPU and memory costs nothing and speeds up hashing.
        "resources": {
            "requests": {"cpu": plan.pod.cpu, "memory": plan.pod.memory},
            "limits": {"memory": plan.pod.memory},
        },
        "securityContext": _container_security_context(),
        "volumeMounts": _writable_mounts() + _model_mounts(plan, fetching=True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _s3_env(model: ModelSpec) -> list[dict[str, Any]]:
    """S3 settings for the fetch step only: the engine never sees the store's credentials."""
    if model.s3 is None:
        return []
    env: list[dict[str, Any]] = [
        {"name": "AWS_ENDPOINT_URL", "value": model.s3.endpoint},
        # boto3 would otherwise probe the cloud instance-metadata endpoint for credentials.
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
    ]
    if model.s3.region:
        env.append({"name": "AWS_REGION", "value": model.s3.region})
    if model.s3.credentials_secret:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": model.s3.credentials_secret, "key": key}},
            }
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
    return env


def serve_args(plan: ServingPlan) -> list[str]:
    """`serve`'s args: the model folder, then the plan's vLLM flags after `--`."""
    if plan.spec.engine.kind is EngineKind.DIFFUSERS:
        return diffusers_args(plan)
    return ["serve", "--model-dir", sovereignty.MODEL_DIR, "--", *build_vllm_flags(plan.engine)]


def _engine_container(plan: ServingPlan, options: RenderOptions, role: PodRole) -> dict[str, Any]:
    gpus = str(plan.pod.gpus)
    user_env = [{"name": e.name, "value": e.value} for e in plan.spec.engine.env]
    args = serve_args(plan) if role.engine_args is None else list(role.engine_args)
    return {
        "name": ENGINE_CONTAINER,
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [options.worker_command],
        # argv items, never a shell string: no value is ever re-parsed.
        "args": args,
        "env": _sovereignty_env() + user_env + [dict(e) for e in role.extra_env],
        "ports": [
            {"name": "http", "containerPort": plan.engine.port, "protocol": "TCP"},
            *(dict(p) for p in role.extra_ports),
        ],
        "resources": {
            "requests": {"cpu": plan.pod.cpu, "memory": plan.pod.memory, GPU_RESOURCE: gpus},
            # No CPU limit: throttling the tokenizer and scheduler threads stalls the GPUs.
            # Memory is incompressible, so its limit equals the request.
            "limits": {"memory": plan.pod.memory, GPU_RESOURCE: gpus},
        },
        "securityContext": _container_security_context(),
        "volumeMounts": [
            *_writable_mounts(),
            {"name": SHM_VOLUME, "mountPath": sovereignty.SHM_DIR},
            *_model_mounts(plan, fetching=False),
        ],
        **engine_probes(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _writable_mounts() -> list[dict[str, Any]]:
    return [{"name": d.volume, "mountPath": d.path} for d in sovereignty.WRITABLE_DIRS]


def _model_mounts(plan: ServingPlan, *, fetching: bool) -> list[dict[str, Any]]:
    """Model volume mounts; see sovereign_worker.paths for how each source is laid out.

    Only the fetch step may write the cache; the engine reads verified bytes it cannot
    change.
    """
    source = plan.source
    if source.scheme is Scheme.PVC:
        if fetching:
            path = claim_mount_path(source.authority)
            return [{"name": MODEL_VOLUME, "mountPath": path, "readOnly": True}]
        mount: dict[str, Any] = {
            "name": MODEL_VOLUME,
            "mountPath": sovereignty.MODEL_DIR,
            "readOnly": True,
        }
        if source.path:
            mount["subPath"] = source.path
        return [mount]
    if fetching:
        return [{"name": MODEL_VOLUME, "mountPath": sovereignty.MODEL_DIR}]
    return [{"name": MODEL_VOLUME, "mountPath": sovereignty.MODEL_DIR, "readOnly": True}]


def _volumes(plan: ServingPlan) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": d.volume, "emptyDir": {"sizeLimit": WRITABLE_DIR_LIMIT}}
        for d in sovereignty.WRITABLE_DIRS
    ]
    # The container runtime's default /dev/shm is 64 MiB, far too small for NCCL and vLLM's
    # worker processes. Pages written here count against the engine's memory limit.
    volumes.append(
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": plan.pod.shared_memory}}
    )
    volumes.append(_model_volume(plan))
    return volumes


def _model_volume(plan: ServingPlan) -> dict[str, Any]:
    if plan.source.scheme is Scheme.PVC:
        return {
            "name": MODEL_VOLUME,
            "persistentVolumeClaim": {"claimName": plan.source.authority, "readOnly": True},
        }
    cache = plan.spec.model.cache
    if cache is not None and cache.claim_name is not None:
        return {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}
    limit = cache.size_limit if cache is not None and cache.size_limit else None
    return {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": limit or DEFAULT_MODEL_CACHE_LIMIT}}
