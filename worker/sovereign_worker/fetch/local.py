"""Sources on mounted filesystems: `pvc://CLAIM/PATH` and `file:///PATH`.

Both are read where they are mounted, and neither may lead outside it: the folder itself and
every symbolic link in it must resolve inside the volume (for pvc://, the claim's mount; for
file://, the named folder). `sovereign_worker.sources` has already refused `..` segments;
this module catches the links, which only the filesystem can answer for.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from shutil import copyfile

from sovereign_worker.manifest import LocalFile, ManifestError, list_model_files
from sovereign_worker.paths import VOLUMES_ROOT, claim_mount_path
from sovereign_worker.sources import ModelSource, Scheme
from sovereign_worker.verify import VerificationError, read_manifest_file


class SourceNotFound(Exception):
    """The source folder does not exist or is not a folder; the message says what to check."""


def resolve_pvc(source: ModelSource, volumes_root: Path = Path(VOLUMES_ROOT)) -> tuple[Path, Path]:
    """The model folder of a `pvc://` source and the claim's mount that confines it.

    `volumes_root` replaces `paths.VOLUMES_ROOT` (tests, other layouts); the claim's place
    under it is the one the renderer mounts (`paths.claim_mount_path`).
    """
    if source.scheme is not Scheme.PVC:
        raise ValueError(f"not a pvc:// source: {source.uri}")
    under_root = PurePosixPath(claim_mount_path(source.authority)).relative_to(VOLUMES_ROOT)
    mount = volumes_root / under_root
    if not mount.is_dir():
        raise SourceNotFound(
            f"claim {source.authority!r} is not mounted at {mount}; the pod must mount it there "
            "read-only"
        )
    return _confined_folder(mount / source.path, mount, source.uri), mount.resolve()


def resolve_file(source: ModelSource) -> Path:
    """The model folder of a `file://` source, with every link in it resolved."""
    if source.scheme is not Scheme.FILE:
        raise ValueError(f"not a file:// source: {source.uri}")
    path = Path(source.path)
    return _confined_folder(path, path, source.uri)


def _confined_folder(folder: Path, boundary: Path, uri: str) -> Path:
    try:
        real = folder.resolve(strict=True)
    except FileNotFoundError:
        raise SourceNotFound(f"{uri}: {folder} does not exist") from None
    real_boundary = boundary.resolve(strict=True)
    if not real.is_relative_to(real_boundary):
        raise VerificationError(
            f"{uri} resolves to {real}, outside {real_boundary}: a symbolic link leads out of "
            "the volume"
        )
    if not real.is_dir():
        raise SourceNotFound(f"{uri}: {real} is not a folder")
    return real


class LocalFolder:
    """A `file://` model folder, copied into the cache like any remote store."""

    def __init__(self, root: Path, *, jobs: int = 4) -> None:
        self.root = root
        self.jobs = jobs
        self._files: dict[str, LocalFile] | None = None

    @property
    def description(self) -> str:
        return f"file://{self.root}"

    def read_manifest(self) -> bytes | None:
        return read_manifest_file(self.root)

    def list_files(self) -> dict[str, int]:
        return {path: item.size for path, item in self._index().items()}

    def _index(self) -> dict[str, LocalFile]:
        if self._files is None:
            try:
                found = list_model_files(self.root, confine_to=self.root)
            except ManifestError as error:
                raise VerificationError(f"{self.description} cannot be fetched: {error}") from None
            self._files = {item.path: item for item in found}
        return self._files

    def download(self, paths: Sequence[str], into: Path) -> None:
        files = self._index()

        def copy(path: str) -> None:
            target = into / path
            target.parent.mkdir(parents=True, exist_ok=True)
            # copyfile uses the kernel's copy_file_range/sendfile where it can.
            copyfile(files[path].location, target)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="copy") as pool:
            list(pool.map(copy, paths))
