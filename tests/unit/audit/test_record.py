"""Canonical JSON, the spec diff, and the record model."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from sovereign_operator.audit.canonical import NotCanonical, canonical_json
from sovereign_operator.audit.diff import ABSENT, FieldChange, json_diff, spec_diff
from sovereign_operator.audit.record import (
    GENESIS_HASH,
    Actor,
    ActorKind,
    AuditEvent,
    LineProblem,
    ObjectRef,
    RecordType,
    chain_fields,
    decode_line,
    format_time,
    seal_record,
)
from tests.unit.audit.logs import json_values

pytestmark = pytest.mark.unit


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_canonical_json_is_rfc8785(value: Any) -> None:
    # The fast path must produce exactly the reference bytes, whatever the input.
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), {"big": 2**60}, {"lone": "\ud800"}, {1: "non-string key"}]
)
def test_values_without_a_canonical_form_are_refused(value: Any) -> None:
    with pytest.raises(NotCanonical):
        canonical_json(value)


# -- diff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"replicas": 1}, {"replicas": 2}, [("spec.replicas", 1, 2)]),
        ({"replicas": 1}, {"replicas": 1}, []),
        ({"a": True}, {"a": 1}, [("spec.a", True, 1)]),  # True == 1 in Python, not in JSON
        ({"a": 1}, {"a": 1.0}, [("spec.a", 1, 1.0)]),
        ({}, {"model": {"digest": "d"}}, [("spec.model", ABSENT, {"digest": "d"})]),
        ({"model": {"digest": "d"}}, {"model": {}}, [("spec.model.digest", "d", ABSENT)]),
        ({"a": None}, {}, [("spec.a", None, ABSENT)]),  # null and missing differ
        ({"args": ["--x", "1"]}, {"args": ["--x", "2"]}, [("spec.args[1]", "1", "2")]),
        ({"args": ["--x"]}, {"args": ["--x", "2"]}, [("spec.args", ["--x"], ["--x", "2"])]),
        (
            {"placement": {"residency": {"node-restriction.kubernetes.io/region": "eu"}}},
            {"placement": {"residency": {"node-restriction.kubernetes.io/region": "us"}}},
            [('spec.placement.residency["node-restriction.kubernetes.io/region"]', "eu", "us")],
        ),
    ],
)
def test_spec_diff_lists_changed_paths_with_old_and_new(
    old: dict[str, Any], new: dict[str, Any], expected: list[tuple[str, Any, Any]]
) -> None:
    assert spec_diff(old, new) == tuple(FieldChange(p, o, n) for p, o, n in expected)


def test_create_and_delete_carry_the_whole_spec() -> None:
    spec = {"model": {"source": "pvc://m/a"}}
    assert spec_diff(None, spec) == (FieldChange("spec", ABSENT, spec),)
    assert spec_diff(spec, None) == (FieldChange("spec", spec, ABSENT),)
    assert spec_diff(None, None) == ()
    assert FieldChange("spec", ABSENT, spec).to_wire() == {"path": "spec", "new": spec}


_TOKEN = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]')


def _apply(document: Any, changes: list[FieldChange]) -> Any:
    """Rebuild the new document from the old one and the diff (the diff's inverse)."""
    root: dict[str, Any] = {"spec": document}
    for change in changes:
        tokens: list[str | int] = ["spec"]
        for name, quoted, index in _TOKEN.findall(change.path[len("spec") :]):
            tokens.append(
                int(index) if index else name or quoted.replace('\\"', '"').replace("\\\\", "\\")
            )
        parent: Any = root
        for token in tokens[:-1]:
            parent = parent[token]
        if change.new is ABSENT:
            del parent[tokens[-1]]
        else:
            parent[tokens[-1]] = change.new
    return root["spec"]


object_trees = st.dictionaries(
    st.sampled_from(["a", "b", "node.io/x", 'q"uote']), json_values, max_size=4
)


@settings(max_examples=100, deadline=None)
@given(object_trees, object_trees)
def test_applying_the_diff_to_old_gives_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    changes = json_diff(old, new, "spec")
    assert rfc8785.dumps(_apply(copy.deepcopy(old), changes)) == rfc8785.dumps(new)
    assert len({c.path for c in changes}) == len(changes)


# -- records ---------------------------------------------------------------------------


def test_actor_from_admission_user_info_leaves_extra_out() -> None:
    actor = Actor.from_user_info(
        ActorKind.ADMISSION,
        {"username": "alice", "uid": "u-1", "groups": ["devs"], "extra": {"token-id": ["x"]}},
    )
    assert actor == Actor(ActorKind.ADMISSION, "alice", "u-1", ("devs",))
    assert actor.to_wire() == {
        "kind": "admission",
        "username": "alice",
        "uid": "u-1",
        "groups": ["devs"],
    }


def test_object_ref_from_manifest() -> None:
    manifest = {
        "kind": "ModelDeployment",
        "metadata": {"name": "llama", "namespace": "ns", "uid": "abc", "generation": 4},
    }
    assert ObjectRef.from_manifest(manifest) == ObjectRef(
        "ModelDeployment", "llama", "ns", "abc", 4
    )
    assert ObjectRef.from_manifest(
        {"kind": "ModelPolicy", "metadata": {"name": "p"}}
    ).to_wire() == {
        "kind": "ModelPolicy",
        "name": "p",
    }


def test_an_event_leaves_empty_fields_out() -> None:
    event = AuditEvent(Actor(ActorKind.OPERATOR, "op"), "scale", details={"from": 1, "to": 2})
    assert event.to_wire() == {
        "actor": {"kind": "operator", "username": "op"},
        "action": "scale",
        "details": {"from": 1, "to": 2},
    }


def test_time_is_utc_with_microseconds() -> None:
    moment = datetime(2025, 1, 31, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(moment) == "2025-01-31T09:00:00.000005Z"
    with pytest.raises(ValueError, match="timezone"):
        format_time(datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


def _line() -> bytes:
    body = chain_fields(0, datetime(2025, 1, 1, tzinfo=UTC), RecordType.EVENT, GENESIS_HASH)
    body.update(AuditEvent(Actor(ActorKind.OPERATOR, "op"), "apply").to_wire())
    return seal_record(body).line[:-1]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda line: line, None),
        (lambda line: line.replace(b'"apply"', b'"patch"'), LineProblem.HASH_MISMATCH),
        (lambda line: line.replace(b'"action":', b'"action" :'), LineProblem.NOT_CANONICAL),
        (lambda line: line.replace(b'"v":1', b'"v":2'), LineProblem.MALFORMED),
        (lambda line: line.replace(b'"seq":0', b'"seq":"0"'), LineProblem.MALFORMED),
        (lambda line: line[:-1], LineProblem.MALFORMED),
        (lambda _line: b"[]", LineProblem.MALFORMED),
        (lambda line: b"\xff" + line, LineProblem.MALFORMED),
    ],
)
def test_decode_line_names_what_is_wrong(mutate: Any, problem: LineProblem | None) -> None:
    assert decode_line(mutate(_line())).problem == problem


def test_a_body_with_its_own_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="own hash"):
        seal_record({"hash": "x"})


@pytest.mark.parametrize(
    "details",
    [
        {"n": 2.0**53},  # written as 9007199254740992, read back as an int
        {"n": 2.0**53, "f": 1.5},  # the same next to a float (the reference encoder's path)
        {"n": -0.0, "e": 1e21, "small": 1e-7},
        {"name": "Zoë", "emoji": "\U0001f600", "ctl": "\x01\n"},
        {"max": 2**53 - 1, "min": -(2**53) + 1},
    ],
)
def test_every_record_the_writer_produces_decodes(details: dict[str, Any]) -> None:
    body = chain_fields(0, datetime(2025, 1, 1, tzinfo=UTC), RecordType.EVENT, GENESIS_HASH)
    body.update(AuditEvent(Actor(ActorKind.OPERATOR, "op"), "scale", details=details).to_wire())
    decoded = decode_line(seal_record(body).line[:-1])
    assert decoded.problem is None, decoded.detail
