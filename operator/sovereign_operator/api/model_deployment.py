"""The ModelDeployment custom resource: what to serve, on how many GPUs, scaled how.

The same models parse the spec in every handler and generate the CRD schema (see
`sovereign_operator.crdgen`), so `kubectl explain` shows these descriptions. Rules that a
CRD can express live here as CEL (`x-kubernetes-validations`) next to the Python check
that enforces the same rule for `sovereign render` and the webhook.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from sovereign_operator.api.base import ApiModel
from sovereign_operator.api.common import (
    Condition,
    LabelKey,
    Labels,
    LabelSelector,
    LabelValue,
    Quantity,
    Toleration,
    at_most,
)
from sovereign_worker.extra_args import validate_extra_args
from sovereign_worker.sources import Scheme, SourceError, parse_model_source
from sovereign_worker.sovereignty import validate_env

DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
IMAGE_PATTERN: Final = (
    r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
SERVED_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$"
MAX_GPUS_PER_REPLICA: Final = 512
MAX_REPLICAS: Final = 1000
MAX_EXTRA_ARGS: Final = 64


def _cel(rule: str, message: str, *, field_path: str | None = None) -> JsonDict:
    """One CEL validation rule as the CRD schema wants it."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _cel_rules(*rules: JsonDict) -> ConfigDict:
    """Model config that puts CEL rules on the model's own schema node."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


def _check_source(uri: str) -> str:
    try:
        parse_model_source(uri)
    except SourceError as error:
        raise ValueError(str(error)) from None
    return uri


def _check_extra_args(tokens: list[str]) -> list[str]:
    # --trust-remote-code is syntactically allowed here; whether it may be set is a
    # policy decision (ModelPolicy.allowTrustRemoteCode), checked in planning.
    problems = validate_extra_args(tokens, allow_trust_remote_code=True)
    if problems:
        raise ValueError("; ".join(f"[{p.index}] {p.message}" for p in problems))
    return tokens


ModelSourceUri = Annotated[
    str,
    StringConstraints(max_length=512, pattern=r"^(pvc|s3|hf|oci|file)://"),
    AfterValidator(_check_source),
]
ModelDigest = Annotated[str, StringConstraints(max_length=71, pattern=DIGEST_PATTERN)]


class ModelTask(StrEnum):
    """What a model does, which decides the API the engine serves."""

    TEXT_GENERATION = "text-generation"
    SPEECH_TO_TEXT = "speech-to-text"
    TEXT_TO_IMAGE = "text-to-image"


class EngineKind(StrEnum):
    """The serving engine."""

    VLLM = "vllm"
    DIFFUSERS = "diffusers"


class S3Source(ApiModel):
    """Where an s3:// source lives: an S3-compatible store inside the organisation."""

    endpoint: Annotated[
        str, StringConstraints(max_length=256, pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$")
    ] = Field(description="The S3-compatible endpoint URL, e.g. https://minio.storage.svc:9000.")
    credentials_secret: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None,
        description="A Secret in the same namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    )
    region: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The region to sign requests for, when the store needs one."
    )


class ModelCache(ApiModel):
    """Where copied model bytes are kept (s3, hf and oci sources are copied; pvc is not)."""

    claim_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None,
        description="A PersistentVolumeClaim to cache into; needed for models that do not fit an emptyDir.",
    )
    size_limit: Annotated[Quantity | None, at_most("1Ei")] = Field(
        default=None,
        description="The size limit of the emptyDir cache used when no claim is named.",
    )


