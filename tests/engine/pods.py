"""Run an engine pod's two containers as local processes, exactly as rendered.

`PodCommands.of(plan)` renders the plan's children with the operator's own renderer and
takes the fetch init container's args and the engine container's args and environment from
the Deployment. Only what must differ on a test machine is rewritten: the cache folder
(`--dest`, `--model-dir`), the port, and environment paths (the pod's emptyDirs are
recreated under a temporary folder). Everything else, every flag included, is the pod's.

`SharedEngine` keeps one engine for every test of a session that serves the same model
with the same settings; `StartAhead` starts a module's engines two at a time;
`assert_a_stream_runs_as_one_request` is the running-gauge check every vLLM engine gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.autoscaling.exposition import parse_engine_load
from sovereign_operator.planning import ServingPlan
from sovereign_operator.render import RenderOptions, render_children
from tests.engine.support import WORKER, free_port, record_start, stop, tail, worker
from tests.engine.tiny_models import MAX_MODEL_LEN

STARTUP_SECONDS = 600
# With a 3-token prompt this fills the context: on two cores the stream lasts over a second.
STREAM_TOKENS = MAX_MODEL_LEN - 32


# Engine flags CI engines add through spec.engine.extraArgs, as a user could: few sequences
# for a 2-core machine, and (where a test allows) eager mode. On CPU vLLM otherwise compiles
# the model with torch inductor at start, a C++ build of a minute or more per engine here,
# which tests of our pods, fetch and wiring do not need; vLLM's own CPU CI skips it too.
CI_ENGINE_ARGS = ("--max-num-seqs", "4")
EAGER = ("--enforce-eager",)


def tiny_spec(
    served_name: str,
    source: str,
    digest: str,
    *,
    task: str = "text-generation",
    max_model_len: int = MAX_MODEL_LEN,
    s3_endpoint: str | None = None,
    eager: bool = True,
    **engine: Any,
) -> ModelDeploymentSpec:
    """The ModelDeployment a user would write for a tiny vLLM model, sized for CI.

    `eager=False` keeps vLLM's default compiled mode: for an engine whose tokens are
    compared with a pipeline-parallel group's, which must run compiled (vLLM 0.32's CPU
    pipeline parallel fails in eager mode: `assert self.intermediate_tensors is not None`).
    """
    model: dict[str, Any] = {
        "source": source,
        "digest": digest,
        "servedName": served_name,
        "task": task,
    }
    spec: dict[str, Any] = {
        "model": model,
        "engine": {
            "maxModelLen": max_model_len,
            "dtype": "bfloat16",
            "extraArgs": [*CI_ENGINE_ARGS, *(EAGER if eager else ())],
            # The CPU backend's KV cache in GiB, sized for CI; allowlisted for users too.
            "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}],
            **engine,
        },
        "resources": {"gpus": 1},
    }
    if s3_endpoint is not None:
        model["s3"] = {"endpoint": s3_endpoint}
        # Planning refuses an s3:// source that the NetworkPolicy would cut off.
        spec["network"] = {"modelStoreCidrs": ["127.0.0.1/32"]}
    return ModelDeploymentSpec.model_validate(spec)


def with_value(args: Sequence[str], flag: str, value: str) -> list[str]:
    """`args` with the value after `flag` replaced; the flag must be there already."""
    rewritten = list(args)
    rewritten[rewritten.index(flag) + 1] = value
    return rewritten


@dataclass(frozen=True)
class PodCommands:
    fetch_args: list[str]
    serve_args: list[str]
    env: dict[str, str]
    """The engine container's environment as rendered (values, not valueFrom)."""

    @classmethod
    def of(cls, plan: ServingPlan) -> PodCommands:
        deployment = next(
            child
            for child in render_children(plan, RenderOptions())
            if child["kind"] == "Deployment"
        )
        pod = deployment["spec"]["template"]["spec"]
        (fetch,) = pod["initContainers"]
        (engine,) = pod["containers"]
        return cls(
            fetch_args=list(fetch["args"]),
            serve_args=list(engine["args"]),
            env={item["name"]: item["value"] for item in engine["env"]},
        )

    def fetch(self, dest: Path, env: dict[str, str] | None = None) -> Path:
        """Run the init container's command into `dest`; returns the verified folder.
        `env`: the store's endpoint and credentials, for an s3:// source."""
        result = worker(*with_value(self.fetch_args, "--dest", str(dest)), env=env)
        assert result.returncode == 0, result.stderr
        return Path(result.stdout.strip())

    def local_env(self, root: Path) -> dict[str, str]:
        """The rendered environment, with each absolute path recreated under `root`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_"))}
        for name, value in self.env.items():
            if value.startswith("/"):
                folder = root / value.lstrip("/")
                folder.mkdir(parents=True, exist_ok=True)
                env[name] = str(folder)
            else:
                env[name] = value
        # The engine image has vllm on PATH; here it is this virtual environment's.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def serve_argv(
        self, model_dir: Path, port: int, overrides: Mapping[str, str] | None = None
    ) -> list[str]:
        """The engine container's command with the local folder, port and flag overrides."""
        args = with_value(self.serve_args, "--model-dir", str(model_dir))
        args = with_value(args, "--port", str(port))
        for flag, value in (overrides or {}).items():
            args = with_value(args, flag, value)
        return [str(WORKER), *args]


@dataclass(frozen=True)
class FetchedPod:
    commands: PodCommands
    model_dir: Path
    """Where the init container's command left the verified model."""


