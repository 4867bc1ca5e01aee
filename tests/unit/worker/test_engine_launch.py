"""Building vLLM's argv from an EngineLaunch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sovereign_worker.engine_args import (
    EngineLaunch,
    build_vllm_argv,
    build_vllm_flags,
    validate_extra_args,
)
from sovereign_worker.sovereignty import MODEL_DIR

pytestmark = pytest.mark.unit


def launch(**fields: object) -> EngineLaunch:
    values: dict[str, object] = {"served_name": "llama3-70b", "tensor_parallel_size": 1}
    values.update(fields)
    return EngineLaunch.model_validate(values)


def value_of(flags: list[str], flag: str) -> str:
    assert flags.count(flag) == 1, flags
    return flags[flags.index(flag) + 1]


def test_minimal_launch_flags_in_order() -> None:
    assert build_vllm_flags(launch()) == [
        "--served-model-name",
        "llama3-70b",
        "--host",
        "0.0.0.0",  # noqa: S104 - asserting the rendered bind address
        "--port",
        "8000",
        "--tensor-parallel-size",
        "1",
        "--dtype",
        "auto",
        "--no-trust-remote-code",
        "--shutdown-timeout",
        "30",
    ]


@pytest.mark.parametrize(
    ("fields", "flag", "value"),
    [
        (
            {"served_name": "meta-llama/Llama-3.3-70B"},
            "--served-model-name",
            "meta-llama/Llama-3.3-70B",
        ),
        ({"tensor_parallel_size": 8}, "--tensor-parallel-size", "8"),
        ({"pipeline_parallel_size": 2}, "--pipeline-parallel-size", "2"),
        ({"port": 8123}, "--port", "8123"),
        ({"max_model_len": 32768}, "--max-model-len", "32768"),
        ({"dtype": "bfloat16"}, "--dtype", "bfloat16"),
        ({"quantization": "awq"}, "--quantization", "awq"),
        ({"quantization": "compressed-tensors"}, "--quantization", "compressed-tensors"),
        ({"gpu_memory_utilization": 0.9}, "--gpu-memory-utilization", "0.9"),
        ({"gpu_memory_utilization": 1}, "--gpu-memory-utilization", "1.0"),
        ({"shutdown_timeout_seconds": 120}, "--shutdown-timeout", "120"),
        ({"shutdown_timeout_seconds": 0}, "--shutdown-timeout", "0"),
    ],
)
def test_each_field_lands_in_its_flag(fields: dict[str, object], flag: str, value: str) -> None:
    assert value_of(build_vllm_flags(launch(**fields)), flag) == value


@pytest.mark.parametrize(
    ("fields", "absent"),
    [
        ({}, "--pipeline-parallel-size"),
        ({"pipeline_parallel_size": 1}, "--pipeline-parallel-size"),
        ({}, "--max-model-len"),
        ({}, "--quantization"),
        ({}, "--gpu-memory-utilization"),
        ({}, "--enable-expert-parallel"),
        ({}, "--trust-remote-code"),
    ],
)
def test_unset_fields_leave_their_flag_out(fields: dict[str, object], absent: str) -> None:
    assert absent not in build_vllm_flags(launch(**fields))


def test_switches() -> None:
    flags = build_vllm_flags(launch(enable_expert_parallel=True, trust_remote_code=True))
    assert "--enable-expert-parallel" in flags
    assert "--trust-remote-code" in flags
    assert "--no-trust-remote-code" not in flags


def test_extra_args_come_last_as_separate_items() -> None:
    extra = ("--max-num-seqs", "8", "--enable-prefix-caching", "--kv-cache-dtype=fp8")
    flags = build_vllm_flags(launch(extra_args=extra))
    assert tuple(flags[-len(extra) :]) == extra
    assert "--max-num-seqs 8" not in flags


def test_the_flags_pass_their_own_validation() -> None:
    # The generated flags are operator-owned, so they would be refused as extra args; this
    # checks the builder only emits real vLLM spellings, by stripping the ownership rule.
    flags = build_vllm_flags(launch(pipeline_parallel_size=2, max_model_len=4096))
    messages = [p.message for p in validate_extra_args(flags, allow_trust_remote_code=False)]
    assert all("is refused" in m for m in messages), messages


def test_invalid_extra_args_raise_with_every_problem() -> None:
    bad = launch(extra_args=("--max-model-len", "4096", "--bogus-flag"))
    with pytest.raises(ValueError, match=r"extraArgs\[0\].*maxModelLen.*extraArgs\[2\]"):
        build_vllm_flags(bad)


def test_trust_remote_code_extra_arg_follows_the_launch() -> None:
    with pytest.raises(ValueError, match="ModelPolicy"):
        build_vllm_flags(launch(extra_args=("--trust-remote-code",)))
    flags = build_vllm_flags(launch(trust_remote_code=True, extra_args=("--trust-remote-code",)))
    assert flags[-1] == "--trust-remote-code"


def test_argv() -> None:
    argv = build_vllm_argv(MODEL_DIR, launch())
    assert argv[:3] == ["vllm", "serve", MODEL_DIR]
    assert argv[3:] == build_vllm_flags(launch())


@pytest.mark.parametrize("model_dir", ["", "relative/dir", "-x", "/a\nb", "/a\x00b"])
def test_argv_refuses_odd_model_dirs(model_dir: str) -> None:
    with pytest.raises(ValueError, match="model directory"):
        build_vllm_argv(model_dir, launch())


@pytest.mark.parametrize(
    "fields",
    [
        {"served_name": ""},
        {"served_name": "-x"},
        {"served_name": "a b"},
        {"tensor_parallel_size": 0},
        {"pipeline_parallel_size": 0},
        {"port": 0},
        {"port": 70000},
        {"max_model_len": 0},
        {"dtype": "fp8"},
        {"quantization": "--awq"},
        {"gpu_memory_utilization": 0},
        {"gpu_memory_utilization": 1.5},
        {"shutdown_timeout_seconds": -1},
        {"unknown_field": 1},
    ],
)
def test_launch_rejects_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        launch(**fields)


def test_launch_is_frozen() -> None:
    with pytest.raises(ValidationError):
        launch().port = 1  # type: ignore[misc]


_extra = st.lists(
    st.sampled_from(
        [
            ("--max-num-seqs", "8"),
            ("--enable-prefix-caching",),
            ("--enforce-eager",),
            ("--kv-cache-dtype", "fp8"),
            ("--max-num-batched-tokens=4096",),
            ("--block-size", "16"),
        ]
    ),
    unique=True,
    max_size=6,
).map(lambda groups: tuple(token for group in groups for token in group))

_launches = st.builds(
    EngineLaunch,
    served_name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,20}", fullmatch=True),
    tensor_parallel_size=st.integers(1, 16),
    pipeline_parallel_size=st.integers(1, 8),
    port=st.integers(1, 65535),
    max_model_len=st.none() | st.integers(1, 1_000_000),
    dtype=st.sampled_from(["auto", "bfloat16", "float16", "float32", "half", "float"]),
    quantization=st.none() | st.sampled_from(["awq", "gptq", "fp8"]),
    gpu_memory_utilization=st.none() | st.floats(0.01, 1.0),
    enable_expert_parallel=st.booleans(),
    trust_remote_code=st.booleans(),
    shutdown_timeout_seconds=st.integers(0, 3600),
    extra_args=_extra,
)


@given(_launches)
def test_build_is_deterministic_and_ends_with_the_extra_args(engine: EngineLaunch) -> None:
    flags = build_vllm_flags(engine)
    assert flags == build_vllm_flags(engine.model_copy())
    assert tuple(flags[len(flags) - len(engine.extra_args) :]) == engine.extra_args
    assert value_of(flags, "--served-model-name") == engine.served_name
    assert value_of(flags, "--tensor-parallel-size") == str(engine.tensor_parallel_size)
    if engine.gpu_memory_utilization is not None:
        text = value_of(flags, "--gpu-memory-utilization")
        assert float(text) == engine.gpu_memory_utilization
    assert all(isinstance(item, str) and item for item in flags)