class ModelSpec(ApiModel):
    """The model to serve and the proof of which bytes it is."""

    source: ModelSourceUri = Field(
        description=(
            "Where the model files are: pvc://CLAIM/path, s3://BUCKET/prefix, "
            "hf://ORG/NAME@REVISION (an in-house mirror; revision required), "
            "oci://REGISTRY/REPO@sha256:..., or file:///path for tests."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!self.startsWith('hf://') || self.contains('@')",
                    "hf:// sources must pin a revision: hf://ORG/NAME@REVISION",
                ),
                _cel(
                    "!self.startsWith('oci://') || self.contains('@sha256:')",
                    "oci:// sources must be pinned by digest: oci://REGISTRY/REPO@sha256:...",
                ),
                _cel(
                    "!self.contains('/../') && !self.endsWith('/..') && !self.contains('/./')",
                    "source must not contain '..' or '.' path segments",
                ),
            ]
        },
    )
    digest: ModelDigest = Field(
        description=(
            "sha256 of the model's file manifest, as printed by `sovereign-worker digest DIR`. "
            "The worker refuses to start the engine when the bytes do not match."
        )
    )
    served_name: (
        Annotated[str, StringConstraints(max_length=128, pattern=SERVED_NAME_PATTERN)] | None
    ) = Field(
        default=None,
        description="The model name clients use in API requests; defaults to the resource name.",
    )
    task: ModelTask = Field(
        default=ModelTask.TEXT_GENERATION,
        description="What the model does: text-generation, speech-to-text or text-to-image.",
    )
    s3: S3Source | None = Field(
        default=None, description="Endpoint and credentials for s3:// sources."
    )
    cache: ModelCache | None = Field(
        default=None, description="Where copied sources are cached; an emptyDir when not set."
    )

    @model_validator(mode="after")
    def _s3_settings_match_scheme(self) -> ModelSpec:
        is_s3 = parse_model_source(self.source).scheme is Scheme.S3
        if is_s3 and self.s3 is None:
            raise ValueError("s3:// sources need spec.model.s3.endpoint (the in-house S3 endpoint)")
        if not is_s3 and self.s3 is not None:
            raise ValueError("spec.model.s3 is only for s3:// sources; remove it")
        return self


class EnvVar(ApiModel):
    """An environment variable for the engine container."""

    name: Annotated[str, StringConstraints(max_length=128)] = Field(
        description="The variable name."
    )
    value: Annotated[str, StringConstraints(max_length=4096)] = Field(
        default="", description="The literal value; never shell-expanded."
    )


class EngineSpec(ApiModel):
    """How the engine runs the model."""

    kind: EngineKind = Field(
        default=EngineKind.VLLM, description="The serving engine: vllm (default) or diffusers."
    )
    image: Annotated[str, StringConstraints(max_length=512, pattern=IMAGE_PATTERN)] | None = Field(
        default=None,
        description="The engine image; defaults to the operator's configured image. Policy may require a digest.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=10_485_760,
        description="Maximum context length in tokens (--max-model-len).",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weight and activation dtype (--dtype)."
    )
    quantization: (
        Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z0-9_-]+$")] | None
    ) = Field(
        default=None, description="Quantization method (--quantization), e.g. awq, gptq, fp8."
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Fraction of GPU memory vLLM may use (--gpu-memory-utilization).",
    )
    expert_parallel: bool = Field(
        default=False,
        description="Shard mixture-of-experts layers by expert (--enable-expert-parallel), e.g. for Mixtral.",
    )
    extra_args: Annotated[
        list[Annotated[str, StringConstraints(max_length=256)]],
        Field(max_length=MAX_EXTRA_ARGS),
        AfterValidator(_check_extra_args),
    ] = Field(
        default_factory=list,
        description=(
            "Further vLLM flags, one argv item each (never shell-parsed). Only long flags of "
            "vLLM 0.32 are accepted; flags the operator owns or that reach the network are refused."
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=32,
        description="Extra environment variables; the offline and telemetry variables cannot be overridden.",
    )

    @field_validator("env")
    @classmethod
    def _env_is_safe(cls, env: list[EnvVar]) -> list[EnvVar]:
        problems = validate_env([(e.name, e.value) for e in env])
        if problems:
            raise ValueError("; ".join(problems))
        return env


class ResourcesSpec(ApiModel):
    """The compute one replica uses."""

    gpus: int = Field(
        ge=1,
        le=MAX_GPUS_PER_REPLICA,
        description="GPUs per replica. More than one node's worth spans nodes (tensor x pipeline parallel).",
    )
    gpu_type: LabelValue | None = Field(
        default=None,
        description="The nvidia.com/gpu.product node label value to run on, e.g. NVIDIA-H100-80GB-HBM3.",
    )
    gpus_per_node: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="GPUs a node of this type offers; read from the cluster's nodes when not set.",
    )
    cpu: Annotated[Quantity | None, at_most("1024")] = Field(
        default=None, description="CPU request per engine pod."
    )
    memory: Annotated[Quantity | None, at_most("64Ti")] = Field(
        default=None, description="Memory request per engine pod."
    )
    shared_memory: Annotated[Quantity | None, at_most("16Ti")] = Field(
        default=None, description="Size of /dev/shm (a memory emptyDir) per engine pod."
    )


