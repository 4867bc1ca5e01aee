"""Multi-node groups: a StatefulSet, headless Service and NetworkPolicy per replica, the
leader-only Service, the group command in the pods, and the layouts planning refuses."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from sovereign_operator.api.problems import InvalidSpec
from sovereign_operator.planning import ServingPlan
from sovereign_operator.render import Owner, RenderOptions, render_children
from sovereign_operator.render.group_names import (
    GROUP_INDEX_LABEL,
    GROUP_LABEL,
    MAX_GROUP_NAME,
    POD_INDEX_LABEL,
    group_name,
)
from sovereign_operator.render.group_statefulset import PARKED_ANNOTATION
from sovereign_operator.render.placement import GPU_PRODUCT_LABEL
from sovereign_worker import sovereignty
from sovereign_worker.engine_args import build_vllm_flags
from sovereign_worker.multinode import commands
from sovereign_worker.multinode.common import GroupOptions
from sovereign_worker.multinode.contract import POD_IP_ENV, RANK_ENV
from tests.unit.render.cases import H100, UID, make_plan
from tests.unit.render.k8s_schema import validate_slowly
from tests.unit.render.pss import restricted_violations

pytestmark = pytest.mark.unit

Manifest = dict[str, Any]


def render(plan: ServingPlan, parked: dict[str, str] | None = None) -> list[Manifest]:
    owner = Owner.model_deployment(plan.name, UID)
    return render_children(plan, RenderOptions(), owner, parked=parked)


def of_kind(children: list[Manifest], kind: str) -> list[Manifest]:
    return [c for c in children if c["kind"] == kind]


def engine(statefulset: Manifest) -> dict[str, Any]:
    container: dict[str, Any] = statefulset["spec"]["template"]["spec"]["containers"][0]
    return container


def value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def multi(gpus: int, replicas: int = 1, **overrides: Any) -> ServingPlan:
    return make_plan(resources={"gpus": gpus, "gpuType": H100}, replicas=replicas, **overrides)


@pytest.mark.parametrize(
    ("gpus", "parallelism", "tensor", "pipeline", "pods"),
    [
        pytest.param(16, None, "8", "2", 2, id="16-on-8-GPU-nodes-TP8xPP2"),
        pytest.param(32, None, "8", "4", 4, id="32-on-8-GPU-nodes-TP8xPP4"),
        pytest.param(16, {"tensor": 4, "pipeline": 4}, "4", "4", 2, id="override-TP4xPP4"),
        pytest.param(32, {"tensor": 2, "pipeline": 16}, "2", "16", 4, id="override-TP2xPP16"),
    ],
)
def test_layouts(
    gpus: int, parallelism: dict[str, int] | None, tensor: str, pipeline: str, pods: int
) -> None:
    overrides = {"parallelism": parallelism} if parallelism else {}
    plan = multi(gpus, **overrides)
    (statefulset,) = of_kind(render(plan), "StatefulSet")
    assert statefulset["spec"]["replicas"] == pods
    container = engine(statefulset)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    args = container["args"]
    assert value(args, "--nnodes") == str(pods)
    assert value(args, "--gpus-per-node") == "8"
    assert value(args, "--tensor-parallel-size") == tensor
    assert value(args, "--pipeline-parallel-size") == pipeline
    # The group's own flags are added by the command from the pod's rank, never rendered.
    for flag in ("--node-rank", "--headless", "--distributed-executor-backend", "--master-addr"):
        assert flag not in args


@pytest.mark.parametrize(
    ("resources", "parallelism", "message"),
    [
        pytest.param({"gpus": 12}, None, "not a multiple of 8; use 8 or 16", id="12-on-8"),
        pytest.param({"gpus": 16}, {"tensor": 16, "pipeline": 1}, "stay inside a node", id="TP16"),
        pytest.param(
            {"gpus": 16}, {"tensor": 3, "pipeline": 5}, "= 15 but resources.gpus = 16", id="3x5"
        ),
        pytest.param({"gpus": 16, "gpuType": "NVIDIA-B200"}, None, "no node offers", id="no-type"),
        pytest.param({"gpus": 16, "gpusPerNode": 16}, None, "offer 8", id="more-than-nodes"),
    ],
)
def test_impossible_layouts_are_refused(
    resources: dict[str, Any], parallelism: dict[str, int] | None, message: str
) -> None:
    overrides: dict[str, Any] = {"resources": {"gpuType": H100} | resources}
    if parallelism:
        overrides["parallelism"] = parallelism
    # The API model refuses what it can see alone (ValidationError is a ValueError);
    # planning refuses what needs the node sizes (InvalidSpec).
    with pytest.raises((InvalidSpec, ValueError), match=message):
        make_plan(**overrides)


def test_diffusers_never_spans_nodes() -> None:
    with pytest.raises(InvalidSpec, match="diffusers"):
        make_plan(
            model={"task": "text-to-image"},
            engine={"kind": "diffusers"},
            resources={"gpus": 16, "gpuType": H100},
        )


def test_children_per_replica_in_apply_order_all_valid() -> None:
    plan = multi(16, replicas=2)
    children = render(plan)
    g0, g1 = (group_name("llama", i, plan.template_hash) for i in range(2))
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("ServiceAccount", "llama-engine"),
        ("NetworkPolicy", "llama-engine"),
        ("NetworkPolicy", g0),
        ("NetworkPolicy", g1),
        ("Service", "llama"),
        ("PodDisruptionBudget", "llama-engine"),
        ("Service", g0),
        ("Service", g1),
        ("StatefulSet", g0),
        ("StatefulSet", g1),
    ]
    for child in children:
        validate_slowly(child)
    for statefulset in of_kind(children, "StatefulSet"):
        assert restricted_violations(statefulset["spec"]["template"]) == []


def test_the_statefulset_forms_one_group() -> None:
    plan = multi(16)
    (statefulset,) = of_kind(render(plan), "StatefulSet")
    group = statefulset["metadata"]["name"]
    spec = statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["serviceName"] == group
    assert spec["selector"]["matchLabels"] == {
        "sovereign.dev/deployment": "llama",
        "sovereign.dev/role": "engine",
        GROUP_LABEL: group,
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[GROUP_INDEX_LABEL] == "0"
    pod = spec["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "labelSelector": {"matchLabels": {GROUP_LABEL: group}},
                "topologyKey": "kubernetes.io/hostname",
            }
        ]
    }
    assert pod["nodeSelector"][GPU_PRODUCT_LABEL] == H100
    assert pod["initContainers"][0]["args"][0] == "fetch"


def test_rank_and_address_come_from_the_downward_api() -> None:
    (statefulset,) = of_kind(render(multi(16)), "StatefulSet")
    env = {e["name"]: e for e in engine(statefulset)["env"]}
    assert env[RANK_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.labels['{POD_INDEX_LABEL}']"
    )
    assert env[POD_IP_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    for name, expected in sovereignty.sovereignty_env().items():
        assert env[name]["value"] == expected


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("native", ["--master-port", "29500", "--link-port", "29400"]),
        ("ray", ["--ray-port", "6379"]),
    ],
)
def test_the_engine_runs_the_group_command(backend: str, expected: list[str]) -> None:
    plan = multi(16, multiNode={"backend": backend})
    (statefulset,) = of_kind(render(plan), "StatefulSet")
    group = statefulset["metadata"]["name"]
    container = engine(statefulset)
    args = container["args"]
    assert container["command"] == ["sovereign-worker"]
    separator = args.index("--")
    assert args[:separator] == [
        "group-node",
        "--backend",
        backend,
        "--nnodes",
        "2",
        "--leader-address",
        f"{group}-0.{group}.clinical-ai.svc",
        "--gpus-per-node",
        "8",
        "--join-timeout",
        "1800",
        *expected,
        "--model-dir",
        sovereignty.MODEL_DIR,
    ]
    assert args[separator + 1 :] == build_vllm_flags(plan.engine)


@pytest.mark.parametrize("backend", ["native", "ray"])
@pytest.mark.parametrize("rank", [0, 1])
def test_the_worker_reads_the_rendered_args_back(
    backend: str, rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered argv parses with the real `group-node` command (the runner is stubbed:
    starting vLLM is the engine tests' job) and picks the role from the pod's rank."""
    plan = multi(32, multiNode={"backend": backend})
    (statefulset,) = of_kind(render(plan), "StatefulSet")
    seen: list[tuple[str, GroupOptions]] = []

    def runner(role: str) -> Any:
        async def run(options: GroupOptions) -> None:
            seen.append((role, options))

        return run

    runners = {
        key: runner(f"{key[0]}-{'leader' if key[1] else 'member'}") for key in commands.RUNNERS
    }
    monkeypatch.setattr(commands, "RUNNERS", runners)
    result = CliRunner().invoke(
        commands.group_node,
        engine(statefulset)["args"][1:],
        env={RANK_ENV: str(rank), POD_IP_ENV: "10.1.2.3"},
    )
    assert result.exit_code == 0, result.output
    ((role, options),) = seen
    assert role == f"{backend}-{'leader' if rank == 0 else 'member'}"
    assert (options.rank, options.nnodes, options.gpus_per_node) == (rank, 4, 8)
    assert options.pod_ip == "10.1.2.3"
    assert list(options.vllm_flags) == build_vllm_flags(plan.engine)


