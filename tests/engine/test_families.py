"""Every vLLM model family, served for real on CPU through the pod's own commands.

For Mistral, Mixtral (4 experts, 2 per token), Falcon (new decoder architecture) and
Whisper: build a tiny random model offline, take its digest with `sovereign-worker digest`,
plan a ModelDeployment for it, render the pod, run the init container's `fetch` (file://)
and the engine container's `serve` exactly as rendered (only the folder and port differ), and
call the real endpoints. Llama is served in test_vllm_serve.py and not started again here.

Mixtral is served without expert parallelism: on this CPU build a replica has tensor
parallel size 1, and planning refuses `expertParallel` below 2 (tested here). With tensor
parallel 2 and --enable-expert-parallel, vLLM 0.32's CPU worker crashed at the first forward
pass (exit -11), so that combination needs a GPU machine.

Each engine is shared by its family's tests; they start two at a time (a start takes 50-100 s
on two cores, mostly on one of them; see pods.StartAhead), and their tests run one at a time.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import InvalidSpec
from sovereign_operator.planning import ClusterFacts, ServingPlan, plan
from tests.engine.pods import (
    EngineProcess,
    PodCommands,
    StartAhead,
    assert_a_stream_runs_as_one_request,
    tiny_spec,
)
from tests.engine.support import worker
from tests.engine.tiny_models import (
    MAX_MODEL_LEN,
    build_falcon,
    build_mistral,
    build_mixtral,
    build_whisper,
    sine_wav,
)

pytestmark = pytest.mark.engine

# Whisper's decoder has 448 positions; the text models are built with MAX_MODEL_LEN.
WHISPER_MAX_MODEL_LEN = 448
COMPLETION_TOKENS = 8


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Path], Path]
    task: str = "text-generation"
    max_model_len: int = MAX_MODEL_LEN


TEXT_FAMILIES = [
    Family("mistral", build_mistral),
    Family("mixtral", build_mixtral),
    Family("falcon", build_falcon),
]
WHISPER = Family("whisper", build_whisper, "speech-to-text", WHISPER_MAX_MODEL_LEN)


def family_spec(family: Family, source: Path, digest: str, **engine: Any) -> ModelDeploymentSpec:
    """The ModelDeployment a user would write for this family, pointed at a local folder."""
    return tiny_spec(
        f"tiny-{family.name}",
        f"file://{source}",
        digest,
        task=family.task,
        max_model_len=family.max_model_len,
        **engine,
    )


def family_plan(family: Family, source: Path, digest: str, **engine: Any) -> ServingPlan:
    return plan(
        f"tiny-{family.name}", "test", family_spec(family, source, digest, **engine), ClusterFacts()
    )


@dataclass(frozen=True)
class Built:
    path: Path
    digest: str


def build(family: Family, root: Path) -> Built:
    path = family.build(root / family.name)
    result = worker("digest", str(path))  # as a model publisher would
    assert result.returncode == 0, result.stderr
    return Built(path, result.stdout.strip())


def start_engine(family: Family, built: Built, root: Path) -> EngineProcess:
    commands = PodCommands.of(family_plan(family, built.path, built.digest))
    model_dir = commands.fetch(root / "cache" / "model")
    assert (model_dir / "config.json").is_file()
    return EngineProcess.start(commands, model_dir, root)


# transformers and tokenizers build the models in this process: one at a time.
_BUILDING = threading.Lock()


def start_family(family: Family, root: Path) -> EngineProcess:
    with _BUILDING:
        built = build(family, root)
    return start_engine(family, built, root)


@pytest.fixture(scope="module")
def engines(
    request: pytest.FixtureRequest,
    vllm_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartAhead]:
    """The engines of the families this run's tests use, in the order the tests run."""
    used: list[Family] = []
    for item in request.session.items:
        if item.path != request.path or not isinstance(item, pytest.Function):
            continue
        params = getattr(item, "callspec", None)
        family = params.params.get("text_engine") if params else None
        if family is None and "whisper_engine" in item.fixturenames:
            family = WHISPER
        if family is not None and family not in used:
            used.append(family)
    # The folders are made here: tmp_path_factory is not safe to call from two threads.
    roots = {family.name: tmp_path_factory.mktemp(family.name) for family in used}
    ahead = StartAhead(
        {f.name: functools.partial(start_family, f, roots[f.name]) for f in used},
    )
    try:
        yield ahead
    finally:
        ahead.close()


@pytest.fixture(scope="module", params=TEXT_FAMILIES, ids=lambda family: family.name)
def text_engine(request: pytest.FixtureRequest, engines: StartAhead) -> Iterator[EngineProcess]:
    engine = engines.take(request.param.name)
    try:
        yield engine
    finally:
        engine.stop()


