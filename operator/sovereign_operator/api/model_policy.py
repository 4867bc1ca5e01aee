"""The ModelPolicy custom resource: cluster-wide sovereignty rules for the namespaces it selects.

Every policy that selects a namespace applies, and the strictest setting wins (see
`sovereign_operator.policy`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from sovereign_operator.api.base import ApiModel
from sovereign_operator.api.common import Condition, LabelKey, LabelSelector, LabelValue
from sovereign_operator.api.model_deployment import EgressMode
from sovereign_worker.sources import Scheme

Prefix = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class AllowedSource(ApiModel):
    """One kind of model source the policy permits."""

    scheme: Scheme = Field(description="pvc, s3, hf, oci or file.")
    prefixes: list[Prefix] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Allowed URI prefixes, e.g. pvc://model-store/approved/ or s3://models/; "
            "empty allows every source of the scheme."
        ),
    )
    endpoints: list[Prefix] = Field(
        default_factory=list,
        max_length=16,
        description="For s3: allowed endpoint URLs; empty allows any endpoint.",
    )


class ModelRules(ApiModel):
    """What models may be served."""

    allowed_sources: list[AllowedSource] = Field(
        default_factory=list,
        max_length=16,
        description="Sources the policy permits; empty permits every source.",
    )
    require_digest: bool = Field(
        default=True, description="Every ModelDeployment must name spec.model.digest."
    )
    require_revision_pin: bool = Field(
        default=True,
        description="hf:// sources must pin a full 40-character commit sha, not a branch or tag.",
    )


class ImageRules(ApiModel):
    """What engine images may run."""

    allowed_registries: list[Prefix] = Field(
        default_factory=list,
        max_length=32,
        description="Image reference prefixes, e.g. registry.internal/ai/; empty allows any.",
    )
    require_digest: bool = Field(
        default=False, description="Engine images must be pinned by @sha256 digest."
    )


class Limits(ApiModel):
    """Ceilings on GPU use."""

    max_gpus_per_deployment: int | None = Field(
        default=None,
        ge=0,
        description="Most GPUs one ModelDeployment may use across its max replicas.",
    )
    max_gpus_per_namespace: int | None = Field(
        default=None, ge=0, description="Most GPUs all ModelDeployments of one namespace may use."
    )


class ModelPolicySpec(ApiModel):
    """Sovereignty rules for the namespaces the policy selects."""

    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Namespaces the policy applies to; empty selects every namespace.",
    )
    models: ModelRules = Field(default_factory=ModelRules, description="Model source rules.")
    images: ImageRules = Field(default_factory=ImageRules, description="Engine image rules.")
    residency: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Node labels every engine pod must be pinned to, e.g. node-restriction.kubernetes.io/region: eu.",
    )
    limits: Limits = Field(default_factory=Limits, description="GPU ceilings.")
    allow_trust_remote_code: bool = Field(
        default=False, description="Whether --trust-remote-code may ever be set."
    )
    allowed_egress: list[EgressMode] = Field(
        default_factory=lambda: [EgressMode.NONE, EgressMode.MODEL_STORE],
        max_length=4,
        description="Egress modes deployments may choose.",
    )
    minimum_request_audit: Literal["none", "metadata", "full"] = Field(
        default="metadata", description="The least per-request audit level deployments may choose."
    )


class ModelPolicyStatus(ApiModel):
    """What the operator observed about a policy."""

    observed_generation: int | None = Field(default=None, description="The generation observed.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, description="Accepted and similar conditions."
    )
    selected_namespaces: int = Field(
        default=0, ge=0, description="Namespaces the policy selects now."
    )
    non_compliant_deployments: int = Field(
        default=0, ge=0, description="ModelDeployments that break the policy now."
    )


class ModelPolicy(ApiModel):
    """A cluster-scoped sovereignty policy: the whole custom resource."""

    api_version: Literal["sovereign.dev/v1alpha1"] = Field(
        default="sovereign.dev/v1alpha1", description="The API version."
    )
    kind: Literal["ModelPolicy"] = Field(default="ModelPolicy", description="The kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelPolicySpec = Field(default_factory=ModelPolicySpec, description="The rules.")
    status: ModelPolicyStatus | None = Field(default=None, description="The observed state.")
