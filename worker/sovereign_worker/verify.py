"""Proof that a folder holds exactly the model a digest names.

Two steps, cheapest first: the shipped manifest must hash to the digest, then the folder must
hold exactly the manifest's files (names and sizes, read from the directory without opening a
file) and finally every file's sha256 must match. Every failure names the files involved.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sovereign_worker.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    ManifestError,
    hash_files,
    list_model_files,
)

# A listing of a broken model can be long; the first ones say enough to act on.
MAX_PROBLEMS_SHOWN = 20


class VerificationError(Exception):
    """The bytes are not the model the digest names; `problems` names each file that differs."""

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.summary = summary
        self.problems = tuple(problems)
        shown = [f"\n  - {problem}" for problem in self.problems[:MAX_PROBLEMS_SHOWN]]
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"\n  - ... and {len(self.problems) - MAX_PROBLEMS_SHOWN} more")
        super().__init__(summary + "".join(shown))


def manifest_for_digest(data: bytes, digest: str, *, origin: str) -> Manifest:
    """Parse a shipped manifest and check that it is the one `digest` names."""
    try:
        manifest = Manifest.from_json(data, origin=origin)
    except ManifestError as error:
        raise VerificationError(str(error)) from None
    if manifest.digest != digest:
        raise VerificationError(
            f"{origin} hashes to {manifest.digest}, not to the expected {digest}: the manifest "
            "was changed, or belongs to another version of the model"
        )
    return manifest


def listing_problems(expected: Manifest, found: Mapping[str, int]) -> list[str]:
    """Missing, unexpected and wrong-size files: everything knowable without reading bytes."""
    wanted = expected.by_path()
    problems = [f"{path}: missing" for path in sorted(wanted.keys() - found.keys())]
    problems += [f"{path}: not in the manifest" for path in sorted(found.keys() - wanted.keys())]
    problems += [
        f"{path}: {found[path]} bytes, the manifest says {wanted[path].size}"
        for path in sorted(wanted.keys() & found.keys())
        if found[path] != wanted[path].size
    ]
    return problems


def content_problems(expected: Manifest, actual: Mapping[str, FileEntry]) -> list[str]:
    return [
        f"{entry.path}: sha256 {actual[entry.path].sha256} does not match the manifest's "
        f"{entry.sha256}"
        for entry in expected.files
        if actual[entry.path] != entry
    ]


def read_manifest_file(root: Path) -> bytes | None:
    """The manifest shipped in `root`, or None when there is none."""
    path = root / MANIFEST_NAME
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise VerificationError(f"{path} must be a regular file, not a link or special file")
    if info.st_size > MAX_MANIFEST_BYTES:
        raise VerificationError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    return path.read_bytes()


def verify_folder(
    root: Path,
    digest: str,
    *,
    confine_to: Path | None = None,
    jobs: int | None = None,
    on_done: Callable[[FileEntry], None] | None = None,
) -> Manifest:
    """Check that `root` holds exactly the model `digest` names; returns its manifest.

    Raises VerificationError naming every file that is missing, unexpected, of the wrong size
    or with the wrong sha256. Reads nothing outside `confine_to` when it is given.
    """
    try:
        files = list_model_files(root, confine_to=confine_to)
    except ManifestError as error:
        raise VerificationError(f"{root} cannot be verified: {error}") from None
    shipped = read_manifest_file(root)
    if shipped is None:
        # Without the manifest only the total can be compared, so the message cannot say
        # which file differs; it says how to make the next failure more useful.
        actual = Manifest.of(hash_files(files, jobs=jobs, on_done=on_done).values())
        if actual.digest != digest:
            raise VerificationError(
                f"{root} hashes to {actual.digest}, not to the expected {digest}",
                [
                    (
                        f"no {MANIFEST_NAME} was shipped with the model, so the differing file "
                        "cannot be named; run `sovereign-worker digest DIR` where the model is "
                        "prepared and ship the manifest it writes"
                    )
                ],
            )
        return actual
    expected = manifest_for_digest(shipped, digest, origin=str(root / MANIFEST_NAME))
    if problems := listing_problems(expected, {item.path: item.size for item in files}):
        raise VerificationError(f"{root} does not hold the files of {digest}", problems)
    actual_entries = hash_files(files, jobs=jobs, on_done=on_done)
    if problems := content_problems(expected, actual_entries):
        raise VerificationError(f"{root} does not hold the bytes of {digest}", problems)
    return expected
