"""ModelPolicy evaluation: namespace selection, every rule, and strictest-wins merging."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.model_policy import ModelPolicy, ModelPolicySpec
from sovereign_operator.policy import (
    NamedPolicy,
    PolicyEvaluation,
    allow_trust_remote_code,
    applicable,
    evaluate,
    gpu_ceiling,
    has_prefix,
    normalize_image,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
IMAGE_DIGEST = "@sha256:" + "cd" * 32
DEFAULT_IMAGE = "ghcr.io/sovereign-dev/sovereign-worker:0.1.0"
SHA = "0123456789abcdef0123456789abcdef01234567"
CLINICAL = {"kubernetes.io/metadata.name": "clinical-ai", "tier": "regulated"}


def spec(**overrides: Any) -> ModelDeploymentSpec:
    data: dict[str, Any] = {
        "model": {"source": "pvc://model-store/approved/llama", "digest": DIGEST},
        "resources": {"gpus": 2},
    }
    for key, value in overrides.items():
        data[key] = data.get(key, {}) | value if isinstance(value, dict) else value
    return ModelDeploymentSpec.model_validate(data)


def policy(name: str = "p", **rules: Any) -> NamedPolicy:
    return NamedPolicy(name, ModelPolicySpec.model_validate(rules))


def check(
    deployment: ModelDeploymentSpec,
    *policies: NamedPolicy,
    labels: dict[str, str] = CLINICAL,
    others: int = 0,
) -> PolicyEvaluation:
    return evaluate(
        deployment,
        policies,
        namespace_labels=labels,
        default_image=DEFAULT_IMAGE,
        other_namespace_gpus=others,
    )


def fields(evaluation: PolicyEvaluation) -> list[tuple[str, str]]:
    return [(v.policy, v.field) for v in evaluation.verdicts]


# -- namespace selection ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ({}, True),
        ({"matchLabels": {"tier": "regulated"}}, True),
        ({"matchLabels": {"tier": "dev"}}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["regulated", "x"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["dev"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"tier": "regulated"},
                "matchExpressions": [{"key": "team", "operator": "Exists"}],
            },
            False,
        ),
    ],
)
def test_namespace_selection(selector: dict[str, Any], selected: bool) -> None:
    chosen = applicable([policy(namespaceSelector=selector)], CLINICAL)
    assert bool(chosen) is selected


def test_policies_that_do_not_select_the_namespace_do_not_apply() -> None:
    strict = policy(
        "dev-only",
        namespaceSelector={"matchLabels": {"tier": "dev"}},
        limits={"maxGpusPerDeployment": 0},
    )
    evaluation = check(spec(), strict)
    assert evaluation.compliant
    assert evaluation.applied == ()


def test_from_resource_takes_the_name() -> None:
    resource = ModelPolicy.model_validate({"metadata": {"name": "eu-only"}, "spec": {}})
    assert NamedPolicy.from_resource(resource).name == "eu-only"


# -- model sources ------------------------------------------------------------------------

SOURCES = {
    "allowedSources": [
        {"scheme": "pvc", "prefixes": ["pvc://model-store/approved/"]},
        {
            "scheme": "s3",
            "prefixes": ["s3://models/"],
            "endpoints": ["https://minio.storage.svc:9000"],
        },
        {"scheme": "hf"},
    ]
}


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"source": "pvc://model-store/approved/llama"}, None),
        ({"source": "pvc://model-store/approved"}, None),
        ({"source": "pvc://model-store/unapproved/llama"}, "spec.model.source"),
        ({"source": "pvc://model-store/approved-but-not-really/x"}, "spec.model.source"),
        ({"source": "pvc://other-store/approved/llama"}, "spec.model.source"),
        ({"source": "file:///models/llama"}, "spec.model.source"),
        (
            {"source": "s3://models/llama", "s3": {"endpoint": "https://minio.storage.svc:9000"}},
            None,
        ),
        (
            {"source": "s3://models/llama", "s3": {"endpoint": "https://minio.storage.svc:9000/"}},
            None,
        ),
        (
            {"source": "s3://models/llama", "s3": {"endpoint": "https://evil.example:9000"}},
            "spec.model.s3.endpoint",
        ),
        (
            {
                "source": "s3://models-evil/llama",
                "s3": {"endpoint": "https://minio.storage.svc:9000"},
            },
            "spec.model.source",
        ),
        ({"source": f"hf://meta-llama/Llama-3.1-8B@{SHA}"}, None),
    ],
)
def test_allowed_sources(model: dict[str, Any], field: str | None) -> None:
    evaluation = check(spec(model=model), policy("sources", models=SOURCES))
    assert fields(evaluation) == ([("sources", field)] if field else [])


def test_a_source_refusal_says_what_is_allowed() -> None:
    evaluation = check(
        spec(model={"source": "pvc://scratch/llama"}), policy("sources", models=SOURCES)
    )
    (verdict,) = evaluation.verdicts
    assert verdict.rule == "spec.models.allowedSources"
    assert "pvc://scratch/llama" in verdict.message
    assert "pvc://model-store/approved/" in verdict.allowed
    assert "ModelPolicy sources" in evaluation.message()
    assert verdict.as_problem().path == "spec.model.source"


def test_a_source_must_satisfy_every_policy_that_restricts_sources() -> None:
    pvc_only = policy("pvc-only", models={"allowedSources": [{"scheme": "pvc"}]})
    approved = policy(
        "approved",
        models={"allowedSources": [{"scheme": "pvc", "prefixes": ["pvc://model-store/approved/"]}]},
    )
    assert check(spec(), pvc_only, approved).compliant
    elsewhere = spec(model={"source": "pvc://scratch/llama"})
    assert fields(check(elsewhere, pvc_only, approved)) == [("approved", "spec.model.source")]


@pytest.mark.parametrize(
    ("source", "pin_required", "refused"),
    [
        (f"hf://meta-llama/Llama-3.1-8B@{SHA}", True, False),
        ("hf://meta-llama/Llama-3.1-8B@main", True, True),
        ("hf://meta-llama/Llama-3.1-8B@v1.0", True, True),
        (f"hf://meta-llama/Llama-3.1-8B@{SHA[:12]}", True, True),
        (f"hf://meta-llama/Llama-3.1-8B@{SHA.upper()}", True, True),
        ("hf://meta-llama/Llama-3.1-8B@main", False, False),
        ("pvc://model-store/approved/llama", True, False),
    ],
)
def test_hf_revision_pin(source: str, pin_required: bool, refused: bool) -> None:
    evaluation = check(
        spec(model={"source": source}), policy(models={"requireRevisionPin": pin_required})
    )
    assert fields(evaluation) == ([("p", "spec.model.source")] if refused else [])


def test_model_digest_rule() -> None:
    # The API requires the digest; the rule still holds for a spec built around validation.
    no_digest = spec().model_copy(update={"model": spec().model.model_copy(update={"digest": ""})})
    assert fields(check(no_digest, policy())) == [("p", "spec.model.digest")]
    assert check(no_digest, policy(models={"requireDigest": False})).compliant
    assert check(spec(), policy()).compliant


# -- images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "rules", "refused"),
    [
        (None, {}, False),
        (None, {"allowedRegistries": ["ghcr.io/sovereign-dev/"]}, False),
        (
            None,
            {"allowedRegistries": ["registry.internal/ai/"]},
            True,
        ),  # the default image is checked
        (None, {"requireDigest": True}, True),
        ("registry.internal/ai/vllm:0.32", {"allowedRegistries": ["registry.internal/ai"]}, False),
        (
            "registry.internal/ai-untrusted/vllm:0.32",
            {"allowedRegistries": ["registry.internal/ai"]},
            True,
        ),
        (
            f"registry.internal/ai/vllm{IMAGE_DIGEST}",
            {"allowedRegistries": ["registry.internal/ai/"], "requireDigest": True},
            False,
        ),
        ("registry.internal/ai/vllm:0.32", {"requireDigest": True}, True),
        ("vllm/vllm-openai:latest", {"allowedRegistries": ["docker.io/vllm/"]}, False),
        ("vllm/vllm-openai:latest", {"allowedRegistries": ["registry.internal/"]}, True),
    ],
)
def test_engine_images(image: str | None, rules: dict[str, Any], refused: bool) -> None:
    deployment = spec(engine={"image": image}) if image else spec()
    evaluation = check(deployment, policy(images=rules))
    assert [f for _, f in fields(evaluation)][:1] == (["spec.engine.image"] if refused else [])


def test_the_default_image_is_named_as_such() -> None:
    (verdict,) = check(spec(), policy(images={"requireDigest": True})).verdicts
    assert "operator's default image" in verdict.message


@pytest.mark.parametrize(
    ("reference", "qualified"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("vllm/vllm-openai:v1", "docker.io/vllm/vllm-openai:v1"),
        ("localhost/x", "localhost/x"),
        ("registry:5000/x", "registry:5000/x"),
        ("ghcr.io/a/b", "ghcr.io/a/b"),
    ],
)
def test_image_references_are_qualified(reference: str, qualified: str) -> None:
    assert normalize_image(reference) == qualified


@pytest.mark.parametrize(
    ("value", "prefix", "covered"),
    [
        ("registry.internal/ai/vllm", "registry.internal/ai", True),
        ("registry.internal/ai/vllm", "registry.internal/ai/", True),
        ("registry.internal/ai-x/vllm", "registry.internal/ai", False),
        ("registry.internal/ai@sha256:00", "registry.internal/ai", True),
        ("pvc://store/a", "pvc://store/a/", True),
    ],
)
def test_prefixes_match_at_path_boundaries(value: str, prefix: str, covered: bool) -> None:
    assert has_prefix(value, prefix) is covered


# -- residency --------------------------------------------------------------------------

REGION = "node-restriction.kubernetes.io/region"


@pytest.mark.parametrize(
    ("placement", "refused"),
    [
        ({"residency": {REGION: "eu"}}, False),
        ({"nodeSelector": {REGION: "eu"}}, False),
        ({}, True),
        ({"residency": {REGION: "us"}}, True),
        ({"nodeSelector": {"other": "eu"}}, True),
    ],
)
def test_residency_pins_every_engine_pod(placement: dict[str, Any], refused: bool) -> None:
    evaluation = check(spec(placement=placement), policy("eu", residency={REGION: "eu"}))
    assert fields(evaluation) == ([("eu", "spec.placement.residency")] if refused else [])


def test_residency_of_several_policies_adds_up() -> None:
    eu = policy("eu", residency={REGION: "eu"})
    zone = policy("zone", residency={"node-restriction.kubernetes.io/zone": "a"})
    only_region = spec(placement={"residency": {REGION: "eu"}})
    assert fields(check(only_region, eu, zone)) == [("zone", "spec.placement.residency")]
    both = spec(placement={"residency": {REGION: "eu", "node-restriction.kubernetes.io/zone": "a"}})
    assert check(both, eu, zone).compliant


def test_contradicting_residency_policies_are_reported_as_such() -> None:
    eu, us = policy("eu", residency={REGION: "eu"}), policy("us", residency={REGION: "us"})
    (verdict,) = check(spec(placement={"residency": {REGION: "eu"}}), eu, us).verdicts
    assert verdict.policy == "eu, us"
    assert "no node satisfies" in verdict.message


# -- GPUs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "ceiling"),
    [
        ({}, 2),
        ({"replicas": 3}, 6),
        ({"scaling": {"minReplicas": 1, "maxReplicas": 4}}, 8),
        ({"replicas": 5, "scaling": {"mode": "external", "maxReplicas": 2}}, 10),
    ],
)
def test_gpu_ceiling(overrides: dict[str, Any], ceiling: int) -> None:
    assert gpu_ceiling(spec(**overrides)) == ceiling


@pytest.mark.parametrize(
    ("limits", "others", "expected"),
    [
        ({"maxGpusPerDeployment": 8}, 0, []),
        ({"maxGpusPerDeployment": 7}, 0, ["spec.limits.maxGpusPerDeployment"]),
        ({"maxGpusPerNamespace": 16}, 8, []),
        ({"maxGpusPerNamespace": 16}, 9, ["spec.limits.maxGpusPerNamespace"]),
        (
            {"maxGpusPerDeployment": 4, "maxGpusPerNamespace": 4},
            1,
            ["spec.limits.maxGpusPerDeployment", "spec.limits.maxGpusPerNamespace"],
        ),
    ],
)
def test_gpu_limits(limits: dict[str, int], others: int, expected: list[str]) -> None:
    autoscaled = spec(scaling={"maxReplicas": 4})  # 2 GPUs x 4 replicas = 8
    evaluation = check(autoscaled, policy(limits=limits), others=others)
    assert [v.rule for v in evaluation.verdicts] == expected


def test_the_strictest_gpu_limit_wins_and_names_its_policy() -> None:
    loose, strict = (
        policy("loose", limits={"maxGpusPerDeployment": 64}),
        policy("strict", limits={"maxGpusPerDeployment": 4}),
    )
    (verdict,) = check(spec(replicas=3), loose, strict).verdicts
    assert verdict.policy == "strict"
    assert "at most 4" in verdict.allowed
    assert "6 GPUs (2 per replica x replicas 3)" in verdict.message


# -- runtime ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allows", "refused_by"),
    [((True,), []), ((False,), ["a"]), ((True, False), ["b"]), ((True, True), [])],
)
def test_trust_remote_code_needs_every_policy(
    allows: tuple[bool, ...], refused_by: list[str]
) -> None:
    policies = [
        policy(name, allowTrustRemoteCode=allow) for name, allow in zip("ab", allows, strict=False)
    ]
    evaluation = check(spec(engine={"extraArgs": ["--trust-remote-code"]}), *policies)
    assert [v.policy for v in evaluation.verdicts] == (
        [", ".join(refused_by)] if refused_by else []
    )
    assert check(spec(), *policies).compliant


@pytest.mark.parametrize(
    ("allows", "labels", "allowed"),
    [
        ((), CLINICAL, False),  # no policy: the sovereign default is off
        ((True,), CLINICAL, True),
        ((True, False), CLINICAL, False),
        ((True,), {"tier": "dev"}, True),
    ],
)
def test_allow_trust_remote_code_for_the_planner(
    allows: tuple[bool, ...], labels: dict[str, str], allowed: bool
) -> None:
    policies = [policy(f"p{i}", allowTrustRemoteCode=a) for i, a in enumerate(allows)]
    policies.append(policy("dev", namespaceSelector={"matchLabels": {"tier": "none"}}))
    assert allow_trust_remote_code(policies, labels) is allowed


@pytest.mark.parametrize(
    ("egress", "allowed_modes", "refused"),
    [
        ("modelStore", ["none", "modelStore"], False),
        ("modelStore", ["none"], True),
        ("none", ["none"], False),
    ],
)
def test_egress_mode(egress: str, allowed_modes: list[str], refused: bool) -> None:
    evaluation = check(spec(network={"egress": egress}), policy(allowedEgress=allowed_modes))
    assert fields(evaluation) == ([("p", "spec.network.egress")] if refused else [])


@pytest.mark.parametrize(
    ("level", "minimums", "refused_by"),
    [
        ("metadata", ["metadata"], None),
        ("none", ["metadata"], "a"),
        ("metadata", ["none", "full"], "b"),
        ("full", ["full", "full"], None),
        ("metadata", ["full", "full"], "a, b"),
    ],
)
def test_request_audit_level_strictest_minimum_wins(
    level: str, minimums: list[str], refused_by: str | None
) -> None:
    policies = [
        policy(name, minimumRequestAudit=m) for name, m in zip("ab", minimums, strict=False)
    ]
    evaluation = check(spec(audit={"requests": level}), *policies)
    assert [v.policy for v in evaluation.verdicts] == ([refused_by] if refused_by else [])


def test_verdicts_per_policy_for_the_evidence_report() -> None:
    eu = policy("eu", residency={REGION: "eu"})
    lax = policy("lax")
    evaluation = check(spec(), eu, lax)
    assert evaluation.by_policy() == {"eu": list(evaluation.verdicts), "lax": []}
    assert not evaluation.compliant
    assert check(spec(placement={"residency": {REGION: "eu"}}), eu, lax).message() == (
        "compliant with ModelPolicy eu, lax"
    )