def test_members_need_a_rank_inside_the_group() -> None:
    (statefulset,) = of_kind(render(multi(16)), "StatefulSet")
    result = CliRunner().invoke(
        commands.group_node, engine(statefulset)["args"][1:], env={RANK_ENV: "2"}
    )
    assert result.exit_code == 1
    assert "rank 2 is outside this 2-node group" in result.output


def test_the_client_service_selects_only_leaders() -> None:
    (service,) = [
        s for s in of_kind(render(multi(16)), "Service") if s["metadata"]["name"] == "llama"
    ]
    assert service["spec"]["selector"] == {
        "sovereign.dev/deployment": "llama",
        "sovereign.dev/role": "engine",
        POD_INDEX_LABEL: "0",
    }
    assert service["spec"]["type"] == "ClusterIP"


def test_the_headless_service_publishes_pods_before_they_are_ready() -> None:
    plan = multi(16)
    group = group_name("llama", 0, plan.template_hash)
    (headless,) = [s for s in of_kind(render(plan), "Service") if s["metadata"]["name"] == group]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"][GROUP_LABEL] == group


def test_the_group_network_policy_admits_only_the_group() -> None:
    plan = multi(16)
    group = group_name("llama", 0, plan.template_hash)
    policies = {p["metadata"]["name"]: p for p in of_kind(render(plan), "NetworkPolicy")}
    spec = policies[group]["spec"]
    peers = [{"podSelector": {"matchLabels": {GROUP_LABEL: group}}}]
    assert spec["podSelector"]["matchLabels"][GROUP_LABEL] == group
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": peers, "ports": [{"protocol": "TCP"}]}]
    assert spec["egress"] == [{"to": peers, "ports": [{"protocol": "TCP"}]}]
    # The engine policy (API from the gateway and the operator, DNS, model store) still
    # selects every pod of the group.
    engine_selector = policies["llama-engine"]["spec"]["podSelector"]["matchLabels"]
    (statefulset,) = of_kind(render(plan), "StatefulSet")
    assert engine_selector.items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()


