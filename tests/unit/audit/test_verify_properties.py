"""For random logs: intact ones verify, and any single mutation fails at the right place.

"The right place" is the line a careful auditor would point at: the changed line for a
modified byte, the line that now sits where a record was deleted (or the line before it,
when the deleted record ended a file or the log), the inserted line or the one after it
(an inserted record that links correctly is only betrayed by its successor), the first
displaced line of a swap, the last intact line of a truncated log, the forged checkpoint.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sovereign_operator.audit.findings import Problem
from tests.unit.audit.logs import (
    ATTACKER,
    KEY,
    Log,
    build_log,
    events,
    failure_location,
    forged_event,
    parse,
    rechain,
    reseal,
    resign,
)

pytestmark = pytest.mark.unit

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def logs(draw: st.DrawFn, *, min_events: int = 2) -> Log:
    return build_log(
        draw(st.lists(events, min_size=min_events, max_size=14)),
        checkpoint_every=draw(st.integers(1, 6)),
        rotate_every=draw(st.none() | st.integers(3, 7)),
    )


@PROPERTY
@given(logs())
def test_intact_logs_verify(log: Log) -> None:
    result = log.verify()
    assert result.ok, result.failure
    flat = log.flat()
    assert result.summary.records == len(flat)
    assert result.summary.sealed
    assert result.summary.unsigned_tail == 0
    assert result.summary.last is not None
    assert result.summary.last.seq == len(flat) - 1


@PROPERTY
@given(logs(), st.data())
def test_any_byte_flip_fails_at_that_line(log: Log, data: st.DataObject) -> None:
    file_index = data.draw(st.integers(0, len(log.files) - 1))
    name, lines = log.files[file_index]
    assume(lines)
    line_index = data.draw(st.integers(0, len(lines) - 1))
    line = bytearray(lines[line_index])
    offset = data.draw(st.integers(0, len(line) - 1))
    line[offset] = data.draw(st.integers(0, 255).filter(lambda b: b != line[offset]))
    damaged = log.copy()
    damaged.files[file_index][1][line_index] = bytes(line)
    assert failure_location(damaged) == (name, line_index + 1)


@PROPERTY
@given(logs(), st.data())
def test_a_deleted_record_is_found_where_it_was(log: Log, data: st.DataObject) -> None:
    positions = log.positions()
    file_index, line_index = data.draw(st.sampled_from(positions))
    damaged = log.copy()
    lines = damaged.files[file_index][1]
    del lines[line_index]
    name = log.files[file_index][0]
    if line_index < len(lines):
        expected = {(name, line_index + 1)}  # the record that moved up into its place
    elif file_index + 1 < len(log.files) or line_index > 0:
        # It ended a file (a rotation checkpoint) or the log (the seal): the line before it
        # is now the end, which a rotated file or a sealed log must not end with.
        expected = {(name, line_index)} if line_index > 0 else {(name, 1)}
    else:
        expected = {(name, 1), (log.files[file_index - 1][0], len(log.files[file_index - 1][1]))}
    assert failure_location(damaged) in expected


@PROPERTY
@given(logs(), st.data())
def test_an_inserted_record_is_found_at_or_right_after_it(log: Log, data: st.DataObject) -> None:
    file_index = data.draw(st.integers(0, len(log.files) - 1))
    name, lines = log.files[file_index]
    at = data.draw(st.integers(0, len(lines)))
    if at:
        predecessor: bytes | None = lines[at - 1]
    else:
        earlier = [line for _, ls in log.files[:file_index] for line in ls]
        predecessor = earlier[-1] if earlier else None
    kind = data.draw(st.sampled_from(["copy", "forged-event", "forged-checkpoint"]))
    if kind == "copy":
        inserted = data.draw(st.sampled_from(log.flat()))
    elif kind == "forged-event":
        inserted = forged_event(predecessor, data.draw(events))
    else:
        template = parse(next(line for line in log.flat() if b'"type":"checkpoint"' in line))
        inserted = resign(
            template, ATTACKER, claim_key=data.draw(st.sampled_from([KEY.key_id, None]))
        )
    damaged = log.copy()
    damaged.files[file_index][1].insert(at, inserted)
    expected = {(name, at + 1), (name, at + 2)}
    if at == len(lines) and file_index + 1 < len(log.files):
        expected.add((log.files[file_index + 1][0], 1))
    assert failure_location(damaged) in expected


@PROPERTY
@given(logs(), st.data())
def test_swapped_records_are_found_at_the_first_displaced_line(
    log: Log, data: st.DataObject
) -> None:
    positions = log.positions()
    first, second = sorted(
        data.draw(st.lists(st.sampled_from(positions), min_size=2, max_size=2, unique=True))
    )
    flat = log.flat()
    i, j = positions.index(first), positions.index(second)
    flat[i], flat[j] = flat[j], flat[i]
    damaged = log.with_flat(flat)
    assert failure_location(damaged) == log.location(first)


@PROPERTY
@given(logs(), st.data())
def test_truncation_is_found_at_the_last_intact_line(log: Log, data: st.DataObject) -> None:
    file_index = data.draw(st.integers(0, len(log.files) - 1))
    name, lines = log.files[file_index]
    content = b"".join(lines)
    assume(content)
    cut = data.draw(st.integers(0, len(content) - 1))
    kept = content[:cut]
    damaged = Log([*log.copy().files[:file_index], (name, kept.splitlines(keepends=True))])
    complete = kept.count(b"\n")
    if not kept.endswith(b"\n") and kept:
        expected = {(name, complete + 1)}  # the torn line
    elif complete:
        expected = {(name, complete)}
    else:  # the file was cut to nothing: the previous file's end, or nothing at all
        expected = {(name, 0)}
        if file_index:
            previous_name, previous_lines = log.files[file_index - 1]
            expected = {(previous_name, len(previous_lines))}
    assert failure_location(damaged) in expected


@PROPERTY
@given(logs(), st.data())
def test_a_forged_checkpoint_is_found_at_that_checkpoint(log: Log, data: st.DataObject) -> None:
    flat = log.flat()
    checkpoints = [i for i, line in enumerate(flat) if parse(line)["type"] == "checkpoint"]
    index = data.draw(st.sampled_from(checkpoints))
    body = parse(flat[index])
    how = data.draw(st.sampled_from(["attacker-key", "claims-our-key", "edited-and-rehashed"]))
    if how == "attacker-key":
        flat[index] = resign(body, ATTACKER)
    elif how == "claims-our-key":
        flat[index] = resign(body, ATTACKER, claim_key=KEY.key_id)
    else:
        body["time"] = "2030-01-01T00:00:00.000000Z"
        flat[index] = reseal(body)
    damaged = log.with_flat(flat)
    result = damaged.verify()
    assert result.failure is not None
    assert result.failure.problem is Problem.BAD_CHECKPOINT
    assert (result.failure.location.file, result.failure.location.line) == log.location(
        log.positions()[index]
    )


@PROPERTY
@given(logs(), st.data())
def test_a_rewritten_and_rehashed_log_fails_at_the_next_checkpoint(
    log: Log, data: st.DataObject
) -> None:
    flat = log.flat()
    index = data.draw(st.integers(0, len(flat) - 1))
    body = parse(flat[index])
    body["reason"] = "rewritten by someone without the key"
    flat[index] = reseal(body)
    flat = rechain(flat, index)
    damaged = log.with_flat(flat)
    next_checkpoint = next(
        i for i in range(index, len(flat)) if parse(flat[i])["type"] == "checkpoint"
    )
    result = damaged.verify()
    assert result.failure is not None
    assert result.failure.problem is Problem.BAD_CHECKPOINT
    location = result.failure.location
    assert (location.file, location.line) == log.location(log.positions()[next_checkpoint])


@PROPERTY
@given(logs())
def test_every_line_is_canonical_json(log: Log) -> None:
    for line in log.flat():
        assert reseal(parse(line)) == line
