"""AuditTrail with the real file sink: durability, rotation, restarts, crashes, concurrency."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sovereign_operator.audit.chain import ChainError, read_tail
from sovereign_operator.audit.checkpoint import CheckpointPolicy, CheckpointReason
from sovereign_operator.audit.findings import VerifyResult
from sovereign_operator.audit.health import FailurePolicy
from sovereign_operator.audit.record import Action, Actor, ActorKind, AuditRecord, ObjectRef
from sovereign_operator.audit.segments import rotated_segments
from sovereign_operator.audit.sinks import AuditLockError, FileSink
from sovereign_operator.audit.trail import AuditTrail
from sovereign_operator.audit.verify import verify_files
from tests.unit.audit.logs import KEY, KEYS, parse

pytestmark = pytest.mark.unit

ALICE = Actor(ActorKind.ADMISSION, "alice", "u-1", ("devs",))
TARGET = ObjectRef("ModelDeployment", "llama", "clinical-ai", "uid-1", 1)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.log"


def open_trail(path: Path, **options: object) -> AuditTrail:
    settings: dict[str, object] = {
        "file_sink": FileSink(path),
        "signer": KEY,
        "checkpoints": CheckpointPolicy(every_records=5, every_seconds=3600),
    }
    settings.update(options)
    return AuditTrail(**settings)  # type: ignore[arg-type]


def all_files(path: Path) -> list[Path]:
    return [*rotated_segments(path), path]


def verify(path: Path, *, require_sealed: bool = True) -> VerifyResult:
    return verify_files(all_files(path), KEYS, require_sealed=require_sealed)


def lines(path: Path) -> list[bytes]:
    return [line for file in all_files(path) for line in file.read_bytes().splitlines()]


def test_a_record_is_on_disk_when_record_returns(log_path: Path) -> None:
    with open_trail(log_path) as trail:
        record = trail.record(ALICE, Action.CREATE, TARGET, reason="first")
        assert log_path.read_bytes().endswith(record.line)
        assert record.seq == 0
    assert verify(log_path).ok


def test_records_from_threads_and_coroutines_form_one_chain(log_path: Path) -> None:
    with open_trail(log_path) as trail:

        def from_thread(count: int) -> None:
            for _ in range(count):
                trail.record(ALICE, Action.PATCH, TARGET)

        async def from_coroutines(count: int) -> list[AuditRecord]:
            return await asyncio.gather(
                *(trail.arecord(ALICE, Action.SCALE, TARGET) for _ in range(count))
            )

        threads = [threading.Thread(target=from_thread, args=(25,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        records = asyncio.run(from_coroutines(50))
        for thread in threads:
            thread.join()
        assert len({r.seq for r in records}) == 50
    result = verify(log_path)
    assert result.ok, result.failure
    events = [parse(line) for line in lines(log_path) if b'"type":"event"' in line]
    assert len(events) == 150


def test_checkpoints_every_n_records_and_a_seal_at_close(log_path: Path) -> None:
    with open_trail(log_path) as trail:
        for _ in range(12):
            trail.record(ALICE, Action.APPLY, TARGET)
    reasons = [
        parse(line)["checkpoint"]["reason"] for line in lines(log_path) if b"checkpoint" in line
    ]
    assert reasons == ["periodic", "periodic", "seal"]


def test_checkpoints_after_t_seconds_even_when_idle(log_path: Path) -> None:
    now = [0.0]
    trail = open_trail(
        log_path,
        checkpoints=CheckpointPolicy(every_records=1000, every_seconds=30),
        monotonic=lambda: now[0],
    )
    try:
        trail.record(ALICE, Action.APPLY, TARGET)
        now[0] = 31.0  # no further record: the writer's idle tick signs the tail
        deadline = time.monotonic() + 5
        while trail.head.last_checkpoint_reason is not CheckpointReason.PERIODIC:
            assert time.monotonic() < deadline, "no time-based checkpoint"
            time.sleep(0.02)
    finally:
        trail.close()


def test_rotation_keeps_one_chain_and_every_rotated_file_ends_signed(log_path: Path) -> None:
    with open_trail(log_path, rotate_bytes=2000) as trail:
        for index in range(40):
            trail.record(ALICE, Action.PATCH, TARGET, reason=f"change {index}")
    segments = rotated_segments(log_path)
    assert len(segments) >= 3
    for segment in segments:
        last = read_tail(segment).last_line
        assert last is not None
        assert parse(last)["checkpoint"]["reason"] == "rotate"
        assert (
            int(segment.name.rsplit(".", 1)[1])
            == parse(segment.read_bytes().splitlines()[0])["seq"]
        )
    result = verify(log_path)
    assert result.ok, result.failure
    assert len(result.summary.files) == len(segments) + 1


def test_a_restart_continues_the_chain(log_path: Path) -> None:
    with open_trail(log_path) as trail:
        first = trail.record(ALICE, Action.CREATE, TARGET)
    with open_trail(log_path) as trail:
        assert trail.head.next_seq == first.seq + 2  # after the seal
        trail.record(ALICE, Action.DELETE, TARGET)
    assert verify(log_path).ok


def test_a_second_writer_is_refused(log_path: Path) -> None:
    with open_trail(log_path), pytest.raises(AuditLockError):
        FileSink(log_path).open()


def test_a_torn_last_line_is_quarantined_and_recorded(log_path: Path) -> None:
    with open_trail(log_path) as trail:
        trail.record(ALICE, Action.CREATE, TARGET)
    torn = b'{"action":"patch","actor":{"kind":"adm'
    with log_path.open("ab") as handle:
        handle.write(torn)
    before = verify(log_path)
    assert before.failure is not None
    assert before.failure.problem.value == "torn"
    with open_trail(log_path) as trail:
        trail.record(ALICE, Action.PATCH, TARGET)
    records = [parse(line) for line in lines(log_path)]
    recovery = next(r for r in records if r.get("action") == "audit-recover")
    assert recovery["details"]["sha256"] == "sha256:" + hashlib.sha256(torn).hexdigest()
    quarantine = log_path.parent / recovery["details"]["quarantine"]
    assert quarantine.read_bytes() == torn
    assert records[records.index(recovery) + 1]["checkpoint"]["reason"] == "resume"
    assert verify(log_path).ok


def test_a_tampered_head_is_not_continued(log_path: Path) -> None:
    with open_trail(log_path) as trail:
        trail.record(ALICE, Action.CREATE, TARGET)
    content = log_path.read_bytes()
    log_path.write_bytes(content.replace(b'"seal"', b'"sEal"'))
    with pytest.raises(ChainError, match="last record is not valid"):
        open_trail(log_path)


def test_an_interrupted_rotation_is_finished_on_start(log_path: Path) -> None:
    trail = open_trail(log_path)
    trail.record(ALICE, Action.CREATE, TARGET)
    trail.checkpoint(CheckpointReason.ROTATE)  # written, but not renamed as a rotation would
    trail.close()
    # close() sealed after it; cut the seal to leave the state a crash mid-rotation leaves
    kept = b"".join(log_path.read_bytes().splitlines(keepends=True)[:-1])
    log_path.write_bytes(kept)
    with open_trail(log_path) as trail:
        trail.record(ALICE, Action.PATCH, TARGET)
    assert [p.name for p in rotated_segments(log_path)] == ["audit.log.000000000000"]
    assert verify(log_path).ok


class FlakyDisk(FileSink):
    """A file sink whose disk is full for the first `failures` writes."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def write(self, records: Sequence[AuditRecord], *, rotate_after: bool = False) -> None:
        if self.failures:
            self.failures -= 1
            self._last_error = "disk full"
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(records, rotate_after=rotate_after)


