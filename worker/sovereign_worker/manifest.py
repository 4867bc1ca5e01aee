"""Digest manifests: every file of a model folder with its size and sha256, as canonical JSON.

A model's digest (`spec.model.digest`) is `sha256:` and the hex sha256 of its manifest's
canonical form (RFC 8785), so one short value pins every byte of a model of any size, and
`sha256sum sovereign-manifest.json` gives the same value with standard tools. The manifest is
shipped inside the model folder under `MANIFEST_NAME` (and excluded from itself), so a
failed verification can say which file differs instead of only "the digest does not match".

What counts as a file is decided here once, for `digest`, `fetch` and `verify` alike: regular
files and symbolic links to regular files (read through), named by their POSIX path relative
to the folder. Links to folders, sockets, pipes and devices are refused, because their
content is not a fixed sequence of bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import rfc8785

MANIFEST_NAME: Final = "sovereign-manifest.json"
MANIFEST_FORMAT: Final = "sovereign.dev/model-manifest/v1"
DIGEST_PREFIX: Final = "sha256:"
# 1 MiB reads keep each buffer in L2 while still amortising the syscall; larger buffers were
# not faster in bench/digest_throughput.py.
READ_BUFFER_BYTES: Final = 1 << 20
# A manifest lists files, not their bytes: even a model of 100 000 shards stays far below this.
MAX_MANIFEST_BYTES: Final = 64 << 20
_HEX_DIGEST_LENGTH: Final = 64


class ManifestError(ValueError):
    """A manifest or a model folder that cannot be described; the message names the file."""


@dataclass(frozen=True, slots=True, order=True)
class FileEntry:
    """One file of a model: its relative POSIX path, size in bytes and hex sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """Every file of a model folder, sorted by path."""

    files: tuple[FileEntry, ...]

    def __post_init__(self) -> None:
        paths = [entry.path for entry in self.files]
        if paths != sorted(set(paths)):
            raise ManifestError("manifest entries must be sorted by path and unique")

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> Manifest:
        return cls(tuple(sorted(entries)))

    def canonical_bytes(self) -> bytes:
        """The RFC 8785 form: the bytes the digest is taken over, and the bytes written."""
        files: list[dict[str, str | int]] = [
            {"path": entry.path, "size": entry.size, "sha256": entry.sha256} for entry in self.files
        ]
        document: dict[str, str | list[dict[str, str | int]]] = {
            "format": MANIFEST_FORMAT,
            "files": files,
        }
        return rfc8785.dumps(document)

    @property
    def digest(self) -> str:
        return DIGEST_PREFIX + hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def by_path(self) -> dict[str, FileEntry]:
        return {entry.path: entry for entry in self.files}

    @classmethod
    def from_json(cls, data: bytes, *, origin: str = MANIFEST_NAME) -> Manifest:
        """Parse a manifest; any layout of the same JSON gives the same digest."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{origin} is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            document = json.loads(data)
        except ValueError as error:
            raise ManifestError(f"{origin} is not valid JSON: {error}") from None
        return cls.of(_entries_from_document(document, origin))


def _entries_from_document(document: Any, origin: str) -> list[FileEntry]:
    if not isinstance(document, dict) or set(document) != {"format", "files"}:
        raise ManifestError(f"{origin} must be an object with exactly 'format' and 'files'")
    if document["format"] != MANIFEST_FORMAT:
        raise ManifestError(
            f"{origin} has format {document['format']!r}; this worker reads {MANIFEST_FORMAT!r}"
        )
    if not isinstance(document["files"], list):
        raise ManifestError(f"{origin}: 'files' must be a list")
    entries = []
    for index, item in enumerate(document["files"]):
        where = f"{origin} files[{index}]"
        if not isinstance(item, dict) or set(item) != {"path", "size", "sha256"}:
            raise ManifestError(f"{where} must have exactly 'path', 'size' and 'sha256'")
        path, size, sha256 = item["path"], item["size"], item["sha256"]
        if not isinstance(path, str) or (problem := path_problem(path)):
            raise ManifestError(f"{where}: path {path!r} {problem or 'must be a string'}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"{where} ({path}): size must be a non-negative integer")
        if not _is_hex_digest(sha256):
            raise ManifestError(f"{where} ({path}): sha256 must be 64 lower-case hex digits")
        entries.append(FileEntry(path, size, sha256))
    return entries


def _is_hex_digest(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == _HEX_DIGEST_LENGTH
        and all(c in "0123456789abcdef" for c in value)
    )


def is_digest(value: str) -> bool:
    """Whether `value` is written like a model digest: `sha256:` and 64 lower-case hex digits."""
    return value.startswith(DIGEST_PREFIX) and _is_hex_digest(value.removeprefix(DIGEST_PREFIX))


def path_problem(path: str) -> str | None:
    """Why `path` cannot name a file inside a model folder, or None when it can.

    Manifests and object-store keys come from outside; a path that climbs out of the folder
    would make a fetch write, or a verification read, somewhere else.
    """
    if not path or path.startswith("/") or "\\" in path:
        return "must be a non-empty relative POSIX path"
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return "must not contain control characters"
    if any(part in {"", ".", ".."} for part in path.split("/")):
        return "must not contain empty, '.' or '..' segments"
    return None


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file found in a model folder: its manifest path and where to read it."""

    path: str
    location: Path
    size: int