class ParallelismSpec(ApiModel):
    """An explicit split of a replica's GPUs; tensor x pipeline must equal resources.gpus."""

    tensor: int = Field(ge=1, le=64, description="Tensor parallel size (GPUs per pipeline stage).")
    pipeline: int = Field(ge=1, le=64, description="Pipeline parallel size (number of stages).")


class MultiNodeBackend(StrEnum):
    """How the pods of a multi-node replica form one engine."""

    NATIVE = "native"
    RAY = "ray"


class MultiNodeSpec(ApiModel):
    """Settings for replicas that span several nodes."""

    backend: MultiNodeBackend = Field(
        default=MultiNodeBackend.NATIVE,
        description=(
            "native: vLLM's own multi-node mode (no Ray, fewer open ports); "
            "ray: a Ray head and members with vLLM's Ray executor."
        ),
    )
    placement_timeout: int = Field(
        default=600,
        ge=30,
        le=86_400,
        description="Seconds a partly scheduled group may hold GPUs before its pods are removed.",
    )


class ScalingMetric(StrEnum):
    """The vLLM load signal the autoscaler follows."""

    QUEUE_DEPTH = "queueDepth"
    RUNNING_REQUESTS = "runningRequests"
    KV_CACHE_USAGE = "kvCacheUsage"


class ScalingSpec(ApiModel):
    """Autoscaling on vLLM's own load signals."""

    model_config = _cel_rules(
        _cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas"),
        _cel(
            "self.metric != 'kvCacheUsage' || self.target <= 1.0",
            "kvCacheUsage is a fraction: target must be between 0 and 1",
        ),
    )

    mode: Literal["internal", "external"] = Field(
        default="internal",
        description="internal: the operator scales; external: HPA or KEDA scale through the scale subresource.",
    )
    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS, description="Fewest replicas.")
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="Most replicas.")
    metric: ScalingMetric = Field(
        default=ScalingMetric.QUEUE_DEPTH,
        description="queueDepth (requests waiting), runningRequests, or kvCacheUsage (0-1).",
    )
    target: float = Field(
        default=8.0, gt=0, le=100_000, description="Target per-replica average of the metric."
    )
    scale_up_stabilization_seconds: int = Field(
        default=30, ge=0, le=3600, description="How long load must stay high before scaling up."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=86_400, description="How long load must stay low before scaling down."
    )

    @model_validator(mode="after")
    def _bounds_are_consistent(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})"
            )
        if self.metric is ScalingMetric.KV_CACHE_USAGE and self.target > 1:
            raise ValueError("kvCacheUsage is a fraction: target must be between 0 and 1")
        return self


class PlacementSpec(ApiModel):
    """Where engine pods may run."""

    node_selector: Labels = Field(
        default_factory=dict, description="Node labels every engine pod requires."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Taints engine pods tolerate."
    )
    residency: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Data-residency node labels (e.g. node-restriction.kubernetes.io/zone) every engine pod must carry.",
    )


class EgressMode(StrEnum):
    """How much outbound traffic engine pods get."""

    NONE = "none"
    MODEL_STORE = "modelStore"