def test_a_spec_change_makes_new_groups_scaling_keeps_them() -> None:
    base = multi(16)
    scaled = multi(16, replicas=3)
    changed = multi(16, engine={"maxModelLen": 4096})
    names = [s["metadata"]["name"] for s in of_kind(render(base), "StatefulSet")]
    scaled_names = [s["metadata"]["name"] for s in of_kind(render(scaled), "StatefulSet")]
    changed_names = [s["metadata"]["name"] for s in of_kind(render(changed), "StatefulSet")]
    assert scaled_names[:1] == names
    assert len(scaled_names) == 3
    assert not set(changed_names) & set(names)


def test_parked_groups_have_no_pods_and_say_why() -> None:
    plan = multi(16, replicas=2)
    g1 = group_name("llama", 1, plan.template_hash)
    note = "2026-01-01T00:00:00+00:00: 1 of 2 pods could not be placed within 600 s"
    first, second = of_kind(render(plan, parked={g1: note}), "StatefulSet")
    assert first["spec"]["replicas"] == 2
    assert (
        "annotations" not in first["metadata"]
        or PARKED_ANNOTATION not in first["metadata"]["annotations"]
    )
    assert second["spec"]["replicas"] == 0
    assert second["metadata"]["annotations"][PARKED_ANNOTATION] == note
    validate_slowly(second)


def test_group_names_fit_statefulset_limits() -> None:
    longest = "a" * 40
    assert len(group_name(longest, 999, "f" * 10)) == MAX_GROUP_NAME
    with pytest.raises(ValueError, match="longer than 52"):
        group_name(longest, 1000, "f" * 10)


def test_single_node_plans_are_unchanged_by_groups() -> None:
    children = render(make_plan())
    assert [c["kind"] for c in children if c["kind"] in ("StatefulSet", "Deployment")] == [
        "Deployment"
    ]
    (service,) = of_kind(children, "Service")
    assert POD_INDEX_LABEL not in service["spec"]["selector"]
