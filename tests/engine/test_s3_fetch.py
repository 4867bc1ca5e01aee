"""`sovereign-worker fetch` from a real S3-compatible server (versitygw) on loopback."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign_worker.manifest import MANIFEST_NAME, build_manifest, write_manifest
from tests.engine.support import BUCKET, S3Server, worker

pytestmark = pytest.mark.engine

EXIT_MODEL_REFUSED = 3
BIG_SHARD = "model-00001-of-00002.safetensors"


def make_model(folder: Path) -> str:
    """A model folder with a 40 MiB shard (multipart both ways), small files and a subfolder."""
    folder.mkdir(parents=True)
    (folder / BIG_SHARD).write_bytes(secrets.token_bytes(40 << 20))
    (folder / "model-00002-of-00002.safetensors").write_bytes(secrets.token_bytes(3 << 20))
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer.json").write_text('{"model": {}}')
    manifest = build_manifest(folder)
    write_manifest(manifest, folder / MANIFEST_NAME)
    return manifest.digest


@pytest.fixture
def published(s3_server: S3Server, tmp_path: Path) -> tuple[Path, str, str]:
    """A model uploaded under its own prefix: (local copy, prefix, digest)."""
    folder = tmp_path / "published"
    digest = make_model(folder)
    prefix = f"llama-{secrets.token_hex(4)}"
    s3_server.upload_folder(folder, prefix)
    return folder, prefix, digest


def fetch(server: S3Server, prefix: str, digest: str, dest: Path, **env: str):  # type: ignore[no-untyped-def]
    return worker(
        "fetch",
        "--source",
        f"s3://{BUCKET}/{prefix}",
        "--digest",
        digest,
        "--dest",
        str(dest),
        env={**server.env(), **env},
    )


def assert_no_partial_cache(dest: Path) -> None:
    assert not dest.exists()
    assert not [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")]


def test_upload_is_multipart(s3_server: S3Server, published: tuple[Path, str, str]) -> None:
    _, prefix, _ = published
    head = s3_server.client().head_object(Bucket=BUCKET, Key=f"{prefix}/{BIG_SHARD}")
    # A multipart object's ETag is "<md5 of part md5s>-<number of parts>".
    assert head["ETag"].strip('"').endswith("-8")


def test_fetch_copies_and_verifies_then_reuses(
    s3_server: S3Server, published: tuple[Path, str, str], tmp_path: Path
) -> None:
    folder, prefix, digest = published
    dest = tmp_path / "cache" / "model"

    first = fetch(s3_server, prefix, digest, dest)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(dest)
    for path in folder.rglob("*"):
        if path.is_file():
            assert (dest / path.relative_to(folder)).read_bytes() == path.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["model"]

    second = fetch(s3_server, prefix, digest, dest)
    assert second.returncode == 0, second.stderr
    assert "reusing the cache" in second.stderr
    assert "downloading" not in second.stderr


def test_a_flipped_byte_in_the_store_fails_naming_the_file(
    s3_server: S3Server, published: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, prefix, digest = published
    stored = s3_server.root / BUCKET / prefix / BIG_SHARD
    with stored.open("r+b") as handle:
        handle.seek(12345)
        byte = handle.read(1)
        handle.seek(12345)
        handle.write(bytes([byte[0] ^ 0x01]))
    dest = tmp_path / "cache" / "model"

    result = fetch(s3_server, prefix, digest, dest)

    assert result.returncode == EXIT_MODEL_REFUSED, result.stderr
    last_lines = result.stderr.strip().splitlines()[-3:]
    assert any(BIG_SHARD in line and "sha256" in line for line in last_lines), result.stderr
    assert_no_partial_cache(dest)


def test_a_missing_object_fails_before_downloading(
    s3_server: S3Server, published: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, prefix, digest = published
    s3_server.client().delete_object(Bucket=BUCKET, Key=f"{prefix}/tokenizer/tokenizer.json")
    dest = tmp_path / "cache" / "model"

    result = fetch(s3_server, prefix, digest, dest)

    assert result.returncode == EXIT_MODEL_REFUSED
    assert "tokenizer/tokenizer.json: missing" in result.stderr
    assert "downloading" not in result.stderr
    assert_no_partial_cache(dest)


def test_a_manifest_of_another_model_is_refused(
    s3_server: S3Server, published: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, prefix, _ = published
    other_digest = make_model(tmp_path / "other")

    result = fetch(s3_server, prefix, other_digest, tmp_path / "cache" / "model")

    assert result.returncode == EXIT_MODEL_REFUSED
    assert f"not to the expected {other_digest}" in result.stderr


def test_credentials_from_a_mounted_secret(
    s3_server: S3Server, published: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, prefix, digest = published
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text(s3_server.access_key)
    (secret / "AWS_SECRET_ACCESS_KEY").write_text("not-the-secret\n")
    env = s3_server.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    args = ["fetch", "--source", f"s3://{BUCKET}/{prefix}", "--digest", digest]

    wrong = worker(
        *args, "--dest", str(tmp_path / "a"), "--s3-credentials-dir", str(secret), env=env
    )
    assert wrong.returncode == 1
    assert "check AWS_SECRET_ACCESS_KEY" in wrong.stderr

    (secret / "AWS_SECRET_ACCESS_KEY").write_text(s3_server.secret_key + "\n")
    right = worker(
        *args, "--dest", str(tmp_path / "b"), "--s3-credentials-dir", str(secret), env=env
    )
    assert right.returncode == 0, right.stderr


class FlakyProxy:
    """A loopback TCP relay that resets its first `failures` connections, then relays bytes.

    Stands in for a store behind a flaky load balancer, to show that requests are retried.
    """

    def __init__(self, target_port: int, failures: int) -> None:
        self.target_port = target_port
        self.failures_left = failures
        self.reset = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.failures_left > 0:
                self.failures_left -= 1
                self.reset += 1
                # SO_LINGER 0: close() sends RST, like a crashed or overloaded backend.
                client.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def flaky_endpoint(s3_server: S3Server) -> Iterator[FlakyProxy]:
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    proxy = FlakyProxy(port, failures=3)
    yield proxy
    proxy.close()


def test_connection_resets_are_retried(
    s3_server: S3Server,
    published: tuple[Path, str, str],
    flaky_endpoint: FlakyProxy,
    tmp_path: Path,
) -> None:
    _, prefix, digest = published
    dest = tmp_path / "cache" / "model"

    result = fetch(
        s3_server, prefix, digest, dest, AWS_ENDPOINT_URL=f"http://127.0.0.1:{flaky_endpoint.port}"
    )

    assert result.returncode == 0, result.stderr
    assert flaky_endpoint.reset == 3
    assert (dest / BIG_SHARD).stat().st_size == 40 << 20
