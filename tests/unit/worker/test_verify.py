"""Verification: the manifest against the digest, every file against the manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sovereign_worker.manifest import MANIFEST_NAME, Manifest, build_manifest, write_manifest
from sovereign_worker.verify import VerificationError, verify_folder

pytestmark = pytest.mark.unit


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, str]:
    """A published model folder (manifest shipped) and its digest."""
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model-00001-of-00002.safetensors").write_bytes(os.urandom(1 << 20))
    (root / "model-00002-of-00002.safetensors").write_bytes(os.urandom(1 << 16))
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    manifest = build_manifest(root)
    write_manifest(manifest, root / MANIFEST_NAME)
    return root, manifest.digest


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(data)


def refusal(root: Path, digest: str) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        verify_folder(root, digest)
    return caught.value


def test_an_intact_model_verifies_and_returns_its_manifest(model: tuple[Path, str]) -> None:
    root, digest = model
    assert verify_folder(root, digest).digest == digest


def test_a_flipped_byte_names_the_file(model: tuple[Path, str]) -> None:
    root, digest = model
    flip_byte(root / "model-00001-of-00002.safetensors", 4096)
    error = refusal(root, digest)
    assert len(error.problems) == 1
    assert error.problems[0].startswith("model-00001-of-00002.safetensors: sha256 ")
    assert "model-00001-of-00002.safetensors" in str(error)


def test_missing_extra_and_resized_files_are_all_named(model: tuple[Path, str]) -> None:
    root, digest = model
    (root / "tokenizer" / "tokenizer.json").unlink()
    (root / "notes.txt").write_text("hello")
    with (root / "config.json").open("a") as handle:
        handle.write(" ")
    error = refusal(root, digest)
    assert error.problems == (
        "tokenizer/tokenizer.json: missing",
        "notes.txt: not in the manifest",
        "config.json: 24 bytes, the manifest says 23",
    )


def test_a_changed_manifest_does_not_match_the_digest(model: tuple[Path, str]) -> None:
    root, digest = model
    flip_byte(root / "model-00002-of-00002.safetensors", 0)
    # Someone re-ran `digest` after the change: the manifest now describes other bytes.
    write_manifest(build_manifest(root), root / MANIFEST_NAME)
    error = refusal(root, digest)
    assert f"not to the expected {digest}" in error.summary
    assert "manifest was changed" in error.summary


def test_without_a_manifest_the_digest_is_still_checked(model: tuple[Path, str]) -> None:
    root, digest = model
    (root / MANIFEST_NAME).unlink()
    assert verify_folder(root, digest).digest == digest
    flip_byte(root / "config.json", 0)
    error = refusal(root, digest)
    assert "cannot be named" in error.problems[0]


def test_a_manifest_that_is_a_link_is_refused(model: tuple[Path, str], tmp_path: Path) -> None:
    root, digest = model
    elsewhere = tmp_path / "elsewhere.json"
    (root / MANIFEST_NAME).rename(elsewhere)
    (root / MANIFEST_NAME).symlink_to(elsewhere)
    assert "must be a regular file" in refusal(root, digest).summary


def test_a_link_out_of_the_boundary_is_a_verification_failure(
    model: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = model
    (tmp_path / "outside.bin").write_bytes(b"x")
    (root / "tokenizer" / "merges.txt").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(VerificationError, match=r"tokenizer/merges\.txt is a symbolic link"):
        verify_folder(root, digest, confine_to=root)


def test_long_problem_lists_are_shortened_in_the_message(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    empty = Manifest.of([])
    write_manifest(empty, root / MANIFEST_NAME)
    for index in range(30):
        (root / f"extra-{index:02d}").write_text("x")
    error = refusal(root, empty.digest)
    assert len(error.problems) == 30
    assert "and 10 more" in str(error)
