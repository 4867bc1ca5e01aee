"""ModelPolicy evaluation: which policies select a namespace, and what a deployment breaks.

Pure; used by the admission webhook (refuse), by reconcile (PolicyCompliant=False when a
policy tightened later) and by `sovereign report` (the verdicts, per policy).

Every policy that selects the namespace applies and the strictest wins. For list rules
(sources, registries, egress modes) that means a value must be allowed by *every* policy
that restricts it, so each policy is checked on its own and each one that refuses is
named. For scalar rules (GPU ceilings, the audit level, digest and pin requirements) the
strictest value is taken and the verdict names the policy or policies that set it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sovereign_operator.api.common import LabelSelector, LabelSelectorRequirement
from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.model_policy import AllowedSource, ModelPolicy, ModelPolicySpec
from sovereign_operator.api.problems import FieldProblem
from sovereign_operator.planning import TRUST_REMOTE_CODE
from sovereign_worker.sources import Scheme, SourceError, parse_model_source

AUDIT_LEVELS: Final = ("none", "metadata", "full")
_COMMIT_SHA: Final = re.compile(r"^[0-9a-f]{40}$")
_DOCKER_HUB: Final = "docker.io"


@dataclass(frozen=True)
class NamedPolicy:
    """A policy's name (cluster-scoped, so unique) and its rules."""

    name: str
    spec: ModelPolicySpec

    @classmethod
    def from_resource(cls, policy: ModelPolicy) -> NamedPolicy:
        return cls(str(policy.metadata.get("name", "")), policy.spec)


@dataclass(frozen=True)
class Verdict:
    """One rule a deployment breaks: which policy, which field, what is wrong, what is allowed."""

    policies: tuple[str, ...]
    """The policies whose rule is broken (several when they set the same strictest value)."""
    field: str
    """The deployment's field, as a camelCase path (spec.model.source)."""
    rule: str
    """The policy field that sets the rule (spec.models.allowedSources)."""
    message: str
    allowed: str

    @property
    def policy(self) -> str:
        return ", ".join(self.policies)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}; allowed: {self.allowed} (ModelPolicy {self.policy}, {self.rule})"

    def as_problem(self) -> FieldProblem:
        return FieldProblem(
            self.field, f"{self.message}; allowed: {self.allowed} (ModelPolicy {self.policy})"
        )


@dataclass(frozen=True)
class PolicyEvaluation:
    """The policies that applied and every verdict against the deployment."""

    applied: tuple[str, ...]
    verdicts: tuple[Verdict, ...]

    @property
    def compliant(self) -> bool:
        return not self.verdicts

    def message(self) -> str:
        """For an admission denial or a PolicyCompliant=False condition."""
        if self.compliant:
            applied = ", ".join(self.applied) or "none"
            return f"compliant with ModelPolicy {applied}"
        return "refused by ModelPolicy: " + "; ".join(str(v) for v in self.verdicts)

    def by_policy(self) -> dict[str, list[Verdict]]:
        """Each applied policy with the verdicts naming it (empty: the deployment complies)."""
        result: dict[str, list[Verdict]] = {name: [] for name in self.applied}
        for verdict in self.verdicts:
            for name in verdict.policies:
                result.setdefault(name, []).append(verdict)
        return result


def requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """One matchExpressions term, with Kubernetes semantics (NotIn matches a missing key)."""
    present = requirement.key in labels
    value = labels.get(requirement.key)
    match requirement.operator:
        case "In":
            return present and value in requirement.values
        case "NotIn":
            return not present or value not in requirement.values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Every matchLabels entry and matchExpressions term holds; an empty selector selects all."""
    return all(labels.get(k) == v for k, v in selector.match_labels.items()) and all(
        requirement_matches(r, labels) for r in selector.match_expressions
    )


def applicable(
    policies: Iterable[NamedPolicy], namespace_labels: Mapping[str, str]
) -> tuple[NamedPolicy, ...]:
    """The policies selecting a namespace, by name (so verdicts come in a stable order)."""
    chosen = [p for p in policies if selector_matches(p.spec.namespace_selector, namespace_labels)]
    return tuple(sorted(chosen, key=lambda p: p.name))


def gpu_ceiling(spec: ModelDeploymentSpec) -> int:
    """The most GPUs a deployment can hold: GPUs per replica x the most replicas it may run."""
    replicas = spec.replicas
    if spec.scaling is not None:
        replicas = max(replicas, spec.scaling.max_replicas)
    return spec.resources.gpus * replicas


def requests_trust_remote_code(spec: ModelDeploymentSpec) -> bool:
    return any(
        token == TRUST_REMOTE_CODE or token.startswith(TRUST_REMOTE_CODE + "=")
        for token in spec.engine.extra_args
    )


def allow_trust_remote_code(
    policies: Iterable[NamedPolicy], namespace_labels: Mapping[str, str]
) -> bool:
    """For ClusterFacts.allow_trust_remote_code: only when policies apply and all allow it."""
    chosen = applicable(policies, namespace_labels)
    return bool(chosen) and all(p.spec.allow_trust_remote_code for p in chosen)


def evaluate(
    spec: ModelDeploymentSpec,
    policies: Iterable[NamedPolicy],
    *,
    namespace_labels: Mapping[str, str],
    default_image: str,
    other_namespace_gpus: int = 0,
) -> PolicyEvaluation:
    """Check a deployment against every policy selecting its namespace.

    `default_image` is the operator's engine image, which runs when spec.engine.image is
    unset and must pass the image rules too. `other_namespace_gpus` is the sum of
    `gpu_ceiling` over the namespace's other ModelDeployments.
    """
    chosen = applicable(policies, namespace_labels)
    verdicts = [
        *_sources(spec, chosen),
        *_model_digest(spec, chosen),
        *_revision_pin(spec, chosen),
        *_images(spec.engine.image, default_image, chosen),
        *_residency(spec, chosen),
        *_gpus(spec, chosen, other_namespace_gpus),
        *_trust_remote_code(spec, chosen),
        *_egress(spec, chosen),
        *_request_audit(spec, chosen),
    ]
    return PolicyEvaluation(tuple(p.name for p in chosen), tuple(verdicts))


def _names(policies: Iterable[NamedPolicy]) -> tuple[str, ...]:
    return tuple(p.name for p in policies)


def has_prefix(value: str, prefix: str) -> bool:
    """`prefix` covers `value` at a path boundary: registry.internal/ai covers
    registry.internal/ai/vllm but not registry.internal/ai-untrusted/vllm."""
    if value == prefix or value == prefix.rstrip("/"):
        return True
    return value.startswith(prefix) and (prefix.endswith("/") or value[len(prefix)] in "/@:")


# -- models ---------------------------------------------------------------------------


def _source_entry_text(entry: AllowedSource) -> str:
    text = ", ".join(entry.prefixes) if entry.prefixes else f"any {entry.scheme.value}:// source"
    if entry.endpoints:
        text += f" (endpoints {', '.join(entry.endpoints)})"
    return text


def _endpoint_ok(entry: AllowedSource, spec: ModelDeploymentSpec) -> bool:
    if not entry.endpoints:
        return True
    endpoint = spec.model.s3.endpoint.rstrip("/") if spec.model.s3 else ""
    return endpoint in {e.rstrip("/") for e in entry.endpoints}


def _sources(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    uri = _canonical_source(spec.model.source)
    scheme = uri.partition("://")[0]
    verdicts = []
    for policy in policies:
        entries = policy.spec.models.allowed_sources
        if not entries:
            continue
        allowed = "; ".join(_source_entry_text(e) for e in entries)
        located = [
            e
            for e in entries
            if e.scheme.value == scheme
            and (not e.prefixes or any(has_prefix(uri, p) for p in e.prefixes))
        ]
        if not located:
            verdicts.append(
                Verdict(
                    (policy.name,),
                    "spec.model.source",
                    "spec.models.allowedSources",
                    f"source {uri} is not an allowed location",
                    allowed,
                )
            )
        elif not any(_endpoint_ok(e, spec) for e in located):
            endpoint = spec.model.s3.endpoint if spec.model.s3 else "(none)"
            verdicts.append(
                Verdict(
                    (policy.name,),
                    "spec.model.s3.endpoint",
                    "spec.models.allowedSources",
                    f"S3 endpoint {endpoint} is not allowed for {uri}",
                    allowed,
                )
            )
    return verdicts


def _canonical_source(source: str) -> str:
    # Compare the parsed, normalised form so `pvc://store//a/./b` tricks cannot slip past a prefix.
    try:
        return parse_model_source(source).uri
    except SourceError:
        return source  # the API refuses it anyway; a prefix check on the raw text is still sound


def _model_digest(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    # The API makes spec.model.digest required today; the rule keeps holding if that relaxes.
    requiring = [p for p in policies if p.spec.models.require_digest]
    if not requiring or spec.model.digest:
        return []
    return [
        Verdict(
            _names(requiring),
            "spec.model.digest",
            "spec.models.requireDigest",
            "the model digest is missing",
            "sha256:<64 hex> of the model's file manifest",
        )
    ]


def _revision_pin(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    requiring = [p for p in policies if p.spec.models.require_revision_pin]
    try:
        source = parse_model_source(spec.model.source)
    except SourceError:
        return []
    if not requiring or source.scheme is not Scheme.HF or _COMMIT_SHA.match(source.revision or ""):
        return []
    return [
        Verdict(
            _names(requiring),
            "spec.model.source",
            "spec.models.requireRevisionPin",
            f"hf revision {source.revision!r} is a branch or tag, which can move",
            f"hf://{source.path}@<full 40-character commit sha>",
        )
    ]


# -- images ---------------------------------------------------------------------------


def normalize_image(reference: str) -> str:
    """The fully qualified form: `vllm/vllm-openai` is `docker.io/vllm/vllm-openai`."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"{_DOCKER_HUB}/{reference}" if slash else f"{_DOCKER_HUB}/library/{reference}"


