"""`fetch` from mounted sources: the atomic cache, reuse, and the refusals (traversal, links)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from sovereign_worker.cli import EXIT_MODEL_REFUSED, main
from sovereign_worker.fetch import FetchError, VerificationError, fetch_model
from sovereign_worker.fetch.cache import fill_cache
from sovereign_worker.manifest import MANIFEST_NAME, build_manifest, write_manifest

pytestmark = pytest.mark.unit


def publish(root: Path) -> str:
    """Write a small model folder with its manifest; returns the digest."""
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(os.urandom(256 << 10))
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    manifest = build_manifest(root)
    write_manifest(manifest, root / MANIFEST_NAME)
    return manifest.digest


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(data)


def siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store" / "llama"
    return root, publish(root)


def test_file_source_is_copied_verified_and_renamed_into_place(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    dest = tmp_path / "cache" / "model"
    assert fetch_model(f"file://{root}", digest, dest) == dest
    assert (dest / "model.safetensors").read_bytes() == (root / "model.safetensors").read_bytes()
    assert (dest / MANIFEST_NAME).read_bytes() == (root / MANIFEST_NAME).read_bytes()
    assert siblings(dest) == ["model"]


def test_a_cache_that_verifies_is_reused_without_copying(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    dest = tmp_path / "cache" / "model"
    fetch_model(f"file://{root}", digest, dest)
    inode = (dest / "model.safetensors").stat().st_ino
    fetch_model(f"file://{root}", digest, dest)
    assert (dest / "model.safetensors").stat().st_ino == inode


def test_a_cache_that_does_not_verify_is_fetched_again(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    dest = tmp_path / "cache" / "model"
    fetch_model(f"file://{root}", digest, dest)
    flip_byte(dest / "model.safetensors")
    (dest / "stray.txt").write_text("left over")
    fetch_model(f"file://{root}", digest, dest)
    assert build_manifest(dest).digest == digest
    assert not (dest / "stray.txt").exists()


def test_a_flipped_byte_at_the_source_fails_naming_the_file_and_leaves_nothing(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    flip_byte(root / "model.safetensors")
    dest = tmp_path / "cache" / "model"
    with pytest.raises(VerificationError) as caught:
        fetch_model(f"file://{root}", digest, dest)
    assert caught.value.problems[0].startswith("model.safetensors: sha256 ")
    assert siblings(dest) == []


def test_a_missing_file_fails_before_anything_is_copied(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    (root / "tokenizer" / "tokenizer.json").unlink()
    dest = tmp_path / "cache" / "model"
    with pytest.raises(VerificationError) as caught:
        fetch_model(f"file://{root}", digest, dest)
    assert caught.value.problems == ("tokenizer/tokenizer.json: missing",)
    assert siblings(dest) == []


def test_a_source_without_manifest_is_verified_by_digest_and_gets_one(tmp_path: Path) -> None:
    root = tmp_path / "store" / "bare"
    digest = publish(root)
    (root / MANIFEST_NAME).unlink()
    dest = tmp_path / "cache" / "model"
    fetch_model(f"file://{root}", digest, dest)
    assert build_manifest(dest).digest == digest
    assert (dest / MANIFEST_NAME).is_file()


def test_leftovers_of_an_interrupted_fetch_are_removed(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    dest = tmp_path / "cache" / "model"
    (tmp_path / "cache" / ".model.staging-killed" / "sub").mkdir(parents=True)
    fetch_model(f"file://{root}", digest, dest)
    assert siblings(dest) == ["model"]


class BrokenStore:
    """A store whose download fails half-way, as a dropped connection would."""

    description = "broken://store"

    def __init__(self, files: dict[str, int]) -> None:
        self.files = files

    def read_manifest(self) -> bytes | None:
        return None

    def list_files(self) -> dict[str, int]:
        return self.files

    def download(self, paths: Sequence[str], into: Path) -> None:
        (into / paths[0]).write_bytes(b"half")
        raise OSError("connection reset")


def test_a_failed_download_leaves_no_partial_cache(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "model"
    with pytest.raises(OSError, match="connection reset"):
        fill_cache(BrokenStore({"a.bin": 10}), "sha256:" + "0" * 64, dest)
    assert siblings(dest) == []


def test_a_mounted_destination_is_filled_through_a_staging_folder_inside_it(
    source: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An emptyDir mounted at the cache path can be neither renamed nor given siblings.
    root, digest = source
    dest = tmp_path / "pod" / "volume"
    dest.mkdir(parents=True)
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == dest)
    fetch_model(f"file://{root}", digest, dest)
    assert build_manifest(dest).digest == digest
    assert sorted(p.name for p in dest.iterdir()) == [
        "config.json",
        "model.safetensors",
        MANIFEST_NAME,
        "tokenizer",
    ]
    assert siblings(dest) == ["volume"]


def test_a_failure_on_a_mounted_destination_leaves_it_empty(
    source: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, digest = source
    flip_byte(root / "config.json")
    dest = tmp_path / "volume"
    dest.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == dest)
    with pytest.raises(VerificationError):
        fetch_model(f"file://{root}", digest, dest)
    assert list(dest.iterdir()) == []


def test_file_sources_refuse_links_out_of_the_folder(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    (tmp_path / "private.key").write_text("secret")
    (root / "tokenizer" / "vocab.txt").symlink_to(tmp_path / "private.key")
    with pytest.raises(VerificationError, match=r"tokenizer/vocab\.txt is a symbolic link to"):
        fetch_model(f"file://{root}", digest, tmp_path / "cache" / "model")


# pvc:// sources are verified where they lie.


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    """The pod's volumes root with claim `model-store` holding a published model."""
    root = tmp_path / "volumes"
    publish(root / "model-store" / "meta-llama" / "Llama-tiny")
    return root


