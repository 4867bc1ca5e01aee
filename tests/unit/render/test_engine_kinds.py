"""Every model family's engine: diffusers pods, Whisper on vLLM, Mixtral's expert parallelism."""

from __future__ import annotations

import pytest

from sovereign_operator.api.problems import InvalidSpec
from sovereign_operator.render.diffusers_engine import diffusers_launch
from sovereign_operator.render.probes import HEALTH_PATH
from sovereign_worker.diffusion.launch import build_diffusers_flags, launch_from_flags
from sovereign_worker.sovereignty import MODEL_DIR
from tests.unit.render.cases import container, make_plan, pod_spec
from tests.unit.render.pss import restricted_violations

pytestmark = pytest.mark.unit

DIFFUSION = {
    "model": {"task": "text-to-image", "servedName": "sd-1.5"},
    "engine": {"kind": "diffusers", "dtype": "float16"},
}


def test_a_diffusers_engine_runs_serve_with_the_worker_builders_flags() -> None:
    plan = make_plan(**DIFFUSION)
    args = container(plan)["args"]
    assert args[:6] == ["serve", "--engine", "diffusers", "--model-dir", MODEL_DIR, "--"]
    launch = launch_from_flags(args[6:])  # what `serve` will read back
    assert args[6:] == build_diffusers_flags(diffusers_launch(plan))
    assert (launch.served_name, launch.port, launch.dtype) == ("sd-1.5", 8000, "float16")
    assert launch.shutdown_timeout_seconds == plan.engine.shutdown_timeout_seconds
    assert not any(
        arg.startswith(("--tensor-parallel", "--max-model-len", "--no-trust")) for arg in args
    )


def test_a_diffusers_pod_is_the_same_locked_down_pod_with_the_fetch_step_and_probes() -> None:
    diffusion, vllm = pod_spec(make_plan(**DIFFUSION)), pod_spec(make_plan())
    assert restricted_violations({"spec": diffusion}) == []
    assert diffusion["initContainers"] == vllm["initContainers"]
    assert diffusion["securityContext"] == vllm["securityContext"]
    assert diffusion["volumes"] == vllm["volumes"]
    engine = diffusion["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert engine[probe]["httpGet"]["path"] == HEALTH_PATH
    assert {e["name"]: e["value"] for e in engine["env"]}["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    "setting",
    [
        {"maxModelLen": 4096},
        {"quantization": "fp8"},
        {"gpuMemoryUtilization": 0.9},
        {"expertParallel": True},
    ],
)
def test_vllm_only_settings_are_refused_for_diffusers(setting: dict[str, object]) -> None:
    with pytest.raises(InvalidSpec) as caught:
        make_plan(**{**DIFFUSION, "engine": {**DIFFUSION["engine"], **setting}})
    (name,) = setting
    assert [p.path for p in caught.value.problems] == [f"spec.engine.{name}"]
    assert "vLLM setting" in caught.value.problems[0].message


def test_whisper_is_served_by_vllm() -> None:
    args = container(make_plan(model={"task": "speech-to-text"}, engine={"maxModelLen": 448}))[
        "args"
    ]
    assert args[:4] == ["serve", "--model-dir", MODEL_DIR, "--"]
    assert args[args.index("--max-model-len") + 1] == "448"


def test_expert_parallel_reaches_vllm_only_with_tensor_parallel_2_or_more() -> None:
    mixtral = make_plan(resources={"gpus": 2}, engine={"expertParallel": True})
    args = container(mixtral)["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert "--enable-expert-parallel" in args
    with pytest.raises(InvalidSpec, match="expertParallel"):
        make_plan(resources={"gpus": 1}, engine={"expertParallel": True})
