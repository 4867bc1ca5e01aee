"""Where engine pods mount model volumes; shared by the renderer and `sovereign-worker fetch`.

The model cache itself (`MODEL_DIR`) and the writable emptyDirs live in
`sovereign_worker.sovereignty`; this module holds the paths of volumes the pod reads from.

How each source reaches `serve --model-dir MODEL_DIR`:

- `s3://` and `file://`: `fetch` copies into `MODEL_DIR`, an emptyDir with a size limit or
  the PersistentVolumeClaim named in `spec.model.cache`, mounted read-write in the fetch
  container and read-only in the engine container.
- `pvc://CLAIM/PATH`: nothing is copied. The claim is mounted read-only at
  `claim_mount_path(CLAIM)` in the fetch container, which verifies `PATH` under it where it
  lies and writes nothing; the engine container sees that same folder at `MODEL_DIR`
  through a read-only `subPath` mount, so `serve` reads one path for every source.
"""

from __future__ import annotations

from typing import Final

VOLUMES_ROOT: Final = "/var/run/sovereign/volumes"
"""Parent of every PersistentVolumeClaim mounted as a model source."""


def claim_mount_path(claim: str) -> str:
    """Where the fetch container sees the PersistentVolumeClaim `claim` (read-only)."""
    return f"{VOLUMES_ROOT}/{claim}"


def pvc_source_path(claim: str, path: str) -> str:
    """The folder of a `pvc://CLAIM/PATH` source inside the fetch container."""
    root = claim_mount_path(claim)
    return f"{root}/{path}" if path else root
