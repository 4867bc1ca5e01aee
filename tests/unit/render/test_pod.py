"""The engine pod: argv, GPUs, volumes per source, environment, security, probes, placement."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.placement import GPU_PRODUCT_LABEL, GPU_TOLERATION
from sovereign_operator.render.pod import ENGINE_UID
from sovereign_worker import sovereignty
from sovereign_worker.engine_args import build_vllm_flags
from sovereign_worker.paths import claim_mount_path
from tests.unit.render.cases import (
    DIGEST,
    H100,
    children,
    container,
    env,
    make_plan,
    mounts,
    pod_spec,
    volumes,
)

pytestmark = pytest.mark.unit


def flag_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


@pytest.mark.parametrize(
    ("overrides", "gpus", "tensor", "pipeline"),
    [
        pytest.param({}, "1", "1", None, id="8B-on-1-GPU"),
        pytest.param({"resources": {"gpus": 4}}, "4", "4", None, id="TP4"),
        pytest.param({"resources": {"gpus": 8}}, "8", "8", None, id="70B-TP8"),
        pytest.param(
            {"resources": {"gpus": 8}, "parallelism": {"tensor": 4, "pipeline": 2}},
            "8",
            "4",
            "2",
            id="TP4xPP2-in-one-node",
        ),
    ],
)
def test_gpus_and_parallel_flags(
    overrides: dict[str, Any], gpus: str, tensor: str, pipeline: str | None
) -> None:
    engine = container(make_plan(**overrides))
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert flag_value(engine["args"], "--tensor-parallel-size") == tensor
    assert flag_value(engine["args"], "--pipeline-parallel-size") == pipeline
    fetch = container(make_plan(**overrides), "fetch")
    assert "nvidia.com/gpu" not in fetch["resources"]["requests"]


def test_engine_argv_is_exactly_the_worker_contract() -> None:
    serving_plan = make_plan(
        engine={"maxModelLen": 8192, "dtype": "bfloat16", "extraArgs": ["--max-num-seqs", "64"]}
    )
    engine = container(serving_plan)
    assert engine["command"] == ["sovereign-worker"]
    assert engine["args"] == [
        "serve",
        "--model-dir",
        sovereignty.MODEL_DIR,
        "--",
        *build_vllm_flags(serving_plan.engine),
    ]
    assert engine["args"][-2:] == ["--max-num-seqs", "64"]
    assert flag_value(engine["args"], "--served-model-name") == "llama"


def test_fetch_argv() -> None:
    fetch = container(make_plan(), "fetch")
    assert [fetch["command"][0], *fetch["args"]] == [
        "sovereign-worker",
        "fetch",
        "--source",
        "pvc://models/meta-llama/Llama-3.1-8B",
        "--digest",
        DIGEST,
        "--dest",
        sovereignty.MODEL_DIR,
    ]


def test_pvc_source_is_mounted_read_only_and_never_copied() -> None:
    serving_plan = make_plan()
    assert volumes(serving_plan)["model"] == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    }
    fetch_mount = mounts(container(serving_plan, "fetch"))[claim_mount_path("models")]
    assert fetch_mount == {
        "name": "model",
        "mountPath": "/var/run/sovereign/volumes/models",
        "readOnly": True,
    }
    engine_mount = mounts(container(serving_plan))[sovereignty.MODEL_DIR]
    assert engine_mount["readOnly"] is True
    assert engine_mount["subPath"] == "meta-llama/Llama-3.1-8B"


def test_pvc_source_of_a_whole_claim_needs_no_sub_path() -> None:
    serving_plan = make_plan(model={"source": "pvc://models"})
    assert "subPath" not in mounts(container(serving_plan))[sovereignty.MODEL_DIR]


STORE = {"modelStoreCidrs": ["10.40.0.0/24"]}
S3 = {
    "source": "s3://models/llama-8b",
    "s3": {
        "endpoint": "https://minio.storage:9000",
        "credentialsSecret": "s3-creds",
        "region": "eu",
    },
}


@pytest.mark.parametrize(
    ("model", "volume"),
    [
        pytest.param(S3, {"emptyDir": {"sizeLimit": "256Gi"}}, id="s3-default-cache"),
        pytest.param(
            S3 | {"cache": {"sizeLimit": "40Gi"}},
            {"emptyDir": {"sizeLimit": "40Gi"}},
            id="s3-sized",
        ),
        pytest.param(
            S3 | {"cache": {"claimName": "model-cache"}},
            {"persistentVolumeClaim": {"claimName": "model-cache"}},
            id="s3-cache-claim",
        ),
        pytest.param(
            {"source": "file:///models/tiny"}, {"emptyDir": {"sizeLimit": "256Gi"}}, id="file"
        ),
    ],
)
def test_copied_sources_fill_a_cache_only_the_fetch_step_writes(
    model: dict[str, Any], volume: dict[str, Any]
) -> None:
    serving_plan = make_plan(model=model, network=STORE)
    assert volumes(serving_plan)["model"] == {"name": "model", **volume}
    assert (
        mounts(container(serving_plan, "fetch"))[sovereignty.MODEL_DIR].get("readOnly") is not True
    )
    assert mounts(container(serving_plan))[sovereignty.MODEL_DIR]["readOnly"] is True


def test_s3_settings_and_credentials_reach_only_the_fetch_step() -> None:
    serving_plan = make_plan(model=S3, network=STORE)
    fetch_env = env(container(serving_plan, "fetch"))
    assert fetch_env["AWS_ENDPOINT_URL"] == "https://minio.storage:9000"
    assert fetch_env["AWS_REGION"] == "eu"
    assert fetch_env["AWS_EC2_METADATA_DISABLED"] == "true"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert fetch_env[key] == {"secretKeyRef": {"name": "s3-creds", "key": key}}
    assert not any(name.startswith("AWS_") for name in env(container(serving_plan)))


def test_sovereignty_and_user_environment() -> None:
    engine = container(make_plan(engine={"env": [{"name": "OMP_NUM_THREADS", "value": "8"}]}))
    engine_env = env(engine)
    for name, value in sovereignty.sovereignty_env().items():
        assert engine_env[name] == value
    assert engine_env["OMP_NUM_THREADS"] == "8"
    assert engine_env["HF_HUB_OFFLINE"] == "1"
    # User variables come after the operator's, and names are never repeated.
    names = [e["name"] for e in engine["env"]]
    assert names[-1] == "OMP_NUM_THREADS"
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ["fetch", "engine"])
def test_every_writable_path_is_an_empty_dir(name: str) -> None:
    serving_plan = make_plan()
    container_mounts = mounts(container(serving_plan, name))
    pod_volumes = volumes(serving_plan)
    for writable in sovereignty.WRITABLE_DIRS:
        assert container_mounts[writable.path]["name"] == writable.volume
        assert "emptyDir" in pod_volumes[writable.volume]
    assert container(serving_plan, name)["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("resources", "size"),
    [({"gpus": 1}, "2Gi"), ({"gpus": 8}, "8Gi"), ({"gpus": 1, "sharedMemory": "16Gi"}, "16Gi")],
)
def test_shared_memory_is_a_sized_memory_empty_dir(resources: dict[str, Any], size: str) -> None:
    serving_plan = make_plan(resources=resources)
    assert volumes(serving_plan)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": size}
    assert mounts(container(serving_plan))["/dev/shm"]["name"] == "dshm"


def test_security_context() -> None:
    pod = pod_spec(make_plan())
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": ENGINE_UID,
        "runAsGroup": ENGINE_UID,
        "fsGroup": ENGINE_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["serviceAccountName"] == "llama-engine"
    for c in pod["containers"] + pod["initContainers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_probes_and_grace_period() -> None:
    serving_plan = make_plan()
    engine = container(serving_plan)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert engine[probe]["httpGet"] == {"path": "/health", "port": "http", "scheme": "HTTP"}
    assert engine["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    startup = engine["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60
    shutdown = int(flag_value(engine["args"], "--shutdown-timeout") or 0)
    assert pod_spec(serving_plan)["terminationGracePeriodSeconds"] > shutdown


def test_resources_follow_the_plan() -> None:
    serving_plan = make_plan(resources={"cpu": "12", "memory": "96Gi"})
    engine = container(serving_plan)
    assert engine["resources"]["requests"] == {"cpu": "12", "memory": "96Gi", "nvidia.com/gpu": "1"}
    assert engine["resources"]["limits"] == {"memory": "96Gi", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize(
    ("resources", "placement", "selector"),
    [
        ({}, {}, {GPU_PRODUCT_LABEL: H100}),
        ({"gpuType": None}, {}, {}),
        ({}, {"nodeSelector": {"pool": "gpu"}}, {"pool": "gpu", GPU_PRODUCT_LABEL: H100}),
        # The typed gpuType wins over a hand-written product label.
        ({}, {"nodeSelector": {GPU_PRODUCT_LABEL: "other"}}, {GPU_PRODUCT_LABEL: H100}),
    ],
)
def test_node_selector(
    resources: dict[str, Any], placement: dict[str, Any], selector: dict[str, str]
) -> None:
    serving_plan = make_plan(resources=resources, placement=placement)
    assert pod_spec(serving_plan)["nodeSelector"] == selector


def test_residency_is_a_required_node_affinity() -> None:
    residency = {"topology.kubernetes.io/region": "eu-west", "sovereign.dev/jurisdiction": "de"}
    pod = pod_spec(make_plan(placement={"residency": residency}))
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "sovereign.dev/jurisdiction", "operator": "In", "values": ["de"]},
                    {
                        "key": "topology.kubernetes.io/region",
                        "operator": "In",
                        "values": ["eu-west"],
                    },
                ]
            }
        ]
    }
    assert "affinity" not in pod_spec(make_plan())


def test_tolerations_add_the_gpu_taint_once() -> None:
    dedicated = {"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}
    pod = pod_spec(make_plan(placement={"tolerations": [dedicated]}))
    assert pod["tolerations"] == [dedicated, GPU_TOLERATION]
    pod = pod_spec(make_plan(placement={"tolerations": [GPU_TOLERATION]}))
    assert pod["tolerations"] == [GPU_TOLERATION]


def template_hash(serving_plan: ServingPlan) -> str:
    meta = children(serving_plan)["Deployment"]["spec"]["template"]["metadata"]
    return str(meta["annotations"]["sovereign.dev/template-hash"])


def test_template_hash_annotation_follows_the_plan() -> None:
    base = make_plan()
    assert template_hash(base) == base.template_hash
    assert template_hash(make_plan(resources={"memory": "128Gi"})) != template_hash(base)
    # Scaling does not change the pod, so it must not roll the pods.
    assert template_hash(make_plan(replicas=3)) == template_hash(base)