def test_completion(text_engine: EngineProcess) -> None:
    result = text_engine.post_json(
        "/v1/completions",
        {
            "model": text_engine.served_name,
            "prompt": "the quick brown",
            "max_tokens": COMPLETION_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    assert result["model"] == text_engine.served_name
    # Random weights often decode to "" (partial UTF-8 byte tokens): count tokens instead.
    assert result["usage"]["completion_tokens"] == COMPLETION_TOKENS
    assert result["choices"][0]["finish_reason"] == "length"


def test_chat(text_engine: EngineProcess) -> None:
    result = text_engine.post_json(
        "/v1/chat/completions",
        {
            "model": text_engine.served_name,
            "messages": [{"role": "user", "content": "the lazy dog"}],
            "max_tokens": COMPLETION_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert result["usage"]["completion_tokens"] == COMPLETION_TOKENS


def test_models_lists_the_served_name_at_the_verified_folder(text_engine: EngineProcess) -> None:
    models = json.loads(text_engine.get("/v1/models"))
    assert [(m["id"], m["root"]) for m in models["data"]] == [
        (text_engine.served_name, str(text_engine.model_dir))
    ]


def test_metrics_count_a_running_request_as_the_autoscaler_reads_it(
    text_engine: EngineProcess,
) -> None:
    assert_a_stream_runs_as_one_request(text_engine)


def test_mixtral_expert_parallel_is_refused_at_tensor_parallel_1(tmp_path: Path) -> None:
    # What a CPU replica (or any single-GPU one) gets; the engine above serves without it.
    with pytest.raises(InvalidSpec) as caught:
        family_plan(TEXT_FAMILIES[1], tmp_path, "sha256:" + "0" * 64, expertParallel=True)
    assert [p.path for p in caught.value.problems] == ["spec.engine.expertParallel"]
    two_gpus = family_spec(TEXT_FAMILIES[1], tmp_path, "sha256:" + "0" * 64, expertParallel=True)
    two_gpus = two_gpus.model_copy(
        update={"resources": two_gpus.resources.model_copy(update={"gpus": 2})}
    )
    commands = PodCommands.of(plan("tiny-mixtral", "test", two_gpus, ClusterFacts()))
    assert "--enable-expert-parallel" in commands.serve_args


@pytest.fixture(scope="module")
def whisper_engine(engines: StartAhead) -> Iterator[EngineProcess]:
    engine = engines.take(WHISPER.name)
    try:
        yield engine
    finally:
        engine.stop()


def audio_request(
    engine: EngineProcess, endpoint: str, audio: bytes, **fields: str
) -> requests.Response:
    return requests.post(
        engine.url(f"/v1/audio/{endpoint}"),
        files={"file": (f"{uuid.uuid4().hex}.wav", audio, "audio/wav")},
        data={"model": engine.served_name, "max_completion_tokens": "8", **fields},
        timeout=120,
    )


def test_whisper_transcribes_a_wav(whisper_engine: EngineProcess) -> None:
    response = audio_request(whisper_engine, "transcriptions", sine_wav(seconds=1.0), language="en")
    assert response.status_code == 200, response.text
    result = response.json()
    assert isinstance(result["text"], str)  # noise from random weights, maybe ""
    # The upload was decoded: vLLM reports its duration.
    assert result["usage"] == {"type": "duration", "seconds": 1}


def test_whisper_translates_a_wav(whisper_engine: EngineProcess) -> None:
    before = whisper_engine.counter("vllm:request_success")
    response = audio_request(whisper_engine, "translations", sine_wav(seconds=1.0))
    assert response.status_code == 200, response.text
    # vLLM 0.32's translation response carries only the text (no usage).
    assert isinstance(response.json()["text"], str)
    # Without a language, vLLM first runs a language-detection request: two in all.
    assert whisper_engine.counter("vllm:request_success") == before + 2


def test_whisper_refuses_bytes_that_are_not_audio(whisper_engine: EngineProcess) -> None:
    response = audio_request(whisper_engine, "transcriptions", b"RIFF-not-really-a-wav")
    assert response.status_code == 400
    assert "audio" in response.json()["error"]["message"].lower()


def test_whisper_metrics_show_no_request_left_running(whisper_engine: EngineProcess) -> None:
    before = whisper_engine.counter("vllm:request_success")
    response = audio_request(whisper_engine, "transcriptions", sine_wav(), language="en")
    assert response.status_code == 200
    assert whisper_engine.counter("vllm:request_success") == before + 1
    assert whisper_engine.load() == (0, 0)
