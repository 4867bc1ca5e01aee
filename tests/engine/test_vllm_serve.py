"""The pod's two commands for real: `fetch` a tiny Llama, then `serve` it with vLLM's CPU build.

One vLLM server is shared by the module (start-up takes about a minute on two cores); the
SIGTERM test stops it, so it comes last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovereign_worker.engine_args import EngineLaunch, build_vllm_flags
from sovereign_worker.manifest import MANIFEST_NAME
from sovereign_worker.sovereignty import sovereignty_env
from tests.engine.support import (
    BUCKET,
    S3Server,
    TinyModel,
    free_port,
    stop,
    tail,
    worker,
)
from tests.engine.tiny_models import MAX_MODEL_LEN

pytestmark = pytest.mark.engine

SERVED_NAME = "tiny-llama"
GRACE_SECONDS = 30
STARTUP_SECONDS = 600
EXIT_MODEL_REFUSED = 3
WEIGHTS = "model.safetensors"
# With a 3-token prompt this fills the context: on two cores the stream lasts over a second,
# so it is still running when the SIGTERM test signals the server.
STREAM_TOKENS = MAX_MODEL_LEN - 32


def engine_flags(port: int) -> list[str]:
    """The flags exactly as the renderer writes them into the engine container's args."""
    launch = EngineLaunch(
        served_name=SERVED_NAME,
        tensor_parallel_size=1,
        port=port,
        max_model_len=MAX_MODEL_LEN,
        dtype="bfloat16",
        shutdown_timeout_seconds=GRACE_SECONDS,
        extra_args=("--max-num-seqs", "4"),
    )
    return build_vllm_flags(launch)


def pod_env(root: Path) -> dict[str, str]:
    """The engine container's environment: the sovereignty variables, with the writable
    emptyDirs they point at recreated under `root`, and no store credentials."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    for name, value in sovereignty_env().items():
        if value.startswith("/"):
            folder = root / value.lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            env[name] = str(folder)
        else:
            env[name] = value
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; the CPU backend's KV cache, sized for CI
    return env


def fetch(
    source: str, digest: str, dest: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return worker("fetch", "--source", source, "--digest", digest, "--dest", str(dest), env=env)


@dataclass(frozen=True)
class Fetched:
    via_file: Path
    via_s3: Path


@pytest.fixture(scope="module")
def fetched(
    tiny_llama: TinyModel, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Fetched:
    root = tmp_path_factory.mktemp("caches")
    via_file = root / "file" / "model"
    result = fetch(f"file://{tiny_llama.path}", tiny_llama.digest, via_file)
    assert result.returncode == 0, result.stderr

    s3_server.upload_folder(tiny_llama.path, "tiny-llama")
    via_s3 = root / "s3" / "model"
    result = fetch(f"s3://{BUCKET}/tiny-llama", tiny_llama.digest, via_s3, env=s3_server.env())
    assert result.returncode == 0, result.stderr
    return Fetched(via_file, via_s3)


@dataclass(frozen=True)
class Engine:
    process: subprocess.Popen[bytes]
    port: int
    model_dir: Path
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=30) as response:  # noqa: S310
            return bytes(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - an http:// URL built above
            self.url(path),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return urllib.request.urlopen(request, timeout=120)  # noqa: S310

    def running_requests(self) -> float:
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            if family.name == "vllm:num_requests_running":
                return sum(sample.value for sample in family.samples)
        raise AssertionError("/metrics has no vllm:num_requests_running")


@pytest.fixture(scope="module")
def engine(fetched: Fetched, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("engine-pod")
    log = root / "engine.log"
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "sovereign-worker"),
        "serve",
        "--model-dir",
        str(fetched.via_s3),
        "--",
        *engine_flags(port),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, env=pod_env(root), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Engine(process, port, fetched.via_s3, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the engine exited with {process.returncode}:\n{tail(log)}")
            try:
                server.get("/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the engine was not healthy within {STARTUP_SECONDS} s:\n{tail(log)}"
                    )
                time.sleep(1)
        yield server
    finally:
        stop(process, grace=GRACE_SECONDS + 30)


def completion(server: Engine, max_tokens: int) -> dict[str, Any]:
    body = {
        "model": SERVED_NAME,
        "prompt": "the quick brown",
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    with server.post("/v1/completions", body) as response:
        return dict(json.load(response))


def test_file_and_s3_sources_give_the_same_verified_bytes(
    fetched: Fetched, tiny_llama: TinyModel
) -> None:
    for cache in (fetched.via_file, fetched.via_s3):
        assert (cache / MANIFEST_NAME).read_bytes() == (
            tiny_llama.path / MANIFEST_NAME
        ).read_bytes()
        assert (cache / WEIGHTS).read_bytes() == (tiny_llama.path / WEIGHTS).read_bytes()


def test_serve_execs_vllm_offline(engine: Engine) -> None:
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


def test_models_lists_the_served_name_at_the_verified_folder(engine: Engine) -> None:
    models = json.loads(engine.get("/v1/models"))
    assert [(m["id"], m["root"]) for m in models["data"]] == [(SERVED_NAME, str(engine.model_dir))]


def test_completion(engine: Engine) -> None:
    result = completion(engine, max_tokens=8)
    assert result["model"] == SERVED_NAME
    # A random model's text is often "" (partial UTF-8 byte tokens): count tokens instead.
    assert result["usage"]["completion_tokens"] == 8
    assert result["choices"][0]["finish_reason"] == "length"


def test_chat_completion(engine: Engine) -> None:
    # Llama's chat check lives here, on this module's server, rather than in
    # test_families.py, which would start a second Llama engine for it.
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "the lazy dog"}],
        "max_tokens": 8,
        "temperature": 0,
        "ignore_eos": True,
    }
    with engine.post("/v1/chat/completions", body) as response:
        result = json.load(response)
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert result["usage"]["completion_tokens"] == 8


def test_metrics_count_a_running_request(engine: Engine) -> None:
    assert engine.running_requests() == 0
    first_token = threading.Event()
    done = threading.Event()

    def stream() -> None:
        try:
            with engine.post("/v1/completions", _stream_body(STREAM_TOKENS)) as response:
                for line in response:
                    if line.startswith(b"data: "):
                        first_token.set()
        finally:
            first_token.set()
            done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert first_token.wait(60)
    seen: list[float] = []
    while not done.is_set() and len(seen) < 50:
        seen.append(engine.running_requests())
    thread.join(120)
    assert max(seen) == 1, seen


def _stream_body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": SERVED_NAME,
        "prompt": "the quick brown",
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def corrupted_copy(model: TinyModel, folder: Path) -> Path:
    """The model with one byte of its weights flipped, and its original manifest."""
    shutil.copytree(model.path, folder)
    weights = folder / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(data)
    return folder


def test_a_flipped_weight_byte_refuses_to_start_and_names_the_file(
    tiny_llama: TinyModel, s3_server: S3Server, tmp_path: Path
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
        served = worker("serve", "--model-dir", str(dest), "--", *engine_flags(free_port()))
        assert served.returncode == 1
        assert "holds no config.json" in served.stderr


def test_sigterm_drains_a_streaming_completion_then_exits_0(engine: Engine) -> None:
    chunks_after_signal = 0
    signalled_at = None
    usage = None
    with engine.post("/v1/completions", _stream_body(STREAM_TOKENS)) as response:
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
