"""What the diffusers engine checks in its model folder before it loads anything.

`sovereign-worker fetch` leaves a folder that verified against the digest, with the model's
manifest (`sovereign-manifest.json`) written last: the manifest is the mark of a finished,
verified fetch. The engine refuses a folder without it, and one whose files no longer match
its listing (names and sizes, read from the directory without hashing a byte; the init
container has just hashed them all). It also refuses pipelines that would run code from the
folder: only known pipeline classes whose components come from diffusers or transformers.
Pure apart from reading the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from sovereign_worker.manifest import MANIFEST_NAME, Manifest, ManifestError, list_model_files
from sovereign_worker.verify import VerificationError, listing_problems, read_manifest_file

MODEL_INDEX: Final = "model_index.json"
PIPELINE_CLASSES: Final = frozenset({"StableDiffusionPipeline"})
# Components from any other library would be imported from files in the model folder.
COMPONENT_LIBRARIES: Final = frozenset({"diffusers", "transformers"})


class ModelDirError(ValueError):
    """The folder cannot be served; the message says why and what to run."""


def check_model_dir(model_dir: Path) -> dict[str, Any]:
    """Check `model_dir` as described above; returns its parsed model_index.json."""
    if not model_dir.is_absolute():
        raise ModelDirError(f"--model-dir must be an absolute path, got {model_dir}")
    _check_verified(model_dir)
    return _check_pipeline(model_dir)


def _check_verified(model_dir: Path) -> None:
    try:
        shipped = read_manifest_file(model_dir)
    except VerificationError as error:
        raise ModelDirError(str(error)) from None
    if shipped is None:
        raise ModelDirError(
            f"{model_dir} holds no {MANIFEST_NAME}, so it was not verified against a digest: "
            "run `sovereign-worker fetch` into it first (the pod's init container does)"
        )
    try:
        manifest = Manifest.from_json(shipped, origin=str(model_dir / MANIFEST_NAME))
        files = list_model_files(model_dir, confine_to=model_dir)
    except ManifestError as error:
        raise ModelDirError(f"{model_dir} cannot be served: {error}") from None
    if problems := listing_problems(manifest, {item.path: item.size for item in files}):
        shown = "; ".join(problems[:5])
        raise ModelDirError(f"{model_dir} changed since it was verified ({shown}); fetch it again")


def _check_pipeline(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(
            f"{model_dir} holds no {MODEL_INDEX}: the diffusers engine serves diffusers "
            "pipelines (saved with save_pretrained); is this a vLLM model?"
        ) from None
    except (OSError, ValueError) as error:
        raise ModelDirError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(index, dict):
        raise ModelDirError(f"{path} must hold a JSON object")
    pipeline = index.get("_class_name")
    if pipeline not in PIPELINE_CLASSES:
        raise ModelDirError(
            f"{path} names pipeline {pipeline!r}; this engine serves "
            f"{', '.join(sorted(PIPELINE_CLASSES))}"
        )
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library = value[0]
        if library is not None and library not in COMPONENT_LIBRARIES:
            raise ModelDirError(
                f"{path}: component {name!r} comes from {library!r}, which would run code "
                f"shipped with the model; only {', '.join(sorted(COMPONENT_LIBRARIES))} "
                "components are loaded"
            )
    return index
