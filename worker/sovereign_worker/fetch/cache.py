"""The model cache: reuse it when it verifies, otherwise fill it atomically.

A fetch downloads into a staging folder, verifies the staged bytes against the digest, and
only then moves them to the destination, so the destination holds either nothing or a model
that verified. A killed fetch leaves only a staging folder, which the next fetch removes.

In a pod the destination is usually the mount point of the cache volume itself: a mount point
cannot be renamed and its parent is the read-only root filesystem, so the staging folder then
lives inside the destination and its entries are moved up one by one, the manifest last. An
interrupted move leaves a folder that fails verification and is fetched again; it can never
pass for a verified model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from sovereign_worker.manifest import MANIFEST_NAME, FileEntry, Manifest, write_manifest
from sovereign_worker.verify import (
    VerificationError,
    listing_problems,
    manifest_for_digest,
    verify_folder,
)

log = logging.getLogger(__name__)
_INSIDE_PREFIX = ".sovereign-staging-"
_FILESYSTEM_FOLDER = "lost+found"


class ModelStore(Protocol):
    """A model folder somewhere else (an object store, a mounted path) that can be copied."""

    @property
    def description(self) -> str:
        """The source as users wrote it, for messages."""
        ...

    def read_manifest(self) -> bytes | None:
        """The shipped manifest's bytes, or None when the model has none."""
        ...

    def list_files(self) -> dict[str, int]:
        """Every file but the manifest: relative path -> size."""
        ...

    def download(self, paths: Sequence[str], into: Path) -> None:
        """Copy these files into the folder `into`, keeping their relative paths."""
        ...


def fill_cache(store: ModelStore, digest: str, dest: Path, *, jobs: int | None = None) -> Manifest:
    """Make `dest` hold the verified model `digest` from `store`; returns its manifest.

    Raises VerificationError (naming the files) when the store does not hold that model; the
    destination is then left without a model, never with a half-written one.
    """
    dest = dest.absolute()
    _remove_leftover_staging(dest)
    if (cached := _verified_cache(dest, digest, jobs)) is not None:
        return cached
    with _staging_folder(dest) as (stage, inside):
        manifest = _download_and_verify(store, digest, stage, jobs)
        _commit(stage, dest, inside=inside)
    log.info("fetched %d files (%d bytes) into %s", len(manifest.files), manifest.total_bytes, dest)
    return manifest


def log_verified(entry: FileEntry) -> None:
    """One log line per verified file: a long verification shows its progress."""
    log.info("sha256 %s  %s (%d bytes)", entry.sha256, entry.path, entry.size)


def _verified_cache(dest: Path, digest: str, jobs: int | None) -> Manifest | None:
    if not dest.is_dir():
        return None
    if not (dest / MANIFEST_NAME).exists():
        # Every fetch writes the manifest last: without it this is a fresh volume or an
        # interrupted commit, and nothing here is worth hashing.
        _empty(dest)
        return None
    log.info("checking the existing cache at %s", dest)
    try:
        manifest = verify_folder(dest, digest, jobs=jobs, on_done=log_verified)
    except VerificationError as error:
        log.warning("the cache at %s is not %s, fetching again: %s", dest, digest, error)
        _empty(dest)
        return None
    log.info("reusing the cache at %s: it verifies against %s", dest, digest)
    return manifest


def _download_and_verify(store: ModelStore, digest: str, stage: Path, jobs: int | None) -> Manifest:
    shipped = store.read_manifest()
    expected = None
    if shipped is not None:
        origin = f"{store.description.rstrip('/')}/{MANIFEST_NAME}"
        expected = manifest_for_digest(shipped, digest, origin=origin)
    files = store.list_files()
    if expected is not None and (problems := listing_problems(expected, files)):
        # Found from the listing alone: nothing is downloaded for a model that cannot match.
        raise VerificationError(
            f"{store.description} does not hold the files of {digest}", problems
        )
    log.info(
        "downloading %d files (%d bytes) from %s",
        len(files),
        sum(files.values()),
        store.description,
    )
    store.download(sorted(files), stage)
    if expected is not None:
        write_manifest(expected, stage / MANIFEST_NAME)
    manifest = verify_folder(stage, digest, jobs=jobs, on_done=log_verified)
    if expected is None:
        # Written only once the bytes verified, so a later reuse check can name bad files.
        write_manifest(manifest, stage / MANIFEST_NAME)
    return manifest


def _remove_leftover_staging(dest: Path) -> None:
    leftovers = list(dest.parent.glob(f".{dest.name}.staging-*"))
    if dest.is_dir():
        leftovers += dest.glob(f"{_INSIDE_PREFIX}*")
    for leftover in leftovers:
        log.info("removing %s, left by an interrupted fetch", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _stage_inside(dest: Path) -> bool:
    return dest.is_dir() and (os.path.ismount(dest) or not os.access(dest.parent, os.W_OK))


@contextmanager
def _staging_folder(dest: Path) -> Iterator[tuple[Path, bool]]:
    inside = _stage_inside(dest)
    if inside:
        stage = Path(tempfile.mkdtemp(prefix=_INSIDE_PREFIX, dir=dest))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        yield stage, inside
    finally:
        # After a commit the folder is gone; after any failure this removes every partial file.
        shutil.rmtree(stage, ignore_errors=True)


def _commit(stage: Path, dest: Path, *, inside: bool) -> None:
    stage.chmod(0o755)  # mkdtemp makes it private; the engine may run as another user
    if not inside:
        if dest.exists():
            _remove(dest)
        stage.rename(dest)
        return
    entries = sorted(stage.iterdir(), key=lambda entry: entry.name == MANIFEST_NAME)
    for entry in entries:
        entry.rename(dest / entry.name)
    stage.rmdir()


def _empty(dest: Path) -> None:
    for entry in dest.iterdir():
        # A freshly formatted cache claim has the filesystem's own root-owned lost+found,
        # which the unprivileged fetch may not remove; it holds no files of ours.
        if entry.name != _FILESYSTEM_FOLDER:
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