class IngressSource(ApiModel):
    """Who may call the engine: pods and/or namespaces by label, or an address block."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces by label."
    )
    pod_selector: LabelSelector | None = Field(default=None, description="Pods by label.")
    cidr: (
        Annotated[str, StringConstraints(max_length=43, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]
        | None
    ) = Field(default=None, description="An address block, e.g. 10.20.0.0/16.")

    @model_validator(mode="after")
    def _not_empty(self) -> IngressSource:
        if self.namespace_selector is None and self.pod_selector is None and self.cidr is None:
            raise ValueError(
                "name namespaceSelector, podSelector or cidr; an empty source admits nobody"
            )
        return self


class NetworkSpec(ApiModel):
    """Network isolation of engine pods, rendered as a NetworkPolicy."""

    egress: EgressMode = Field(
        default=EgressMode.MODEL_STORE,
        description="none: DNS only; modelStore: DNS and the model store below.",
    )
    model_store_cidrs: list[
        Annotated[str, StringConstraints(max_length=43, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]
    ] = Field(
        default_factory=list,
        max_length=16,
        description="Address blocks of the model store (s3 endpoint).",
    )
    ingress: list[IngressSource] = Field(
        default_factory=list,
        max_length=16,
        description="Who may call the engine besides the gateway and the operator's metrics scraper.",
    )


class AuditSpec(ApiModel):
    """Per-request audit settings for the gateway."""

    requests: Literal["none", "metadata", "full"] = Field(
        default="metadata",
        description="none, metadata (who, when, which model, token counts), or full (also prompts).",
    )


class ModelDeploymentSpec(ApiModel):
    """The desired state of a served model."""

    model_config = _cel_rules(
        _cel(
            "!has(self.parallelism) || "
            "self.parallelism.tensor * self.parallelism.pipeline == self.resources.gpus",
            "parallelism.tensor x parallelism.pipeline must equal resources.gpus",
        ),
    )

    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="How the engine runs.")
    resources: ResourcesSpec = Field(description="GPUs, CPU and memory per replica.")
    parallelism: ParallelismSpec | None = Field(
        default=None, description="Override the computed tensor x pipeline split."
    )
    multi_node: MultiNodeSpec = Field(
        default_factory=MultiNodeSpec, description="Settings for replicas spanning several nodes."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=MAX_REPLICAS,
        description="Replicas (groups, for multi-node). Owned by the autoscaler when scaling.mode is internal.",
    )
    scaling: ScalingSpec | None = Field(
        default=None, description="Autoscaling; fixed replicas when not set."
    )
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Node placement.")
    network: NetworkSpec = Field(default_factory=NetworkSpec, description="Network isolation.")
    audit: AuditSpec = Field(default_factory=AuditSpec, description="Audit settings.")

    @model_validator(mode="after")
    def _parallelism_matches_gpus(self) -> ModelDeploymentSpec:
        p = self.parallelism
        if p is not None and p.tensor * p.pipeline != self.resources.gpus:
            raise ValueError(
                f"parallelism.tensor x parallelism.pipeline = {p.tensor * p.pipeline} but "
                f"resources.gpus = {self.resources.gpus}; make them equal"
            )
        return self


class Phase(StrEnum):
    """A one-word summary of a deployment, for people."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class PlanStatus(ApiModel):
    """The serving topology the operator derived from the spec."""

    topology: Literal["single-node", "multi-node"] = Field(
        description="One pod per replica, or a group of pods."
    )
    tensor: int = Field(ge=1, description="Tensor parallel size.")
    pipeline: int = Field(ge=1, description="Pipeline parallel size.")
    nodes_per_replica: int = Field(ge=1, description="Pods (nodes) per replica.")
    gpus_per_pod: int = Field(ge=0, description="GPUs each engine pod requests.")
    gpu_type: str | None = Field(default=None, description="The GPU product engine pods run on.")
    image: str = Field(description="The engine image.")
    parallelism: str = Field(description="TPxPP, for the printer column, e.g. 8x2.")


class LastScale(ApiModel):
    """The autoscaler's most recent change."""

    time: datetime = Field(description="When the change was made.")
    from_replicas: int = Field(alias="from", ge=0, description="Replicas before.")
    to_replicas: int = Field(alias="to", ge=0, description="Replicas after.")
    reason: Annotated[str, StringConstraints(max_length=1024)] = Field(
        description="Why, with the metric values."
    )


class ModelDeploymentStatus(ApiModel):
    """The observed state of a served model."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes."
    )
    phase: Phase = Field(
        default=Phase.PENDING, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Progressing, Degraded, ModelVerified, Scheduled, PolicyCompliant, AutoscalerActive.",
    )
    replicas: int = Field(default=0, ge=0, description="Replicas (groups) that exist.")
    ready_replicas: int = Field(default=0, ge=0, description="Replicas (groups) ready to serve.")
    selector: str = Field(
        default="", description="Label selector of engine pods, for the scale subresource."
    )
    endpoint: str = Field(
        default="", description="The in-cluster URL of the OpenAI-compatible API."
    )
    plan: PlanStatus | None = Field(default=None, description="The derived serving topology.")
    last_scale: LastScale | None = Field(
        default=None, description="The autoscaler's most recent change."
    )
    ready_summary: str = Field(default="", description="READY/DESIRED, for the printer column.")


class ModelDeployment(ApiModel):
    """A served model: the whole custom resource."""

    api_version: Literal["sovereign.dev/v1alpha1"] = Field(
        default="sovereign.dev/v1alpha1", description="The API version."
    )
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="The kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="The desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="The observed state.")