def list_model_files(root: Path, *, confine_to: Path | None = None) -> list[LocalFile]:
    """Every file of the model folder `root`, sorted by path, without the manifest itself.

    With `confine_to`, every symbolic link must resolve inside that folder: a read-only
    volume may hold links, but none may lead a verification (or the engine) out of it.
    """
    boundary = confine_to.resolve(strict=True) if confine_to is not None else None
    found: list[LocalFile] = []
    for folder, subfolders, names in os.walk(root, onerror=_raise):
        base = Path(folder)
        for name in subfolders:
            if (base / name).is_symlink():
                rel = _relative(root, base / name)
                raise ManifestError(
                    f"{rel} is a symbolic link to a folder; link each file instead, or copy it"
                )
        for name in names:
            location = base / name
            rel = _relative(root, location)
            if rel == MANIFEST_NAME:
                continue
            found.append(_describe(rel, location, boundary))
    found.sort(key=lambda item: item.path)
    return found


def _raise(error: OSError) -> None:
    # os.walk skips unreadable folders silently by default; a manifest must not.
    raise ManifestError(f"cannot read {error.filename}: {error.strerror}") from error


def _relative(root: Path, location: Path) -> str:
    rel = location.relative_to(root).as_posix()
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{rel!r}: file names must be valid UTF-8") from None
    if problem := path_problem(rel):
        raise ManifestError(f"{rel!r}: file name {problem}")
    return rel


def _describe(rel: str, location: Path, boundary: Path | None) -> LocalFile:
    if location.is_symlink():
        try:
            target = location.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ManifestError(f"{rel} is a broken or looping symbolic link") from None
        if boundary is not None and not target.is_relative_to(boundary):
            raise ManifestError(
                f"{rel} is a symbolic link to {target}, outside {boundary}; links may only "
                "point inside the model volume"
            )
    info = location.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ManifestError(f"{rel} is not a regular file (a socket, pipe or device)")
    return LocalFile(rel, location, info.st_size)


def hash_file(location: Path, buffer: bytearray | None = None) -> tuple[int, str]:
    """Size and hex sha256 of one file, read in large chunks.

    `hashlib.file_digest` does the same with a 256 KiB buffer it allocates per call; here each
    worker thread reuses one buffer. hashlib releases the GIL while hashing, so threads hash
    different files truly in parallel.
    """
    view = memoryview(buffer if buffer is not None else bytearray(READ_BUFFER_BYTES))
    digest = hashlib.sha256()
    size = 0
    with location.open("rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while count := handle.readinto(view):
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


def default_jobs() -> int:
    """Threads to hash with: one per usable core (hashing is CPU-bound once data is read)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def hash_files(
    files: Iterable[LocalFile],
    *,
    jobs: int | None = None,
    on_done: Callable[[FileEntry], None] | None = None,
) -> dict[str, FileEntry]:
    """Hash every file, several at a time; returns entries by path.

    Largest files start first, so one huge shard does not run alone at the end.
    """
    pending = sorted(files, key=lambda item: item.size, reverse=True)
    local = threading.local()

    def work(item: LocalFile) -> FileEntry:
        if not hasattr(local, "buffer"):
            local.buffer = bytearray(READ_BUFFER_BYTES)
        size, sha256 = hash_file(item.location, local.buffer)
        entry = FileEntry(item.path, size, sha256)
        if on_done is not None:
            on_done(entry)
        return entry

    workers = max(1, min(jobs or default_jobs(), len(pending) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sha256") as pool:
        return {entry.path: entry for entry in pool.map(work, pending)}


def build_manifest(
    root: Path,
    *,
    confine_to: Path | None = None,
    jobs: int | None = None,
    on_done: Callable[[FileEntry], None] | None = None,
) -> Manifest:
    """The manifest of the model folder `root` as it is on disk now."""
    files = list_model_files(root, confine_to=confine_to)
    return Manifest.of(hash_files(files, jobs=jobs, on_done=on_done).values())


def write_manifest(manifest: Manifest, target: Path) -> None:
    """Write the canonical bytes atomically: a reader sees the old file or the new one."""
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(manifest.canonical_bytes())
    partial.replace(target)
