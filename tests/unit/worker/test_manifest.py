"""Digest manifests: canonical form, digest stability, and what counts as a model file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovereign_worker.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    build_manifest,
    hash_file,
    is_digest,
    list_model_files,
    path_problem,
    write_manifest,
)

pytestmark = pytest.mark.unit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
A = FileEntry("config.json", 2, hashlib.sha256(b"{}").hexdigest())
B = FileEntry("model.safetensors", 0, EMPTY_SHA256)


def make_model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_bytes(b"{}")
    (root / "model.safetensors").write_bytes(b"")
    (root / "sub" / "weights.bin").write_bytes(os.urandom(3 << 20))
    return root


def test_canonical_form_is_rfc8785_with_sorted_keys_and_no_whitespace() -> None:
    assert Manifest.of([B, A]).canonical_bytes() == (
        b'{"files":['
        b'{"path":"config.json","sha256":"' + A.sha256.encode() + b'","size":2},'
        b'{"path":"model.safetensors","sha256":"' + EMPTY_SHA256.encode() + b'","size":0}'
        b'],"format":"sovereign.dev/model-manifest/v1"}'
    )


def test_digest_is_the_sha256_of_the_canonical_bytes() -> None:
    manifest = Manifest.of([A, B])
    assert manifest.digest == "sha256:" + hashlib.sha256(manifest.canonical_bytes()).hexdigest()
    # A fixed value: changing the canonical form would change every published digest.
    assert manifest.digest == (
        "sha256:3fdc7cc2579452210029f82efff78b76dd3ec487808043718460e706f8343f20"
    )


def test_non_ascii_paths_are_written_as_utf8() -> None:
    entry = FileEntry("tokenizer/Größe.json", 1, EMPTY_SHA256)
    assert "tokenizer/Größe.json".encode() in Manifest.of([entry]).canonical_bytes()


@given(st.lists(st.sampled_from(["a", "b/c", "d.bin", "é", "z/y/x"]), unique=True))
def test_entry_order_never_changes_the_digest(paths: list[str]) -> None:
    entries = [FileEntry(p, 1, EMPTY_SHA256) for p in paths]
    assert Manifest.of(entries).digest == Manifest.of(reversed(entries)).digest


def test_unsorted_or_duplicate_entries_are_refused() -> None:
    with pytest.raises(ManifestError):
        Manifest((B, A))
    with pytest.raises(ManifestError):
        Manifest((A, A))


def test_any_json_layout_parses_to_the_same_digest() -> None:
    manifest = Manifest.of([A, B])
    pretty = json.dumps(json.loads(manifest.canonical_bytes()), indent=4).encode()
    assert Manifest.from_json(pretty).digest == manifest.digest


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "exactly 'format' and 'files'"),
        ({"format": "other/v9", "files": []}, "has format 'other/v9'"),
        ({"format": "sovereign.dev/model-manifest/v1", "files": {}}, "must be a list"),
        ({"format": "sovereign.dev/model-manifest/v1", "files": [{"path": "a"}]}, "exactly"),
    ],
)
def test_malformed_manifests_are_refused(document: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "../etc/passwd", "size": 1, "sha256": EMPTY_SHA256}, r"'\.\.'"),
        ({"path": "/etc/passwd", "size": 1, "sha256": EMPTY_SHA256}, "relative"),
        ({"path": "a//b", "size": 1, "sha256": EMPTY_SHA256}, "empty"),
        ({"path": "a\\b", "size": 1, "sha256": EMPTY_SHA256}, "POSIX"),
        ({"path": "a\nb", "size": 1, "sha256": EMPTY_SHA256}, "control"),
        ({"path": "a", "size": -1, "sha256": EMPTY_SHA256}, "non-negative"),
        ({"path": "a", "size": True, "sha256": EMPTY_SHA256}, "non-negative"),
        ({"path": "a", "size": 1, "sha256": EMPTY_SHA256.upper()}, "lower-case hex"),
        ({"path": "a", "size": 1, "sha256": "abc"}, "64"),
    ],
)
def test_entries_that_could_escape_or_lie_are_refused(
    entry: dict[str, object], message: str
) -> None:
    document = {"format": "sovereign.dev/model-manifest/v1", "files": [entry]}
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(json.dumps(document).encode())


@pytest.mark.parametrize("path", ["a", "a/b.json", "model-00001-of-00002.safetensors", ".hidden"])
def test_ordinary_paths_are_fine(path: str) -> None:
    assert path_problem(path) is None


def test_is_digest() -> None:
    assert is_digest("sha256:" + EMPTY_SHA256)
    assert not is_digest(EMPTY_SHA256)
    assert not is_digest("sha256:" + EMPTY_SHA256.upper())
    assert not is_digest("sha512:" + EMPTY_SHA256)


def test_hash_file_matches_hashlib_across_buffer_boundaries(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path) == (len(data), hashlib.sha256(data).hexdigest())
    assert hash_file(path, bytearray(4096)) == (len(data), hashlib.sha256(data).hexdigest())


def test_build_manifest_lists_every_file_with_its_hash(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m")
    manifest = build_manifest(root)
    assert [e.path for e in manifest.files] == [
        "config.json",
        "model.safetensors",
        "sub/weights.bin",
    ]
    weights = (root / "sub" / "weights.bin").read_bytes()
    assert manifest.by_path()["sub/weights.bin"] == FileEntry(
        "sub/weights.bin", len(weights), hashlib.sha256(weights).hexdigest()
    )


def test_the_digest_is_stable_across_runs_thread_counts_and_the_written_manifest(
    tmp_path: Path,
) -> None:
    root = make_model(tmp_path / "m")
    first = build_manifest(root, jobs=1)
    write_manifest(first, root / MANIFEST_NAME)
    assert build_manifest(root, jobs=4).digest == first.digest
    assert (root / MANIFEST_NAME).read_bytes() == first.canonical_bytes()
    assert (
        "sha256:" + hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest() == first.digest
    )


def test_the_same_bytes_elsewhere_have_the_same_digest(tmp_path: Path) -> None:
    one = make_model(tmp_path / "one")
    two = tmp_path / "two"
    (two / "sub").mkdir(parents=True)
    for path in ("config.json", "model.safetensors", "sub/weights.bin"):
        (two / path).write_bytes((one / path).read_bytes())
    assert build_manifest(one).digest == build_manifest(two).digest


def test_one_changed_byte_changes_the_digest(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m")
    before = build_manifest(root).digest
    (root / "config.json").write_bytes(b"{ ")
    assert build_manifest(root).digest != before


def test_links_to_files_are_read_through(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m")
    (root / "alias.bin").symlink_to("sub/weights.bin")
    entries = build_manifest(root).by_path()
    assert entries["alias.bin"].sha256 == entries["sub/weights.bin"].sha256


def test_links_outside_the_boundary_are_refused_naming_the_file(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m")
    (tmp_path / "secret").write_text("x")
    (root / "sub" / "leak.json").symlink_to(tmp_path / "secret")
    with pytest.raises(ManifestError, match=r"sub/leak\.json is a symbolic link to .*outside"):
        list_model_files(root, confine_to=root)
    # Without a boundary (a publisher's own machine) the link is simply read.
    assert "sub/leak.json" in build_manifest(root).by_path()


def test_links_to_folders_broken_links_and_special_files_are_refused(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m")
    (root / "dirlink").symlink_to(root / "sub")
    with pytest.raises(ManifestError, match="dirlink is a symbolic link to a folder"):
        list_model_files(root)
    (root / "dirlink").unlink()
    (root / "broken").symlink_to(root / "nowhere")
    with pytest.raises(ManifestError, match="broken is a broken or looping symbolic link"):
        list_model_files(root)
    (root / "broken").unlink()
    os.mkfifo(root / "pipe")
    with pytest.raises(ManifestError, match="pipe is not a regular file"):
        list_model_files(root)


def test_the_manifest_at_the_root_is_not_part_of_itself(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m")
    (root / MANIFEST_NAME).write_text("{}")
    (root / "sub" / MANIFEST_NAME).write_text("{}")
    paths = [item.path for item in list_model_files(root)]
    assert MANIFEST_NAME not in paths
    assert f"sub/{MANIFEST_NAME}" in paths
