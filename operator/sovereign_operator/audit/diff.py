"""A small JSON diff for audit records: which paths of a spec changed, from what, to what.

jsonpatch exists, but RFC 6902 operations say how to *transform* one document into the
other (with moves and list indices that shift as you apply them); an auditor wants the
opposite view: each changed field with its value before and after, named the way
`kubectl explain` names it (`spec.scaling.maxReplicas`). Lists of equal length are
compared item by item; lists that grew or shrank are reported whole, because item-level
changes of a shifted list are noise, not evidence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeGuard

from sovereign_operator.audit.canonical import JsonValue

_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Absent:
    """Marks a side of a change where the field does not exist (distinct from null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


@dataclass(frozen=True)
class FieldChange:
    """One changed field: its path and its value before and after (ABSENT when missing)."""

    path: str
    old: JsonValue | _Absent = ABSENT
    new: JsonValue | _Absent = ABSENT

    def to_wire(self) -> dict[str, JsonValue]:
        """`{"path", "old"?, "new"?}`; a missing side is left out rather than written null."""
        wire: dict[str, JsonValue] = {"path": self.path}
        if not isinstance(self.old, _Absent):
            wire["old"] = self.old
        if not isinstance(self.new, _Absent):
            wire["new"] = self.new
        return wire


def child_path(parent: str, key: str) -> str:
    """`spec.model` + `source`; keys that are not identifiers (label keys) are bracketed."""
    if _PLAIN_KEY.match(key):
        return f"{parent}.{key}" if parent else key
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{parent}["{escaped}"]'


def _same(old: JsonValue, new: JsonValue) -> bool:
    # Python says True == 1 and 1 == 1.0; JSON documents that differ that way did change.
    if type(old) is not type(new):
        return False
    return old == new


def json_diff(old: JsonValue | _Absent, new: JsonValue | _Absent, path: str) -> list[FieldChange]:
    """Every leaf-level difference between two JSON documents, in key order."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[FieldChange] = []
        for key in sorted(set(old) | set(new)):
            changes += json_diff(old.get(key, ABSENT), new.get(key, ABSENT), child_path(path, key))
        return changes
    if _is_list(old) and _is_list(new) and len(old) == len(new):
        changes = []
        for index, (old_item, new_item) in enumerate(zip(old, new, strict=True)):
            changes += json_diff(old_item, new_item, f"{path}[{index}]")
        return changes
    if isinstance(old, _Absent) and isinstance(new, _Absent):
        return []
    if isinstance(old, _Absent) or isinstance(new, _Absent) or not _same(old, new):
        return [FieldChange(path, old, new)]
    return []


def _is_list(value: object) -> TypeGuard[Sequence[JsonValue]]:
    return isinstance(value, Sequence) and not isinstance(value, str)


def spec_diff(
    old: Mapping[str, JsonValue] | None, new: Mapping[str, JsonValue] | None
) -> tuple[FieldChange, ...]:
    """The change to a resource's spec: a create shows the whole new spec, a delete the old one."""
    if old is None and new is None:
        return ()
    if old is None or new is None:
        return (
            FieldChange("spec", ABSENT if old is None else old, ABSENT if new is None else new),
        )
    return tuple(json_diff(old, new, "spec"))