def pvc_digest(volumes: Path) -> str:
    return build_manifest(volumes / "model-store" / "meta-llama" / "Llama-tiny").digest


def test_pvc_is_verified_in_place_and_nothing_is_copied(volumes: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "model"
    folder = fetch_model(
        "pvc://model-store/meta-llama/Llama-tiny", pvc_digest(volumes), dest, volumes_root=volumes
    )
    assert folder == (volumes / "model-store" / "meta-llama" / "Llama-tiny").resolve()
    assert not dest.parent.exists()


def test_pvc_with_a_flipped_byte_is_refused(volumes: Path, tmp_path: Path) -> None:
    digest = pvc_digest(volumes)
    flip_byte(volumes / "model-store" / "meta-llama" / "Llama-tiny" / "model.safetensors")
    with pytest.raises(VerificationError, match=r"model\.safetensors: sha256"):
        fetch_model(
            "pvc://model-store/meta-llama/Llama-tiny", digest, tmp_path / "d", volumes_root=volumes
        )


def test_pvc_path_through_a_link_out_of_the_claim_is_refused(volumes: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    publish(elsewhere / "Llama-tiny")
    (volumes / "model-store" / "escape").symlink_to(elsewhere)
    with pytest.raises(VerificationError, match="outside"):
        fetch_model(
            "pvc://model-store/escape/Llama-tiny",
            build_manifest(elsewhere / "Llama-tiny").digest,
            tmp_path / "d",
            volumes_root=volumes,
        )


def test_pvc_links_inside_the_claim_are_followed_and_outside_refused(
    volumes: Path, tmp_path: Path
) -> None:
    # Hugging Face cache layouts link snapshot files to blobs elsewhere in the same volume.
    claim = volumes / "model-store"
    (claim / "blobs").mkdir()
    (claim / "blobs" / "abc").write_text("merges")
    folder = claim / "meta-llama" / "Llama-tiny"
    (folder / "merges.txt").symlink_to(claim / "blobs" / "abc")
    manifest = build_manifest(folder)
    write_manifest(manifest, folder / MANIFEST_NAME)
    digest = manifest.digest
    fetch_model(
        "pvc://model-store/meta-llama/Llama-tiny", digest, tmp_path / "d", volumes_root=volumes
    )

    (tmp_path / "outside").write_text("merges")
    (folder / "merges.txt").unlink()
    (folder / "merges.txt").symlink_to(tmp_path / "outside")
    with pytest.raises(VerificationError, match=r"merges\.txt is a symbolic link to .*outside"):
        fetch_model(
            "pvc://model-store/meta-llama/Llama-tiny", digest, tmp_path / "d", volumes_root=volumes
        )


def test_an_unmounted_claim_is_a_fetch_error(volumes: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="claim 'other' is not mounted"):
        fetch_model("pvc://other/x", "sha256:" + "0" * 64, tmp_path / "d", volumes_root=volumes)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pvc://model-store/../etc", r"'\.\.' segments"),
        ("file://relative/path", "absolute path"),
        ("hf://meta-llama/Llama-3@abc123", "cannot be fetched yet"),
        ("ftp://host/x", "unsupported scheme"),
    ],
)
def test_malformed_and_unsupported_sources_are_refused(
    uri: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        fetch_model(uri, "sha256:" + "0" * 64, tmp_path / "d")


# The command line, as the init container runs it.


def test_cli_exit_code_3_and_the_file_named_on_a_mismatch(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    flip_byte(root / "model.safetensors")
    args = [
        "fetch",
        "--source",
        f"file://{root}",
        "--digest",
        digest,
        "--dest",
        str(tmp_path / "m"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_MODEL_REFUSED
    assert "model refused" in result.output
    assert "- model.safetensors: sha256" in result.output


def test_cli_prints_the_verified_folder(source: tuple[Path, str], tmp_path: Path) -> None:
    root, digest = source
    dest = tmp_path / "m"
    args = ["fetch", "--source", f"file://{root}", "--digest", digest, "--dest", str(dest)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(dest)


def test_cli_refuses_a_malformed_digest(tmp_path: Path) -> None:
    args = ["fetch", "--source", "file:///x", "--digest", "sha256:XYZ", "--dest", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "64 lower-case hex digits" in result.output


def test_cli_digest_prints_the_digest_and_ships_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "m"
    digest = publish(root)
    (root / MANIFEST_NAME).unlink()
    result = CliRunner().invoke(main, ["digest", str(root)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == digest
    assert build_manifest(root).digest == digest
    assert (root / MANIFEST_NAME).is_file()


def test_a_fresh_cache_volume_keeps_its_lost_and_found(
    source: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, digest = source
    dest = tmp_path / "pod" / "volume"
    (dest / "lost+found").mkdir(parents=True)
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == dest)
    fetch_model(f"file://{root}", digest, dest)
    assert (dest / "lost+found").is_dir()
    assert build_manifest(dest).digest == digest


def test_an_interrupted_commit_without_manifest_is_replaced(
    source: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = source
    dest = tmp_path / "cache" / "model"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("half of a commit")
    fetch_model(f"file://{root}", digest, dest)
    assert (dest / "config.json").read_bytes() == (root / "config.json").read_bytes()
