"""What the diffusers engine requires of its folder: verified by fetch, and no foreign code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sovereign_worker.cli import main
from sovereign_worker.diffusion.model_dir import ModelDirError, check_model_dir
from sovereign_worker.manifest import MANIFEST_NAME, build_manifest, write_manifest

pytestmark = pytest.mark.unit

INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def pipeline_folder(root: Path, index: dict[str, Any] = INDEX, *, verified: bool = True) -> Path:
    """A folder shaped like a saved pipeline, with the manifest fetch leaves when `verified`."""
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps(index))
    (root / "unet").mkdir()
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    if verified:
        write_manifest(build_manifest(root), root / MANIFEST_NAME)
    return root


def test_a_verified_pipeline_folder_passes(tmp_path: Path) -> None:
    assert check_model_dir(pipeline_folder(tmp_path / "sd")) == INDEX


def test_a_folder_fetch_never_verified_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ModelDirError, match=rf"holds no {re.escape(MANIFEST_NAME)}.*sovereign-worker fetch"
    ):
        check_model_dir(pipeline_folder(tmp_path / "sd", verified=False))


def test_files_changed_after_verification_are_named(tmp_path: Path) -> None:
    folder = pipeline_folder(tmp_path / "sd")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 65)
    (folder / "extra.py").write_text("print('hi')")
    with pytest.raises(ModelDirError, match="changed since it was verified") as caught:
        check_model_dir(folder)
    assert "extra.py: not in the manifest" in str(caught.value)
    assert "65 bytes, the manifest says 64" in str(caught.value)


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="absolute"):
        check_model_dir(Path("sd"))


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({**INDEX, "_class_name": "StableDiffusionXLPipeline"}, "this engine serves"),
        ({**INDEX, "unet": ["my_unet", "FastUNet"]}, "'unet' comes from 'my_unet'"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_pipelines_that_would_run_foreign_code_are_refused(
    tmp_path: Path, index: Any, message: str
) -> None:
    with pytest.raises(ModelDirError, match=message):
        check_model_dir(pipeline_folder(tmp_path / "sd", index))


def test_a_vllm_model_is_not_a_pipeline(tmp_path: Path) -> None:
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_manifest(build_manifest(folder), folder / MANIFEST_NAME)
    with pytest.raises(ModelDirError, match=r"no model_index\.json.*vLLM model"):
        check_model_dir(folder)


def test_serve_checks_flags_and_folder_before_loading_anything(tmp_path: Path) -> None:
    folder = pipeline_folder(tmp_path / "sd")
    runner = CliRunner()
    base = ["serve", "--engine", "diffusers", "--model-dir", str(folder), "--dry-run", "--"]
    ok = runner.invoke(main, [*base, "--served-model-name", "sd", "--max-queue", "2"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["max_queue"] == 2
    bad_flag = runner.invoke(main, [*base, "--served-model-name", "sd", "--max-num-seqs", "4"])
    assert bad_flag.exit_code == 1
    assert "unknown diffusers engine flag '--max-num-seqs'" in bad_flag.output
    unverified = pipeline_folder(tmp_path / "raw", verified=False)
    refused = runner.invoke(
        main,
        [
            "serve",
            "--engine",
            "diffusers",
            "--model-dir",
            str(unverified),
            "--",
            "--served-model-name",
            "sd",
        ],
    )
    assert refused.exit_code == 1
    assert "was not verified against a digest" in refused.output
