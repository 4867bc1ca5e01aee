"""The diffusers engine for real: a tiny Stable Diffusion, fetched, verified and served.

The pipeline is built offline (~6.5 MB), its digest taken with `sovereign-worker digest`, a
ModelDeployment with `engine.kind: diffusers` planned and rendered, and the pod's fetch and
serve commands run as rendered; only the folder, the port and the limits this test needs
(a queue of 1, 64x64 images by default) are rewritten. One engine is shared by the module; the
SIGTERM test stops it, so it comes last.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.planning import ClusterFacts, plan
from sovereign_worker.manifest import MANIFEST_NAME
from tests.engine.pods import EngineProcess, PodCommands
from tests.engine.support import require_module, tail, worker
from tests.engine.tiny_models import build_stable_diffusion

pytestmark = pytest.mark.engine

SERVED_NAME = "tiny-sd"
MAX_STEPS = 60
# On two busy cores a 64x64 step takes 0.1-0.5 s: this keeps a request running for seconds.
LONG_STEPS = 40
# Well above LONG_STEPS' duration on a busy machine (~35 s seen), so the drain completes.
GRACE_SECONDS = 120
# The test's limits, written over the rendered defaults (the renderer has no spec fields for them).
LIMITS = {
    "--max-concurrency": "1",
    "--max-queue": "1",
    "--max-steps": str(MAX_STEPS),
    "--default-steps": "4",
    "--default-size": "64",
    "--shutdown-timeout": str(GRACE_SECONDS),
}


@pytest.fixture(scope="module")
def diffusers_installed() -> None:
    require_module("diffusers", "diffusers", "run scripts/install_diffusers.sh")


@dataclass(frozen=True)
class Pod:
    commands: PodCommands
    model_dir: Path
    root: Path


@pytest.fixture(scope="module")
def pod(diffusers_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Pod:
    root = tmp_path_factory.mktemp("sd")
    source = build_stable_diffusion(root / "published")
    digest = worker("digest", str(source))
    assert digest.returncode == 0, digest.stderr
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {
                "source": f"file://{source}",
                "digest": digest.stdout.strip(),
                "servedName": SERVED_NAME,
                "task": "text-to-image",
            },
            "engine": {"kind": "diffusers", "dtype": "float32"},
            "resources": {"gpus": 1},
        }
    )
    commands = PodCommands.of(plan(SERVED_NAME, "test", spec, ClusterFacts()))
    assert commands.serve_args[:3] == ["serve", "--engine", "diffusers"]
    return Pod(commands, commands.fetch(root / "cache" / "model"), root)


@pytest.fixture(scope="module")
def engine(pod: Pod) -> Iterator[EngineProcess]:
    started = EngineProcess.start(pod.commands, pod.model_dir, pod.root, LIMITS)
    try:
        yield started
    finally:
        started.stop(grace=GRACE_SECONDS + 30)


def generate(engine: EngineProcess, **body: Any) -> tuple[int, dict[str, Any]]:
    try:
        with engine.post("/v1/images/generations", {"prompt": "a red fox", **body}) as response:
            return response.status, dict(json.load(response))
    except urllib.error.HTTPError as error:
        return error.code, dict(json.load(error))


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the engine never reached the expected state"
        time.sleep(0.05)


class Background:
    """A generation request on a thread; `result` once it finished."""

    def __init__(self, engine: EngineProcess, **body: Any) -> None:
        self.result: tuple[int, dict[str, Any]] | None = None
        self._thread = threading.Thread(target=self._run, args=(engine, body))
        self._thread.start()

    def _run(self, engine: EngineProcess, body: dict[str, Any]) -> None:
        self.result = generate(engine, **body)

    def join(self) -> tuple[int, dict[str, Any]]:
        self._thread.join(300)
        assert self.result is not None
        return self.result


def test_a_folder_changed_after_verification_is_refused_before_loading(
    pod: Pod, tmp_path: Path
) -> None:
    tampered = tmp_path / "model"
    shutil.copytree(pod.model_dir, tampered)
    with (tampered / "unet" / "config.json").open("a") as config:
        config.write(" ")
    unverified = tmp_path / "unverified"
    shutil.copytree(pod.model_dir, unverified)
    (unverified / MANIFEST_NAME).unlink()
    for folder, reason in (
        (tampered, "changed since it was verified"),
        (unverified, "not verified"),
    ):
        argv = pod.commands.serve_argv(folder, 8000)
        result = worker(*argv[1:])
        assert result.returncode == 1
        assert reason in result.stderr


def test_serves_offline_in_the_serve_process_itself(engine: EngineProcess) -> None:
    environ = Path(f"/proc/{engine.process.pid}/environ").read_bytes().split(b"\0")
    assert {b"HF_HUB_OFFLINE=1", b"TRANSFORMERS_OFFLINE=1", b"DO_NOT_TRACK=1"} <= set(environ)
    models = json.loads(engine.get("/v1/models"))
    assert [(m["id"], m["root"]) for m in models["data"]] == [(SERVED_NAME, str(engine.model_dir))]


def test_generates_a_64x64_png(engine: EngineProcess) -> None:
    from PIL import Image  # noqa: PLC0415 - Pillow comes with the engine dependencies

    status, body = generate(engine, size="64x64", num_inference_steps=4, seed=7)
    assert status == 200, body
    (item,) = body["data"]
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGB")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"size": "2048x2048"}, "size"),
        ({"num_inference_steps": MAX_STEPS + 1}, "num_inference_steps"),
    ],
)
def test_limits_are_400s_naming_the_field(
    engine: EngineProcess, body: dict[str, Any], param: str
) -> None:
    status, answer = generate(engine, **body)
    assert status == 400
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, 400)


def test_a_full_queue_is_refused_with_429_while_the_gauges_show_the_load(
    engine: EngineProcess,
) -> None:
    assert engine.load() == (0, 0)
    running = Background(engine, num_inference_steps=LONG_STEPS)
    wait_until(lambda: engine.load() == (1, 0))
    queued = Background(engine)
    wait_until(lambda: engine.load() == (1, 1))
    status, refused = generate(engine)
    assert status == 429, refused
    assert "retry" in refused["error"]["message"]
    assert running.join()[0] == 200
    assert queued.join()[0] == 200
    assert engine.load() == (0, 0)
    assert engine.counter("sovereign_image_requests") >= 3


def test_sigterm_finishes_the_running_request_refuses_new_ones_and_exits_0(
    engine: EngineProcess,
) -> None:
    running = Background(engine, num_inference_steps=LONG_STEPS)
    wait_until(lambda: engine.load()[0] == 1)
    os.kill(engine.process.pid, signal.SIGTERM)
    wait_until(lambda: _health(engine) == 503)
    status, refused = generate(engine)
    assert status == 503, refused
    assert running.result is None, "the request ended before the signal: nothing was drained"
    status, body = running.join()
    assert status == 200, body
    assert len(body["data"]) == 1
    assert engine.process.wait(timeout=GRACE_SECONDS + 30) == 0, tail(engine.log)


def _health(engine: EngineProcess) -> int:
    try:
        engine.get("/health")
    except urllib.error.HTTPError as error:
        return error.code
    return 200
