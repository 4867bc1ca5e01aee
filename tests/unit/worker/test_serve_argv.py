"""`serve`: the rendered flags read back, validated, and turned into the exact vLLM argv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from sovereign_worker.cli import main
from sovereign_worker.engine_args import EngineLaunch, build_vllm_argv, build_vllm_flags
from sovereign_worker.serve import (
    OWNED_FIELDS,
    ServeError,
    engine_environment,
    exec_vllm,
    launch_from_flags,
    vllm_argv,
)

pytestmark = pytest.mark.unit

EVERY_FIELD = EngineLaunch(
    served_name="meta-llama/Llama-3.3-70B",
    tensor_parallel_size=8,
    pipeline_parallel_size=2,
    port=8123,
    max_model_len=32768,
    dtype="bfloat16",
    quantization="fp8",
    gpu_memory_utilization=0.92,
    enable_expert_parallel=True,
    trust_remote_code=True,
    shutdown_timeout_seconds=120,
    extra_args=("--max-num-seqs", "64", "--enable-prefix-caching"),
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_every_engine_launch_field_is_read_back() -> None:
    # A field added to EngineLaunch (and so to build_vllm_flags) must be added here too.
    # multi_node is never rendered: the group commands set it from the pod's identity.
    assert set(EngineLaunch.model_fields) - {"extra_args", "multi_node"} == OWNED_FIELDS
    assert launch_from_flags(build_vllm_flags(EVERY_FIELD)) == EVERY_FIELD


launches = st.builds(
    EngineLaunch,
    served_name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,20}", fullmatch=True),
    tensor_parallel_size=st.integers(1, 64),
    pipeline_parallel_size=st.integers(1, 8),
    port=st.integers(1, 65535),
    max_model_len=st.none() | st.integers(1, 1 << 20),
    dtype=st.sampled_from(["auto", "bfloat16", "float16", "float32", "half", "float"]),
    quantization=st.none() | st.sampled_from(["awq", "gptq", "fp8", "compressed-tensors"]),
    gpu_memory_utilization=st.none() | st.floats(0.01, 1.0),
    enable_expert_parallel=st.booleans(),
    trust_remote_code=st.booleans(),
    shutdown_timeout_seconds=st.integers(0, 3600),
    extra_args=st.sampled_from([(), ("--max-num-seqs", "8"), ("--enable-prefix-caching",)]),
)


@given(launches)
def test_the_renderers_flags_round_trip(launch: EngineLaunch) -> None:
    assert launch_from_flags(build_vllm_flags(launch)) == launch


def test_the_execd_argv_is_the_builders_whatever_the_order(model_dir: Path) -> None:
    flags = build_vllm_flags(EVERY_FIELD)
    shuffled = [*flags[-3:], "--port=8123", *[f for f in flags[:-3] if f not in {"--port", "8123"}]]
    expected = build_vllm_argv(str(model_dir), EVERY_FIELD)
    assert vllm_argv(model_dir, shuffled) == expected
    assert expected[:3] == ["vllm", "serve", str(model_dir)]


def test_extra_args_stay_separate_argv_items(model_dir: Path) -> None:
    launch = EngineLaunch(
        served_name="m",
        tensor_parallel_size=1,
        extra_args=("--chat-template-content-format", "openai", "--max-num-seqs=8"),
    )
    argv = vllm_argv(model_dir, build_vllm_flags(launch))
    assert argv[-3:] == ["--chat-template-content-format", "openai", "--max-num-seqs=8"]


def test_multi_node_flags_are_not_accepted_by_single_node_serve() -> None:
    flags = ["--served-model-name", "m", "--tensor-parallel-size", "2", "--nnodes", "2"]
    with pytest.raises(ServeError, match="--nnodes"):
        launch_from_flags(flags)


def test_flags_without_a_shutdown_timeout_still_drain() -> None:
    flags = ["--served-model-name", "m", "--tensor-parallel-size", "1"]
    launch = launch_from_flags(flags)
    assert build_vllm_flags(launch)[-2:] == ["--shutdown-timeout", "30"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tensor-parallel-size", "1"], "--served-model-name and --tensor-parallel-size"),
        (["--served-model-name", "m"], "--served-model-name and --tensor-parallel-size"),
        (
            ["--served-model-name", "m", "--tensor-parallel-size", "1", "--port", "1", "--port=2"],
            "given twice",
        ),
        (
            [
                "--served-model-name",
                "m",
                "--tensor-parallel-size",
                "1",
                "--trust-remote-code",
                "--no-trust-remote-code",
            ],
            "given twice",
        ),
        (["--served-model-name", "m", "--tensor-parallel-size", "x"], "'x' is not a valid value"),
        (["--served-model-name", "m", "--tensor-parallel-size", "0"], "tensor_parallel_size"),
        (
            ["--served-model-name", "m", "--tensor-parallel-size", "1", "--host", "127.0.0.1"],
            "--host must be 0.0.0.0",
        ),
        (
            [
                "--served-model-name",
                "m",
                "--tensor-parallel-size",
                "1",
                "--enable-expert-parallel=1",
            ],
            "takes no value",
        ),
        (["--served-model-name", "m", "--tensor-parallel-size"], "needs a value"),
        (
            ["--served-model-name", "m", "--tensor-parallel-size", "1", "--api-key", "k"],
            "--api-key",
        ),
        (
            [
                "--served-model-name",
                "m",
                "--tensor-parallel-size",
                "1",
                "--max-num-seqs",
                "8; rm -rf /",
            ],
            "never run by a shell",
        ),
        (
            ["--served-model-name", "m", "--tensor-parallel-size", "1", "--config", "/etc/x.yaml"],
            "--config",
        ),
    ],
)
def test_flags_that_cannot_be_served_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ServeError, match=message):
        launch_from_flags(flags)


def test_the_model_folder_must_be_absolute_and_fetched(tmp_path: Path) -> None:
    flags = build_vllm_flags(EVERY_FIELD)
    with pytest.raises(ServeError, match="absolute"):
        vllm_argv(Path("relative"), flags)
    with pytest.raises(ServeError, match=r"holds no config\.json"):
        vllm_argv(tmp_path, flags)


def test_the_offline_settings_always_win_and_proxies_are_dropped() -> None:
    env = engine_environment(
        {
            "HF_HUB_OFFLINE": "0",
            "VLLM_NO_USAGE_STATS": "0",
            "HOME": "/home/dev",
            "HTTPS_PROXY": "http://proxy:3128",
            "no_proxy": "localhost",
            "VLLM_CPU_KVCACHE_SPACE": "1",
        }
    )
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["HOME"] == "/home/dev"  # the pod points HOME at its emptyDir itself
    assert env["HF_HOME"] == "/var/cache/sovereign/huggingface"  # defaults where unset
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "HTTPS_PROXY" not in env
    assert "no_proxy" not in env


def test_exec_without_vllm_on_path_is_an_error() -> None:
    with pytest.raises(ServeError, match="not on PATH"):
        exec_vllm(["vllm", "serve", "/m"], {"PATH": "/nonexistent"})


def test_cli_dry_run_prints_the_argv(model_dir: Path) -> None:
    flags = build_vllm_flags(EVERY_FIELD)
    result = CliRunner().invoke(
        main, ["serve", "--model-dir", str(model_dir), "--dry-run", "--", *flags]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == build_vllm_argv(str(model_dir), EVERY_FIELD)


def test_cli_needs_the_separator_before_vllm_flags(model_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--model-dir", str(model_dir), "--served-model-name", "m"]
    )
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_cli_reports_refused_flags(model_dir: Path) -> None:
    flags = ["--served-model-name", "m", "--tensor-parallel-size", "1", "--api-key", "k"]
    result = CliRunner().invoke(main, ["serve", "--model-dir", str(model_dir), "--", *flags])
    assert result.exit_code == 1
    assert "--api-key" in result.output
