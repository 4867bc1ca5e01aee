"""The pod's two commands for real: `fetch` a tiny Llama, then `serve` it with vLLM's CPU build.

The pod is rendered from a ModelDeployment (tests/engine/pods.py); its init container fetches
the model from the S3 gateway and its engine container serves it. The engine is the session's
`llama_engine` (start-up takes about a minute on two cores; test_native_group.py reads its
reference tokens from it too); the SIGTERM test stops it, so it comes last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sovereign_worker.manifest import MANIFEST_NAME
from tests.engine.pods import (
    STREAM_TOKENS,
    EngineProcess,
    FetchedPod,
    SharedEngine,
    assert_a_stream_runs_as_one_request,
)
from tests.engine.support import BUCKET, S3Server, TinyModel, free_port, tail, worker

pytestmark = pytest.mark.engine

SERVED_NAME = "tiny-llama"
# The rendered default (--shutdown-timeout); test_sigterm... checks that it is the one rendered.
GRACE_SECONDS = 30
EXIT_MODEL_REFUSED = 3
WEIGHTS = "model.safetensors"


def fetch(
    source: str, digest: str, dest: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return worker("fetch", "--source", source, "--digest", digest, "--dest", str(dest), env=env)


@pytest.fixture(scope="module")
def engine(llama_engine: SharedEngine) -> EngineProcess:
    return llama_engine.get()


def completion(server: EngineProcess, max_tokens: int) -> dict[str, Any]:
    body = {
        "model": SERVED_NAME,
        "prompt": "the quick brown",
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    return server.post_json("/v1/completions", body)


def test_file_and_s3_sources_give_the_same_verified_bytes(
    llama_dir: Path, llama_pod: FetchedPod, tiny_llama: TinyModel
) -> None:
    for cache in (llama_dir, llama_pod.model_dir):
        assert (cache / MANIFEST_NAME).read_bytes() == (
            tiny_llama.path / MANIFEST_NAME
        ).read_bytes()
        assert (cache / WEIGHTS).read_bytes() == (tiny_llama.path / WEIGHTS).read_bytes()


def test_serve_execs_vllm_offline(engine: EngineProcess) -> None:
    # exec, not a supervisor: the process we started is vLLM itself, so SIGTERM reaches it.
    cmdline = Path(f"/proc/{engine.process.pid}/cmdline").read_bytes().split(b"\0")
    assert [b"vllm", b"serve", str(engine.model_dir).encode()] == [
        Path(cmdline[1].decode()).name.encode(),
        *cmdline[2:4],
    ]
    environ = Path(f"/proc/{engine.process.pid}/environ").read_bytes().split(b"\0")
    assert {
        b"HF_HUB_OFFLINE=1",
        b"TRANSFORMERS_OFFLINE=1",
        b"VLLM_NO_USAGE_STATS=1",
        b"DO_NOT_TRACK=1",
    } <= set(environ)


def test_models_lists_the_served_name_at_the_verified_folder(engine: EngineProcess) -> None:
    models = json.loads(engine.get("/v1/models"))
    assert [(m["id"], m["root"]) for m in models["data"]] == [(SERVED_NAME, str(engine.model_dir))]


def test_completion(engine: EngineProcess) -> None:
    result = completion(engine, max_tokens=8)
    assert result["model"] == SERVED_NAME
    # A random model's text is often "" (partial UTF-8 byte tokens): count tokens instead.
    assert result["usage"]["completion_tokens"] == 8
    assert result["choices"][0]["finish_reason"] == "length"


def test_chat_completion(engine: EngineProcess) -> None:
    # Llama's chat check lives here, on this module's server, rather than in
    # test_families.py, which would start a second Llama engine for it.
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "the lazy dog"}],
        "max_tokens": 8,
        "temperature": 0,
        "ignore_eos": True,
    }
    result = engine.post_json("/v1/chat/completions", body)
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert result["usage"]["completion_tokens"] == 8


def test_metrics_count_a_running_request(engine: EngineProcess) -> None:
    assert_a_stream_runs_as_one_request(engine)


def corrupted_copy(model: TinyModel, folder: Path) -> Path:
    """The model with one byte of its weights flipped, and its original manifest."""
    shutil.copytree(model.path, folder)
    weights = folder / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(data)
    return folder


def test_a_flipped_weight_byte_refuses_to_start_and_names_the_file(
    tiny_llama: TinyModel, s3_server: S3Server, llama_pod: FetchedPod, tmp_path: Path
) -> None:
    bad = corrupted_copy(tiny_llama, tmp_path / "bad")
    s3_server.upload_folder(bad, "tiny-llama-bad")
    sources = {
        f"file://{bad}": dict(os.environ),
        f"s3://{BUCKET}/tiny-llama-bad": s3_server.env(),
    }
    for index, (source, env) in enumerate(sources.items()):
        dest = tmp_path / f"cache-{index}" / "model"
        fetched = fetch(source, tiny_llama.digest, dest, env=env)
        assert fetched.returncode == EXIT_MODEL_REFUSED, fetched.stderr
        reason = fetched.stderr.strip().splitlines()
        assert any(line.strip().startswith(f"- {WEIGHTS}: sha256") for line in reason), (
            fetched.stderr
        )
        assert not dest.exists()
        # The init container failed, so Kubernetes never starts the engine; and should anyone
        # run it on that folder anyway, serve refuses before vLLM starts.
        served = worker(*llama_pod.commands.serve_argv(dest, free_port())[1:])
        assert served.returncode == 1
        assert "holds no config.json" in served.stderr


def test_sigterm_drains_a_streaming_completion_then_exits_0(
    engine: EngineProcess, llama_pod: FetchedPod
) -> None:
    serve_args = llama_pod.commands.serve_args
    assert serve_args[serve_args.index("--shutdown-timeout") + 1] == str(GRACE_SECONDS)
    chunks_after_signal = 0
    signalled_at = None
    usage = None
    body = {
        "model": SERVED_NAME,
        "prompt": "the quick brown",
        # Fills the context: on two cores the stream lasts over a second, so it is still
        # running when the server is signalled.
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with engine.post("/v1/completions", body) as response:
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[len(b"data: ") :])
            usage = chunk.get("usage") or usage
            if signalled_at is None and chunk["choices"]:
                os.kill(engine.process.pid, signal.SIGTERM)
                signalled_at = time.monotonic()
            elif chunk["choices"]:
                chunks_after_signal += 1
    assert signalled_at is not None
    assert chunks_after_signal > 0, "the stream ended before the signal: nothing was drained"
    assert usage is not None
    assert usage["completion_tokens"] == STREAM_TOKENS
    assert engine.process.wait(timeout=GRACE_SECONDS + 30) == 0, tail(engine.log)