def _images(
    image: str | None, default_image: str, policies: Sequence[NamedPolicy]
) -> list[Verdict]:
    reference = image or default_image
    what = f"image {reference}" if image else f"the operator's default image {reference}"
    qualified = normalize_image(reference)
    verdicts = []
    for policy in policies:
        prefixes = policy.spec.images.allowed_registries
        if prefixes and not any(
            has_prefix(reference, p) or has_prefix(qualified, normalize_image(p)) for p in prefixes
        ):
            verdicts.append(
                Verdict(
                    (policy.name,),
                    "spec.engine.image",
                    "spec.images.allowedRegistries",
                    f"{what} is not from an allowed registry",
                    ", ".join(prefixes),
                )
            )
    requiring = [p for p in policies if p.spec.images.require_digest]
    if requiring and "@sha256:" not in reference:
        verdicts.append(
            Verdict(
                _names(requiring),
                "spec.engine.image",
                "spec.images.requireDigest",
                f"{what} is not pinned by digest",
                "REGISTRY/REPOSITORY@sha256:<64 hex>",
            )
        )
    return verdicts


# -- placement and size ---------------------------------------------------------------


def _residency(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    required: dict[str, dict[str, list[str]]] = {}
    for policy in policies:
        for key, value in policy.spec.residency.items():
            required.setdefault(key, {}).setdefault(value, []).append(policy.name)
    pinned = {**spec.placement.node_selector, **spec.placement.residency}
    verdicts = []
    for key, by_value in sorted(required.items()):
        if len(by_value) > 1:
            clash = "; ".join(f"{key}={v} ({', '.join(n)})" for v, n in sorted(by_value.items()))
            verdicts.append(
                Verdict(
                    tuple(sorted({n for ns in by_value.values() for n in ns})),
                    "spec.placement.residency",
                    "spec.residency",
                    f"policies require different values of node label {key}, so no node "
                    "satisfies all of them; fix the policies",
                    clash,
                )
            )
            continue
        value, names = next(iter(by_value.items()))
        if pinned.get(key) != value:
            have = f"{key}={pinned[key]}" if key in pinned else f"no {key}"
            verdicts.append(
                Verdict(
                    tuple(names),
                    "spec.placement.residency",
                    "spec.residency",
                    f"engine pods must run only on nodes labelled {key}={value}, but the "
                    f"deployment pins {have}",
                    f"placement.residency: {{{key}: {value}}}",
                )
            )
    return verdicts


def _strictest_limit(
    policies: Sequence[NamedPolicy], limit_of: str
) -> tuple[int, list[NamedPolicy]] | None:
    limits = [(getattr(p.spec.limits, limit_of), p) for p in policies]
    limits = [(value, p) for value, p in limits if value is not None]
    if not limits:
        return None
    lowest = min(value for value, _ in limits)
    return lowest, [p for value, p in limits if value == lowest]


def _gpus(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy], others: int) -> list[Verdict]:
    ceiling = gpu_ceiling(spec)
    replicas = (
        f"maxReplicas {spec.scaling.max_replicas}" if spec.scaling else f"replicas {spec.replicas}"
    )
    usage = f"uses up to {ceiling} GPUs ({spec.resources.gpus} per replica x {replicas})"
    verdicts = []
    per_deployment = _strictest_limit(policies, "max_gpus_per_deployment")
    if per_deployment and ceiling > per_deployment[0]:
        verdicts.append(
            Verdict(
                _names(per_deployment[1]),
                "spec.resources.gpus",
                "spec.limits.maxGpusPerDeployment",
                usage,
                f"at most {per_deployment[0]} GPUs per deployment",
            )
        )
    per_namespace = _strictest_limit(policies, "max_gpus_per_namespace")
    if per_namespace and ceiling + others > per_namespace[0]:
        verdicts.append(
            Verdict(
                _names(per_namespace[1]),
                "spec.resources.gpus",
                "spec.limits.maxGpusPerNamespace",
                f"{usage}, and the namespace's other deployments up to {others}",
                f"at most {per_namespace[0]} GPUs per namespace, so up to "
                f"{max(per_namespace[0] - others, 0)} for this deployment",
            )
        )
    return verdicts


