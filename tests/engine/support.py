"""Helpers for tests that start the data plane's real processes (see conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

WORKER = Path(sys.executable).parent / "sovereign-worker"
BUCKET = "models"

ENGINE_STARTS: list[tuple[str, float | None]] = []
"""(what, seconds until it served) for each engine process the tier started, in order."""


def record_start(what: str, seconds: float | None = None) -> None:
    """Count an engine start: the tier's cost is mostly starts, so conftest lists them."""
    ENGINE_STARTS.append((what, seconds))
    print(f"{what} started" + ("" if seconds is None else f", serving after {seconds:.1f} s"))


def require_module(module: str, what: str, install: str) -> None:
    """Skip when `module` is missing; fail instead under CI, where the whole tier must run."""
    if importlib.util.find_spec(module) is None:
        message = f"{what} is not installed: {install}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any], *, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listened on port {port} within {seconds} s:\n{tail(log)}")


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen[Any], *, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL the process group this fixture started (start_new_session)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=10)


def worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `sovereign-worker ARGS` the way a pod does: a separate process, argv only."""
    return subprocess.run(
        [str(WORKER), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=300,
        check=False,
    )


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    root: Path
    """The gateway's backing folder: ROOT/BUCKET/KEY is the object's bytes."""

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The environment the renderer gives the fetch container, for this server."""
        return {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def upload_folder(self, folder: Path, prefix: str, *, part_bytes: int = 5 << 20) -> None:
        """Upload every file; files over `part_bytes` go up as multipart uploads."""
        config = TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes)
        client = self.client()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                client.upload_file(str(path), BUCKET, key, Config=config)


@dataclass(frozen=True)
class TinyModel:
    path: Path
    digest: str
