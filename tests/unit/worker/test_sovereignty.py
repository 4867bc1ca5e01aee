"""The engine's fixed environment and the rules for user-supplied variables."""

from __future__ import annotations

import re

import pytest

from sovereign_worker.sovereignty import (
    CACHE_ENV,
    MODEL_DIR,
    RAY_TMP_DIR,
    SOVEREIGNTY_ENV,
    TMP,
    VLLM_ENV_ALLOWLIST,
    WRITABLE_DIRS,
    EnvVar,
    sovereignty_env,
    validate_env,
)

pytestmark = pytest.mark.unit


def test_offline_and_telemetry_variables_are_set() -> None:
    env = sovereignty_env()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env[name] == "1"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_every_cache_variable_points_into_a_writable_dir() -> None:
    writable = [d.path for d in WRITABLE_DIRS]
    for name, path in CACHE_ENV:
        assert any(path == root or path.startswith(root + "/") for root in writable), name
    assert RAY_TMP_DIR.startswith(TMP.path + "/")


def test_writable_dirs_are_distinct_dns_labels_outside_the_model() -> None:
    volumes = [d.volume for d in WRITABLE_DIRS]
    assert len(set(volumes)) == len(volumes)
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", v) for v in volumes)
    paths = [d.path for d in WRITABLE_DIRS]
    assert len(set(paths)) == len(paths)
    assert all(not p.startswith(MODEL_DIR) for p in paths)


def test_environment_order_is_fixed() -> None:
    assert list(sovereignty_env()) == [name for name, _ in SOVEREIGNTY_ENV]


def test_the_sovereignty_environment_itself_would_be_refused_from_users() -> None:
    # Users can neither override nor duplicate what the operator sets.
    problems = validate_env(SOVEREIGNTY_ENV)
    assert len(problems) == len(SOVEREIGNTY_ENV)


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [("OMP_NUM_THREADS", "8")],
        [("NCCL_DEBUG", "WARN"), ("NCCL_SOCKET_IFNAME", "eth0")],
        [("VLLM_CPU_KVCACHE_SPACE", "4"), ("VLLM_LOGGING_LEVEL", "DEBUG")],
        [("_PRIVATE", "")],
        [EnvVar("TZ", "Europe/Paris")],
    ],
)
def test_ordinary_variables_are_accepted(entries: list[tuple[str, str]]) -> None:
    assert validate_env(entries) == []


def test_every_allowlisted_vllm_variable_is_accepted() -> None:
    assert validate_env([(name, "1") for name in sorted(VLLM_ENV_ALLOWLIST)]) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HF_ENDPOINT", "HF_*"),
        ("HF_TOKEN", "HF_*"),
        ("HUGGING_FACE_HUB_TOKEN", "HUGGING_FACE_*"),
        ("HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_*"),
        ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_*"),
        ("VLLM_NO_USAGE_STATS", "only VLLM_CPU_KVCACHE_SPACE"),
        ("VLLM_HOST_IP", "VLLM_*"),
        ("VLLM_ATTENTION_BACKEND", "--attention-backend"),
        ("LD_PRELOAD", "LD_*"),
        ("LD_LIBRARY_PATH", "LD_*"),
        ("PYTHONPATH", "PYTHON*"),
        ("PYTHONSTARTUP", "PYTHON*"),
        ("http_proxy", "proxy"),
        ("HTTPS_PROXY", "proxy"),
        ("No_Proxy", "proxy"),
        ("ALL_PROXY", "proxy"),
        ("DO_NOT_TRACK", "telemetry"),
        ("HOME", "HOME"),
        ("XDG_CACHE_HOME", "XDG_*"),
        ("RAY_ADDRESS", "RAY_*"),
        ("CUDA_VISIBLE_DEVICES", "device plugin"),
        ("SOVEREIGN_MODE", "reserved"),
        ("hf_hub_offline", "HF_*"),
    ],
)
def test_refused_names(name: str, expected: str) -> None:
    problems = validate_env([(name, "x")])
    assert len(problems) == 1
    assert name in problems[0]
    assert "refused" in problems[0]
    assert expected in problems[0]


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "É", "A\x00"])
def test_names_must_be_c_identifiers(name: str) -> None:
    problems = validate_env([(name, "x")])
    assert len(problems) == 1
    assert "not a valid variable name" in problems[0]


def test_duplicates_are_refused_with_the_first_position() -> None:
    problems = validate_env([("A", "1"), ("B", "2"), ("A", "3")])
    assert problems == ["env[2] 'A' is set twice (first at env[0]); keep one"]


def test_nul_in_a_value_is_refused() -> None:
    problems = validate_env([("GOOD", "a\x00b")])
    assert len(problems) == 1
    assert "NUL" in problems[0]


def test_newlines_and_shell_syntax_in_values_are_plain_data() -> None:
    # Kubernetes passes values verbatim to the process environment; nothing expands them.
    assert validate_env([("NOTE", "a\nb $(x) `y` ; z")]) == []


def test_every_problem_names_its_index() -> None:
    problems = validate_env([("OK", "1"), ("LD_PRELOAD", "x"), ("9", "y")])
    assert [p.split(" ", 1)[0] for p in problems] == ["env[1]", "env[2]"]