@dataclass(frozen=True)
class EngineProcess:
    process: subprocess.Popen[bytes]
    port: int
    served_name: str
    model_dir: Path
    log: Path

    @classmethod
    def start(
        cls,
        commands: PodCommands,
        model_dir: Path,
        root: Path,
        overrides: Mapping[str, str] | None = None,
    ) -> EngineProcess:
        """Start the engine container's command and wait until /health answers 200."""
        port = free_port()
        argv = commands.serve_argv(model_dir, port, overrides)
        served_name = argv[argv.index("--served-model-name") + 1]
        log = root / "engine.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv,
                env=commands.local_env(root),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        engine = cls(process, port, served_name, model_dir, log)
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                pytest.fail(f"the engine exited with {process.returncode}:\n{tail(log)}")
            try:
                engine.get("/health")
                break
            except OSError:
                if time.monotonic() - started > STARTUP_SECONDS:
                    stop(process)
                    pytest.fail(f"not healthy within {STARTUP_SECONDS} s:\n{tail(log)}")
                time.sleep(1)
        record_start(served_name, time.monotonic() - started)
        return engine

    def stop(self, grace: float = 60) -> None:
        stop(self.process, grace=grace)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=30) as response:  # noqa: S310
            return bytes(response.read())

    def post(self, path: str, body: dict[str, Any], timeout: float = 120) -> Any:
        request = urllib.request.Request(  # noqa: S310 - an http:// URL built above
            self.url(path),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.post(path, body) as response:
            return dict(json.load(response))

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def load(self) -> tuple[float, float]:
        """(running, waiting) for this model, read as the autoscaler reads them."""
        load = parse_engine_load(self.metrics(), model_name=self.served_name)
        return load.running, load.waiting

    def counter(self, name: str) -> float:
        """The sum of a counter family's `_total` samples (0 when it has none yet)."""
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.metrics())
            if family.name == name
            for sample in family.samples
            if sample.name == f"{name}_total"
        )


class SharedEngine:
    """One engine for every test of the session that serves this model with these settings:
    a vLLM start costs 50-100 s on two cores. A test may stop it (the SIGTERM tests do, last
    in their module); the next test that asks then gets a fresh one, whatever the order."""

    def __init__(self, start: Callable[[], EngineProcess]) -> None:
        self._start = start
        self._engine: EngineProcess | None = None

    def get(self) -> EngineProcess:
        if self._engine is None or self._engine.process.poll() is not None:
            self._engine = self._start()
        return self._engine

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.stop()


class StartAhead:
    """A module's engines, started two at a time.

    A vLLM start is mostly single-threaded (Python imports in three processes one after the
    other, then a one-thread warm-up), so on two cores two starts side by side take little
    longer than one. The tests of a pair run once both serve, never beside a start (the
    running-gauge check races a busy CPU), and there are never more than two engines (DESIGN:
    at most two at once on two cores): the caller stops each engine after its tests.
    `starts` is in the order the tests take them; an engine no test took is stopped by `close`.
    """

    def __init__(self, starts: Mapping[str, Callable[[], EngineProcess]]) -> None:
        self._order = list(starts)
        self._waiting = dict(starts)
        self._started: dict[str, Future[EngineProcess]] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="engine-start")

    def take(self, name: str) -> EngineProcess:
        """`name`'s engine once it and its partner serve; the caller stops it."""
        if name in self._waiting:
            index = self._order.index(name)
            for partner in self._order[index : index + 2]:
                start = self._waiting.pop(partner, None)
                if start is not None:
                    self._started[partner] = self._pool.submit(start)
        for future in list(self._started.values()):
            future.exception()  # waits; a failed start fails the test that takes it
        engine = self._started[name].result()
        del self._started[name]  # only now: should the wait be interrupted, close() stops it
        return engine

    def close(self) -> None:
        for future in self._started.values():
            future.cancel()
        self._pool.shutdown(wait=True)
        for future in self._started.values():
            if not future.cancelled() and future.exception() is None:
                future.result().stop()


def wait_for_load(engine: EngineProcess, wanted: tuple[float, float], seconds: float = 15) -> bool:
    """Whether the engine reports `wanted` (running, waiting) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if engine.load() == wanted:
            return True
        time.sleep(0.1)
    return False


def assert_a_stream_runs_as_one_request(engine: EngineProcess, attempts: int = 3) -> None:
    """While one long streaming completion runs, the running gauge, read as the autoscaler
    reads it, shows exactly that one request, and the gauges settle back to (0, 0).

    vLLM refreshes its gauges as its engine steps, so earlier requests are waited out rather
    than assumed gone. A tiny model on a busy machine can finish a stream between two
    scrapes, so a miss is retried with a fresh stream: what must hold is that the gauge shows
    the request at all, and never more than it.
    """
    assert wait_for_load(engine, (0, 0)), engine.load()
    seen: list[float] = []
    for _attempt in range(attempts):
        seen = _running_during_a_stream(engine)
        if 1 in seen:
            break
    assert 1 in seen, seen
    assert max(seen) == 1, seen
    assert wait_for_load(engine, (0, 0)), engine.load()


def _running_during_a_stream(engine: EngineProcess) -> list[float]:
    """Scrape the running gauge for as long as one long streaming completion lasts."""
    first_token = threading.Event()
    done = threading.Event()
    body = {
        "model": engine.served_name,
        "prompt": "the quick brown",
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }

    def stream() -> None:
        try:
            with engine.post("/v1/completions", body) as response:
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
    while not done.is_set():
        seen.append(engine.load()[0])
        time.sleep(0.02)
    thread.join(120)
    return seen