# -- runtime --------------------------------------------------------------------------


def _trust_remote_code(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    forbidding = [p for p in policies if not p.spec.allow_trust_remote_code]
    if not forbidding or not requests_trust_remote_code(spec):
        return []
    return [
        Verdict(
            _names(forbidding),
            "spec.engine.extraArgs",
            "spec.allowTrustRemoteCode",
            f"{TRUST_REMOTE_CODE} runs code shipped with the model",
            "no --trust-remote-code",
        )
    ]


def _egress(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    mode = spec.network.egress
    return [
        Verdict(
            (p.name,),
            "spec.network.egress",
            "spec.allowedEgress",
            f"egress mode {mode.value} is not allowed",
            ", ".join(m.value for m in p.spec.allowed_egress) or "no egress mode",
        )
        for p in policies
        if mode not in p.spec.allowed_egress
    ]


def _request_audit(spec: ModelDeploymentSpec, policies: Sequence[NamedPolicy]) -> list[Verdict]:
    if not policies:
        return []
    strictest = max(AUDIT_LEVELS.index(p.spec.minimum_request_audit) for p in policies)
    level = spec.audit.requests
    if AUDIT_LEVELS.index(level) >= strictest:
        return []
    setting = [p for p in policies if AUDIT_LEVELS.index(p.spec.minimum_request_audit) == strictest]
    return [
        Verdict(
            _names(setting),
            "spec.audit.requests",
            "spec.minimumRequestAudit",
            f"request audit level {level} is below the minimum",
            " or ".join(AUDIT_LEVELS[strictest:]),
        )
    ]
