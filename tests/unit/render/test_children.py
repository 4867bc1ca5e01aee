"""render_children: order, names, labels, owner references, spec hashes, refusals; and the
small children (Service, PodDisruptionBudget, ServiceAccount, Deployment settings)."""

from __future__ import annotations

import pytest

from sovereign_operator.render import (
    SPEC_HASH_ANNOTATION,
    Owner,
    RenderOptions,
    UnsupportedPlanError,
    render_children,
)
from sovereign_operator.render.meta import spec_hash, with_spec_hash
from tests.unit.render.cases import UID, children, make_plan
from tests.unit.render.k8s_schema import validate_slowly

pytestmark = pytest.mark.unit

LABELS = {
    "app.kubernetes.io/managed-by": "sovereign-operator",
    "app.kubernetes.io/name": "sovereign-engine",
    "app.kubernetes.io/instance": "llama",
    "sovereign.dev/deployment": "llama",
    "sovereign.dev/role": "engine",
}
SELECTOR = {"sovereign.dev/deployment": "llama", "sovereign.dev/role": "engine"}


def test_apply_order_and_names() -> None:
    rendered = render_children(make_plan(), RenderOptions(), Owner.model_deployment("llama", UID))
    assert [(c["kind"], c["metadata"]["name"]) for c in rendered] == [
        ("ServiceAccount", "llama-engine"),
        ("NetworkPolicy", "llama-engine"),
        ("Service", "llama"),
        ("PodDisruptionBudget", "llama-engine"),
        ("Deployment", "llama-engine"),
    ]


@pytest.mark.parametrize(
    "kind", ["ServiceAccount", "NetworkPolicy", "Service", "PodDisruptionBudget", "Deployment"]
)
def test_every_child_validates_and_carries_labels_owner_and_hash(kind: str) -> None:
    child = children(make_plan())[kind]
    validate_slowly(child)  # kubernetes-validate itself, strict: unknown fields fail
    meta = child["metadata"]
    assert meta["namespace"] == "clinical-ai"
    assert meta["labels"] == LABELS
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "sovereign.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "llama",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"][SPEC_HASH_ANNOTATION] == spec_hash(child)


def test_without_a_uid_there_are_no_owner_references() -> None:
    for child in children(make_plan(), uid=None).values():
        assert "ownerReferences" not in child["metadata"]
        validate_slowly(child)
    assert render_children(make_plan(), RenderOptions()) == list(
        children(make_plan(), uid=None).values()
    )


def test_selectors_match_the_pod_labels() -> None:
    rendered = children(make_plan())
    pod_labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert rendered["Deployment"]["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert rendered["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert rendered["Service"]["spec"]["selector"] == SELECTOR
    assert rendered["NetworkPolicy"]["spec"]["podSelector"] == {"matchLabels": SELECTOR}
    assert SELECTOR.items() <= pod_labels.items()


def test_spec_hashes_are_stable_and_follow_the_spec() -> None:
    def hashes(**overrides: object) -> dict[str, str]:
        return {
            kind: child["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
            for kind, child in children(make_plan(**overrides)).items()
        }

    base = hashes()
    assert hashes() == base
    scaled = hashes(replicas=3)
    assert scaled["Deployment"] != base["Deployment"]
    assert {k: v for k, v in scaled.items() if k != "Deployment"} == {
        k: v for k, v in base.items() if k != "Deployment"
    }
    opened = hashes(network={"ingress": [{"cidr": "10.0.0.0/8"}]})
    assert opened["NetworkPolicy"] != base["NetworkPolicy"]
    assert opened["Service"] == base["Service"]


def test_spec_hash_ignores_key_order_and_its_own_annotation() -> None:
    manifest = {"kind": "X", "metadata": {"name": "a", "labels": {"b": "1", "a": "2"}}}
    reordered = {"metadata": {"labels": {"a": "2", "b": "1"}, "name": "a"}, "kind": "X"}
    assert spec_hash(manifest) == spec_hash(reordered)
    stamped = with_spec_hash(manifest)
    assert spec_hash(stamped) == spec_hash(manifest)
    assert with_spec_hash(stamped) == stamped
    assert "annotations" not in manifest["metadata"]  # the input is not modified


def test_multi_node_plans_render_groups_instead_of_a_deployment() -> None:
    plan16 = make_plan(resources={"gpus": 16})
    assert plan16.topology == "multi-node"
    kinds = [c["kind"] for c in render_children(plan16, RenderOptions())]
    assert "Deployment" not in kinds
    assert kinds.count("StatefulSet") == plan16.replicas == 1
    assert issubclass(UnsupportedPlanError, NotImplementedError)


def test_diffusers_plans_render_a_deployment_like_vllm_ones() -> None:
    # The engine args themselves are covered in test_engine_kinds.py.
    diffusion = make_plan(model={"task": "text-to-image"}, engine={"kind": "diffusers"})
    kinds = [c["kind"] for c in render_children(diffusion, RenderOptions())]
    assert kinds == [c["kind"] for c in render_children(make_plan(), RenderOptions())]


def test_service() -> None:
    service = children(make_plan())["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": 8000,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]


def test_pdb_and_service_account() -> None:
    rendered = children(make_plan())
    assert rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert rendered["ServiceAccount"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("replicas", [0, 1, 4])
def test_deployment(replicas: int) -> None:
    spec = children(make_plan(replicas=replicas))["Deployment"]["spec"]
    assert spec["replicas"] == replicas
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert spec["progressDeadlineSeconds"] >= 3600


def test_worker_command_comes_from_the_options() -> None:
    options = RenderOptions(worker_command="/opt/sovereign/bin/sovereign-worker")
    pod = children(make_plan(), options=options)["Deployment"]["spec"]["template"]["spec"]
    for c in pod["initContainers"] + pod["containers"]:
        assert c["command"] == ["/opt/sovereign/bin/sovereign-worker"]
