"""`engine.extraArgs` validation: what is accepted, what is refused, and what the user is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovereign_worker.engine_args import (
    MAX_EXTRA_ARGS,
    MAX_TOKEN_LENGTH,
    ArgProblem,
    validate_extra_args,
)
from sovereign_worker.engine_flag_policy import DENIED
from sovereign_worker.vllm_flags import flag_table

pytestmark = pytest.mark.unit


def problems_of(*tokens: str, allow_trust_remote_code: bool = False) -> list[ArgProblem]:
    return validate_extra_args(list(tokens), allow_trust_remote_code=allow_trust_remote_code)


def only_problem(*tokens: str, allow_trust_remote_code: bool = False) -> ArgProblem:
    problems = problems_of(*tokens, allow_trust_remote_code=allow_trust_remote_code)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    "tokens",
    [
        [],
        ["--max-num-seqs", "8"],
        ["--enable-prefix-caching"],
        ["--no-enable-prefix-caching"],
        ["--kv-cache-dtype", "fp8"],
        ["--max-num-batched-tokens=4096"],
        ["--enforce-eager", "--max-num-seqs=16", "--block-size", "32"],
        ["--seed", "-1"],
        ["--cudagraph-capture-sizes", "1", "2", "4", "8"],
        ["--collect-detailed-traces", "model", "worker"],
        ["--tool-call-parser", "hermes", "--enable-auto-tool-choice"],
        ["--reasoning-parser", "deepseek_r1"],
        ["--load-format", "safetensors"],
        ["--generation-config", "vllm"],
        ["--log-level", "DEBUG", "--uvicorn-log-level", "warning"],
        ["--override-generation-config", '{"temperature": 0.2, "stop": ["<|eot_id|>"]}'],
        ["--default-chat-template-kwargs", '{"enable_thinking": false}'],
        ["--limit-mm-per-prompt", '{"image": 2}'],
        ["--compilation-config.mode", "3"],
        ["--compilation-config.cudagraph_capture_sizes+", "8"],
        ["--compilation-config", '{"mode": 3, "cudagraph_mode": "FULL"}'],
        ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}'],
        ["--structured-outputs-config.backend=xgrammar"],
        ["--no-trust-remote-code"],
        ["--no-enable-log-requests", "--no-trust-request-chat-template"],
        ["--disable-access-log-for-endpoints", "/health,/metrics"],
        ["--max-num-seqs", "-"],
    ],
)
def test_ordinary_flags_are_accepted(tokens: list[str]) -> None:
    assert validate_extra_args(tokens, allow_trust_remote_code=False) == []


@pytest.mark.parametrize(
    ("tokens", "instead"),
    [
        (["--model", "/other"], "spec.model.source"),
        (["--served-model-name", "x"], "spec.model.servedName"),
        (["--max-model-len", "4096"], "spec.engine.maxModelLen"),
        (["--max-model-len=4096"], "spec.engine.maxModelLen"),
        (["--dtype", "half"], "spec.engine.dtype"),
        (["--quantization", "awq"], "spec.engine.quantization"),
        (["--quantization-config", "{}"], "spec.engine.quantization"),
        (["--gpu-memory-utilization", "0.5"], "spec.engine.gpuMemoryUtilization"),
        (["--device-memory-utilization", "0.5"], "spec.engine.gpuMemoryUtilization"),
        (["--enable-expert-parallel"], "spec.engine.expertParallel"),
        (["--no-enable-expert-parallel"], "spec.engine.expertParallel"),
        (["--tensor-parallel-size", "2"], "spec.parallelism.tensor"),
        (["--pipeline-parallel-size", "2"], "spec.parallelism.pipeline"),
        (["--data-parallel-size", "2"], "spec.replicas"),
        (["--data-parallel-address", "10.0.0.1"], "spec.replicas"),
        (["--nnodes", "2"], "spec.multiNode.backend"),
        (["--node-rank", "1"], "spec.multiNode.backend"),
        (["--master-addr", "10.0.0.1"], "spec.multiNode.backend"),
        (["--master-port", "29501"], "spec.multiNode.backend"),
        (["--headless"], "spec.multiNode.backend"),
        (["--distributed-executor-backend", "ray"], "spec.multiNode.backend"),
        (["--device-ids", "0,1"], "spec.resources.gpus"),
    ],
)
def test_operator_owned_flags_name_the_spec_field(tokens: list[str], instead: str) -> None:
    problem = only_problem(*tokens)
    assert problem.index == 0
    assert problem.token == tokens[0]
    assert tokens[0].split("=")[0] in problem.message
    assert "refused" in problem.message
    assert instead in problem.message


@pytest.mark.parametrize(
    "tokens",
    [
        ["--host", "127.0.0.1"],
        ["--port", "9000"],
        ["--uds", "/tmp/x.sock"],
        ["--shutdown-timeout", "5"],
        ["--disable-log-stats"],
        ["--grpc"],
        ["--grpc-port", "50051"],
        ["--tokens-only"],
        ["--root-path", "/llm"],
        ["--ssl-keyfile", "/k"],
        ["--ssl-certfile", "/c"],
        ["--ssl-ca-certs", "/ca"],
        ["--api-key", "secret"],
        ["--help"],
    ],
)
def test_serving_flags_the_operator_owns_are_refused(tokens: list[str]) -> None:
    problem = only_problem(*tokens)
    assert problem.message.startswith(f"{tokens[0]} is refused: ")


@pytest.mark.parametrize(
    ("tokens", "why"),
    [
        (["--config", "/etc/vllm.yaml"], "file"),
        (["--tool-server", "demo"], "other hosts"),
        (["--otlp-traces-endpoint", "http://collector:4317"], "other hosts"),
        (["--allowed-media-domains", "example.com"], "other hosts"),
        (["--kv-transfer-config", "{}"], "other hosts"),
        (["--kv-events-config", "{}"], "other hosts"),
        (["--ec-transfer-config", "{}"], "other hosts"),
        (["--weight-transfer-config", "{}"], "other hosts"),
        (["--allowed-local-media-path", "/data"], "read files"),
        (["--download-dir", "/tmp/w"], "never downloaded"),
        (["--hf-token"], "credential"),
        (["--hf-token", "hf_abc"], "credential"),
        (["--hf-overrides", '{"rope_scaling": {}}'], "spec.model.digest"),
        (["--revision", "main"], "Hub"),
        (["--code-revision", "main"], "Hub"),
        (["--tokenizer-revision", "main"], "Hub"),
        (["--tokenizer", "/elsewhere"], "outside the verified model"),
        (["--hf-config-path", "/elsewhere"], "outside the verified model"),
        (["--chat-template", "/t.jinja"], "outside the verified model"),
        (["--lora-modules", "a=/l"], "outside the verified model"),
        (["--spec-model", "org/draft"], "outside the verified model"),
        (["--middleware", "pkg.mod:mw"], "Python code"),
        (["--tool-parser-plugin", "/p.py"], "Python code"),
        (["--reasoning-parser-plugin", "/p.py"], "Python code"),
        (["--logits-processors", "pkg.Cls"], "Python code"),
        (["--worker-cls", "pkg.Worker"], "Python code"),
        (["--scheduler-cls", "pkg.Sched"], "Python code"),
        (["--model-loader-extra-config", "{}"], "remote storage"),
        (["--logging-config", "{}"], "--log-level"),
        (["--log-config-file", "/l.json"], "--log-level"),
        (["--profiler-config", "{}"], "writes"),
        (["--enable-log-requests"], "spec.audit.requests"),
        (["--enable-log-outputs"], "spec.audit.requests"),
        (["--trust-request-chat-template"], "API client"),
        (["--trust-remote-code"], "ModelPolicy"),
    ],
)
def test_sovereignty_breaking_flags_are_refused(tokens: list[str], why: str) -> None:
    problem = only_problem(*tokens)
    assert problem.index == 0
    assert tokens[0] in problem.message
    assert why in problem.message


def test_trust_remote_code_follows_the_policy() -> None:
    assert problems_of("--trust-remote-code", allow_trust_remote_code=True) == []
    assert problems_of("--no-trust-remote-code", allow_trust_remote_code=False) == []


@pytest.mark.parametrize(
    ("tokens", "why"),
    [
        (["--load-format", "dummy"], "random weights"),
        (["--load-format", "runai_streamer"], "remote storage"),
        (["--load-format", "tensorizer"], "remote storage"),
        (["--generation-config", "/etc/gen"], "outside the verified model"),
    ],
)
def test_values_that_download_or_leave_the_model_are_refused(tokens: list[str], why: str) -> None:
    problem = only_problem(*tokens)
    assert problem.index == 1
    assert why in problem.message


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["-tp", "2"], "-tp (short for --tensor-parallel-size) is refused"),
        (["-asc", "2"], "write its long name --api-server-count"),
        (["-O3"], "exact long name"),
        (["-cc.mode=3"], "write its long name --compilation-config"),
        (["-q", "awq"], "spec.engine.quantization"),
        (["-ep"], "spec.engine.expertParallel"),
    ],
)
def test_short_options_are_refused(tokens: list[str], message: str) -> None:
    assert message in only_problem(*tokens).message


def test_unknown_flags_get_the_closest_name() -> None:
    assert "did you mean --max-num-seqs?" in only_problem("--max-num-seq", "4").message
    refused_neighbour = only_problem("--max-model-length", "4096").message
    assert "--max-model-len, is refused too" in refused_neighbour
    assert "spec.engine.maxModelLen" in refused_neighbour
    assert "vllm serve --help=all" in only_problem("--zzzz").message


def test_boolean_flags_do_not_take_values() -> None:
    swallowed = only_problem("--enable-prefix-caching", "true")
    assert swallowed.index == 1
    assert "--no-enable-prefix-caching to switch it off" in swallowed.message
    inline = only_problem("--enable-prefix-caching=false")
    assert inline.index == 0
    assert "takes no value" in inline.message
    assert "alone" in only_problem("--enable-lora", "--aggregate-engine-logging=1").message


@pytest.mark.parametrize(
    "tokens",
    [["--max-num-seqs"], ["--max-num-seqs", "--enforce-eager"], ["--cudagraph-capture-sizes"]],
)
def test_value_flags_need_a_value(tokens: list[str]) -> None:
    problem = only_problem(*tokens)
    assert problem.index == 0
    assert "needs a value" in problem.message


def test_value_flags_need_a_value_message() -> None:
    assert "needs a value: --max-num-seqs VALUE or --max-num-seqs=VALUE" in (
        only_problem("--max-num-seqs").message
    )


def test_stray_values_are_refused() -> None:
    problem = only_problem("--max-num-seqs", "8", "16")
    assert problem.index == 2
    assert "not a flag" in problem.message
    assert only_problem("model-b").index == 0


def test_choices_are_enforced() -> None:
    problem = only_problem("--kv-cache-dtype", "fp9")
    assert problem.index == 1
    assert "fp8" in problem.message
    assert only_problem("--collect-detailed-traces", "model", "everything").index == 2


def test_flags_may_appear_once() -> None:
    problem = only_problem("--max-num-seqs", "8", "--max-num-seqs=9")
    assert problem.index == 2
    assert "first at extraArgs[0]" in problem.message
    # A switch and its negation together contradict each other.
    assert only_problem("--enforce-eager", "--no-enforce-eager").index == 1
    assert (
        only_problem("--compilation-config.mode", "1", "--compilation-config.mode", "3").index == 2
    )
    assert (
        problems_of("--compilation-config.mode", "1", "--compilation-config.cudagraph_mode=FULL")
        == []
    )


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["--compilation-config.cache_dir", "/x"], "key 'cache_dir'"),
        (["--compilation-config.backend", "pkg.mod"], "key 'backend'"),
        (["--speculative-config.model", "org/draft"], "key 'model'"),
        (["--compilation-config", '{"mode": 3, "debug_dump_path": "/x"}'], "debug_dump_path"),
        (["--compilation-config", "3"], "JSON object"),
        (["--override-generation-config.temperature", "0.1"], "pass the whole object"),
        (["--max-num-seqs.x", "1"], "takes no JSON keys"),
        (["--kv-transfer-config.kv_connector", "NixlConnector"], "other hosts"),
        (["--compilation-config.mode"], "needs a value"),
    ],
)
def test_json_keys_need_an_allowlist(tokens: list[str], message: str) -> None:
    assert message in only_problem(*tokens).message


def test_a_refused_flag_reports_once_even_with_values() -> None:
    problem = only_problem("--lora-modules", "a=/x", "b=/y", "--max-num-seqs", "4")
    assert problem.index == 0


@pytest.mark.parametrize(
    "token",
    [
        "--max;num",
        "--max-num-seqs;",
        "--Max-Num-Seqs",
        "--max num",
        "--max-num-seqs$(x)",
        "--'x'",
        "---x",
    ],
)
def test_flag_names_with_shell_syntax_or_odd_characters_are_refused(token: str) -> None:
    problem = only_problem(token)
    assert "is not a flag name" in problem.message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("8; rm -rf /", "';'"),
        ("8 && reboot", "'&'"),
        ("8 | tee /x", "'|'"),
        ("8 > /etc/x", "'>'"),
    ],
)
def test_shell_operators_in_plain_values_are_refused(value: str, shown: str) -> None:
    # Values are argv items and never reach a shell; but no plain vLLM value contains these,
    # so they show the author expected a shell, and vLLM would get the text literally.
    problem = only_problem("--max-num-seqs", value)
    assert problem.index == 1
    assert shown in problem.message
    assert "never run by a shell" in problem.message


@pytest.mark.parametrize("value", ["$(id)", "${HOME}", "`id`", '{"stop": ["$(x)"]}'])
def test_substitutions_are_refused_in_every_value(value: str) -> None:
    flag = "--override-generation-config" if value.startswith("{") else "--max-num-seqs"
    problem = only_problem(flag, value)
    assert "nothing would be substituted" in problem.message


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b"])
def test_line_breaks_and_nul_are_refused(value: str) -> None:
    assert "line break or NUL" in only_problem("--response-role", value).message
    assert "line break or NUL" in only_problem(f"--response-role={value}").message


def test_token_bounds() -> None:
    long_value = "x" * (MAX_TOKEN_LENGTH + 1)
    assert "longer than" in only_problem("--response-role", long_value).message
    assert problems_of("--response-role", "x" * MAX_TOKEN_LENGTH) == []
    too_many = [f"--{name}" for name in _accepted_switches()[: MAX_EXTRA_ARGS + 1]]
    problems = validate_extra_args(too_many, allow_trust_remote_code=False)
    assert [p.index for p in problems] == [MAX_EXTRA_ARGS]
    assert f"at most {MAX_EXTRA_ARGS}" in problems[0].message


def test_double_dash_and_dash_values() -> None:
    assert "end vLLM's options" in only_problem("--").message


def _accepted_switches() -> list[str]:
    """Boolean flags the policy accepts, enough to build long valid token lists."""
    return sorted(
        name
        for name, flag in flag_table().flags.items()
        if not flag.takes_value and name not in DENIED
    )


def test_every_denied_flag_is_refused_by_every_spelling() -> None:
    table = flag_table()
    for name, denial in DENIED.items():
        flag = table.flags[name]
        if name == "trust-remote-code":
            continue
        spellings = [flag.option, *(f"--{alias}" for alias in flag.long_aliases)]
        if flag.negatable and not denial.negation_allowed:
            spellings.append(f"--no-{name}")
        for spelling in spellings:
            tokens = [spelling, "1"] if flag.takes_value else [spelling]
            problem = only_problem(*tokens)
            assert "is refused" in problem.message, spelling
        for short in flag.short_aliases:
            assert "is refused" in only_problem(short).message


# Values that are valid for the flags below whatever their type.
_SAFE_VALUE_FLAGS = ("max-num-seqs", "max-num-batched-tokens", "block-size", "seed", "max-logprobs")
_safe_token_groups = st.one_of(
    st.sampled_from(_accepted_switches()).map(lambda name: [f"--{name}"]),
    st.tuples(st.sampled_from(_SAFE_VALUE_FLAGS), st.integers(-5, 100_000)).map(
        lambda pair: [f"--{pair[0]}", str(pair[1])]
    ),
    st.tuples(st.sampled_from(_SAFE_VALUE_FLAGS), st.integers(0, 100_000)).map(
        lambda pair: [f"--{pair[0]}={pair[1]}"]
    ),
    st.sampled_from(flag_table().flags["kv-cache-dtype"].choices or ()).map(
        lambda choice: ["--kv-cache-dtype", choice]
    ),
)


@st.composite
def accepted_token_lists(draw: st.DrawFn) -> list[str]:
    groups = draw(st.lists(_safe_token_groups, max_size=12))
    tokens: list[str] = []
    used: set[str] = set()
    for group in groups:
        name = group[0].split("=")[0]
        if name not in used:
            used.add(name)
            tokens += group
    return tokens


@given(accepted_token_lists())
def test_generated_ordinary_flags_are_accepted(tokens: list[str]) -> None:
    assert validate_extra_args(tokens, allow_trust_remote_code=False) == []


@given(st.lists(st.text(max_size=40), max_size=20), st.booleans())
def test_validation_never_crashes_and_points_at_real_tokens(
    tokens: list[str], allow_trust_remote_code: bool
) -> None:
    problems = validate_extra_args(tokens, allow_trust_remote_code=allow_trust_remote_code)
    for problem in problems:
        assert 0 <= problem.index < len(tokens)
        assert problem.token == tokens[problem.index]
        assert problem.message
    assert problems == validate_extra_args(tokens, allow_trust_remote_code=allow_trust_remote_code)


@given(
    st.lists(
        st.sampled_from(["--", "-", "--x", "-tp", "=", "--max-num-seqs", "--enforce-eager", "8"]),
        max_size=10,
    )
)
def test_validation_handles_odd_token_mixes(tokens: list[str]) -> None:
    for problem in validate_extra_args(tokens, allow_trust_remote_code=False):
        assert problem.token == tokens[problem.index]
