"""Canonical JSON (RFC 8785) and the record hash.

`rfc8785` is the reference implementation and handles every input, but it is pure Python
and costs ~100 us per record; verifying a million-record log with it alone takes minutes.
For the inputs audit records almost always are (ASCII text, integers in the IEEE-754 safe
range, no floats) RFC 8785 and `json.dumps(sort_keys=True, separators=(",", ":"))`
produce the same bytes: keys are sorted by code unit, which for ASCII is byte order;
strings escape exactly `"`, `\\` and control characters (`\\b \\t \\n \\f \\r` short, the rest
as lowercase `\\u00xx`); integers print as themselves. Anything outside that subset (a
float, a non-ASCII character, a large integer) goes to `rfc8785`. A property test checks
the two agree on the subset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Final

import rfc8785

JsonValue = None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
"""A JSON value as Python holds it."""

HASH_PREFIX: Final = "sha256:"
# The largest integer IEEE-754 doubles represent exactly; RFC 8785 refuses larger ones.
SAFE_INTEGER: Final = 2**53 - 1


class NotCanonical(ValueError):
    """A value that has no RFC 8785 form (NaN, infinity, an unsafe integer, a lone surrogate)."""


def _needs_reference_encoder(value: object) -> bool:
    """True when the fast encoder might differ from RFC 8785 for this value.

    Exact type checks and an explicit stack, not isinstance and recursion: this runs for
    every record written and verified, and ABC checks dominated verify time.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if type(item) is int:
            if not -SAFE_INTEGER <= item <= SAFE_INTEGER:
                return True
        elif type(item) is dict:
            if any(type(key) is not str for key in item):
                return True
            stack.extend(item.values())
        elif type(item) is list or type(item) is tuple:
            stack.extend(item)
        else:
            return True  # floats; other mappings and sequences go to the reference encoder
    return False


def encode_subset(value: JsonValue) -> str:
    """The fast encoder; equals RFC 8785 when the result is ASCII and `value` holds no
    floats and no integers beyond 2**53 (the caller's responsibility)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: JsonValue) -> bytes:
    """The RFC 8785 canonical encoding of `value`, UTF-8."""
    if not _needs_reference_encoder(value):
        try:
            text = encode_subset(value)
        except TypeError as error:
            raise NotCanonical(str(error)) from None
        if text.isascii():
            return text.encode("ascii")
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as error:
        raise NotCanonical(str(error)) from None


def content_hash(canonical: bytes) -> str:
    """The `sha256:<hex>` digest of canonical bytes."""
    return HASH_PREFIX + hashlib.sha256(canonical).hexdigest()
