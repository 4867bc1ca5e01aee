"""`sovereign-worker fetch`: put the verified model where `serve` reads it.

- `pvc://` is verified where it lies, on its read-only mount, and nothing is copied
  (copying hundreds of GB would only waste time and disk); the engine container mounts the
  same folder at the model directory (see `sovereign_worker.paths`).
- `file://` and `s3://` are copied into the cache folder `dest`, atomically, and a cache
  that already verifies is reused (see `cache`).
- `hf://` and `oci://` are refused until the worker can fetch them; planning refuses them
  first, so this is a second line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sovereign_worker.fetch.cache import fill_cache, log_verified
from sovereign_worker.fetch.local import LocalFolder, SourceNotFound, resolve_file, resolve_pvc
from sovereign_worker.fetch.s3 import S3Error, S3Folder, S3Settings, s3_client
from sovereign_worker.manifest import default_jobs
from sovereign_worker.paths import VOLUMES_ROOT
from sovereign_worker.sources import Scheme, parse_model_source
from sovereign_worker.verify import VerificationError, verify_folder

__all__ = [
    "FETCHABLE_SCHEMES",
    "FetchError",
    "S3Settings",
    "SourceNotFound",
    "VerificationError",
    "fetch_model",
]

log = logging.getLogger(__name__)
FETCHABLE_SCHEMES = (Scheme.PVC, Scheme.FILE, Scheme.S3)


class FetchError(Exception):
    """The source could not be read; unlike VerificationError, retrying may help."""


def fetch_model(
    source_uri: str,
    digest: str,
    dest: Path,
    *,
    volumes_root: Path = Path(VOLUMES_ROOT),
    jobs: int | None = None,
    s3: S3Settings | None = None,
) -> Path:
    """Fetch and verify the model; returns the folder that holds it, verified.

    Raises VerificationError when the bytes are not the model `digest` names (naming the
    files), FetchError when the source cannot be read, ValueError for a malformed source.
    """
    source = parse_model_source(source_uri)
    workers = jobs or default_jobs()
    try:
        match source.scheme:
            case Scheme.PVC:
                folder, mount = resolve_pvc(source, volumes_root)
                log.info("verifying %s in place at %s", source.uri, folder)
                verify_folder(folder, digest, confine_to=mount, jobs=workers, on_done=log_verified)
                return folder
            case Scheme.FILE:
                store = LocalFolder(resolve_file(source), jobs=workers)
                fill_cache(store, digest, dest, jobs=workers)
                return dest
            case Scheme.S3:
                settings = s3 or S3Settings()
                s3_store = S3Folder(source, s3_client(settings), settings)
                fill_cache(s3_store, digest, dest, jobs=workers)
                return dest
            case _:
                supported = ", ".join(f"{scheme.value}://" for scheme in FETCHABLE_SCHEMES)
                raise ValueError(
                    f"{source.scheme.value}:// sources cannot be fetched yet; use {supported}"
                )
    except (S3Error, SourceNotFound, OSError) as error:
        raise FetchError(str(error)) from error
