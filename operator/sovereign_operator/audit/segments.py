"""How a rotated log is laid out on disk, and how to put its files back in chain order.

The active file keeps the configured name (`audit.log`); a rotated file is renamed to
`audit.log.<first seq, 12 digits>`, so names sort in chain order and `audit.log*` in a
shell names the whole chain. Files that are not part of the chain stay out of that glob:
the writer's lock is `.audit.log.lock` and quarantined torn tails are `torn-audit.log-*`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

SEQ_DIGITS: Final = 12
_SEGMENT_NAME: Final = re.compile(rf"^(.+)\.(\d{{{SEQ_DIGITS},}})$")


def segment_path(active: Path, first_seq: int) -> Path:
    """Where the active file goes when rotated, named by its first record's seq."""
    return active.with_name(f"{active.name}.{first_seq:0{SEQ_DIGITS}d}")


def lock_path(active: Path) -> Path:
    return active.with_name(f".{active.name}.lock")


def quarantine_path(active: Path, offset: int, digest: str) -> Path:
    """Named by offset and content, so a second crash at the same offset keeps both."""
    return active.with_name(f"torn-{active.name}-{offset}-{digest.removeprefix('sha256:')[:12]}")


def rotated_segments(active: Path) -> list[Path]:
    """The rotated files of `active`, oldest first."""
    if not active.parent.is_dir():
        return []
    found = []
    for candidate in active.parent.iterdir():
        base, seq = _split(candidate)
        if base == active.name and seq is not None and candidate.is_file():
            found.append((seq, candidate))
    return [path for _, path in sorted(found)]


def _split(path: Path) -> tuple[str, int | None]:
    match = _SEGMENT_NAME.match(path.name)
    return (match[1], int(match[2])) if match else (path.name, None)


def chain_order(paths: Sequence[Path]) -> list[Path]:
    """Files in chain order: by the naming convention when every name follows it for one
    base name (segments by seq, the active file last), otherwise as given.

    Ordering by name rather than by content keeps a damaged first line from moving a
    file to the wrong place, which would report the damage somewhere else.
    """
    split = [_split(path) for path in paths]
    if len({(path.parent, base) for path, (base, _) in zip(paths, split, strict=True)}) != 1:
        return list(paths)
    ranked = sorted(
        zip(paths, split, strict=True),
        key=lambda item: (item[1][1] is None, item[1][1] or 0),
    )
    return [path for path, _ in ranked]
