"""Run an engine pod's two containers as local processes, exactly as rendered.

`PodCommands.of(plan)` renders the plan's children with the operator's own renderer and
takes the fetch init container's args and the engine container's args and environment from
the Deployment. Only what must differ on a test machine is rewritten: the cache folder
(`--dest`, `--model-dir`), the port, and environment paths (the pod's emptyDirs are
recreated under a temporary folder). Everything else, every flag included, is the pod's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.autoscaling.exposition import parse_engine_load
from sovereign_operator.planning import ServingPlan
from sovereign_operator.render import RenderOptions, render_children
from tests.engine.support import WORKER, free_port, stop, tail, worker

STARTUP_SECONDS = 600


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

    def fetch(self, dest: Path) -> Path:
        """Run the init container's command into `dest`; returns the verified folder."""
        result = worker(*with_value(self.fetch_args, "--dest", str(dest)))
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
        print(f"{served_name} healthy after {time.monotonic() - started:.1f} s")
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