def test_a_failing_disk_delays_records_but_loses_none(log_path: Path) -> None:
    sink = FlakyDisk(log_path, failures=3)
    with open_trail(log_path, file_sink=sink) as trail:
        record = trail.record(ALICE, Action.CREATE, TARGET)
        assert record.seq == 0
        assert trail.health().healthy
    assert verify(log_path).ok


def test_a_failing_sink_pauses_changes_only_under_the_pause_policy(log_path: Path) -> None:
    sink = FlakyDisk(log_path, failures=10**6)
    trail = open_trail(log_path, file_sink=sink, durable_timeout=0.3)
    try:
        with pytest.raises(Exception, match="not yet durable"):
            trail.record(ALICE, Action.CREATE, TARGET)
        health = trail.health()
        assert not health.healthy
        assert trail.should_pause_changes()
        condition = health.condition(observed_generation=3)
        assert (condition.type, condition.status, condition.reason) == (
            "AuditSinkHealthy",
            "False",
            "SinkFailing",
        )
        assert "disk full" in condition.message
        trail.failure_policy = FailurePolicy.CONTINUE
        assert not trail.should_pause_changes()
        sink.failures = 0  # the disk recovers: the queued record is written, in order
        deadline = time.monotonic() + 10
        while not trail.health().healthy:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        trail.close()
    assert verify(log_path).ok


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.name.startswith("audit")]
    assert not leaked, f"threads left running: {leaked}"
