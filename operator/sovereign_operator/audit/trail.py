"""`AuditTrail`: the one object the operator records through.

    trail = AuditTrail.open(AuditConfig(file=Path("/var/lib/sovereign/audit/audit.log"),
                                        signing_key=Path("/etc/sovereign/audit-key/key.pem")))
    record = await trail.arecord(actor, Action.CREATE, ObjectRef.from_manifest(body),
                                 change=spec_diff(None, body["spec"]), audit_id=audit_id)
    if trail.should_pause_changes(): ...   # audit.failurePolicy: pause
    trail.close()                           # writes the seal checkpoint

Threads and coroutines may record concurrently. Sequence numbers and hashes are assigned
under a lock, in the order records are accepted; a writer thread then writes whatever has
queued as one batch with one fsync (group commit) and completes each caller's future, so
`record()` returns only once its record is on disk when a file sink is configured. The
forwarding sinks (stdout, syslog, HTTP) receive the same batch through their spools.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import tenacity

from sovereign_operator.audit.canonical import JsonValue
from sovereign_operator.audit.chain import Chain, ChainHead, first_seq, records_after
from sovereign_operator.audit.checkpoint import CheckpointPolicy, CheckpointReason, Signer
from sovereign_operator.audit.diff import FieldChange
from sovereign_operator.audit.forwarding import (
    Backoff,
    ForwardingSink,
    HttpSink,
    HttpTarget,
    StdoutSink,
    SyslogSink,
    SyslogTarget,
)
from sovereign_operator.audit.health import AuditHealth, FailurePolicy
from sovereign_operator.audit.record import (
    Action,
    Actor,
    ActorKind,
    AuditEvent,
    AuditRecord,
    ModelIdentity,
    ObjectRef,
    RecordType,
)
from sovereign_operator.audit.segments import rotated_segments
from sovereign_operator.audit.sinks import FileSink, TornTail

log = logging.getLogger(__name__)

_IDLE_TICK: Final = 0.2
_MAX_BATCH: Final = 4096
OPERATOR_ACTOR: Final = Actor(ActorKind.OPERATOR, "sovereign-operator")


class AuditUnavailable(RuntimeError):
    """A record was accepted but could not be made durable in time (the disk is failing)."""


@dataclass(frozen=True)
class AuditConfig:
    """Where records go and how they are signed; the operator builds this from its settings."""

    file: Path | None = None
    rotate_bytes: int | None = 64 * 1024 * 1024
    fsync: bool = True
    stdout: bool = False
    syslog: SyslogTarget | None = None
    http: HttpTarget | None = None
    spool_dir: Path | None = None
    """Where forwarding sinks spool; defaults to `spool/` next to the file."""
    signing_key: Path | None = None
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    failure_policy: FailurePolicy = FailurePolicy.PAUSE
    backoff: Backoff = field(default_factory=Backoff)
    durable_timeout: float = 30.0


@dataclass
class _Queued:
    record: AuditRecord
    rotate_after: bool
    done: Future[AuditRecord]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _files_from(active: Path, seq: int) -> list[Path]:
    """The log files, in chain order, from the one holding `seq` to the active one."""
    files: list[Path] = []
    for path in [active, *reversed(rotated_segments(active))]:
        if path.exists():
            files.insert(0, path)
            start = first_seq(path)
            if start is not None and start <= seq:
                break
    return files


def _event(
    actor: Actor,
    action: Action | str,
    obj_ref: ObjectRef | None,
    *,
    change: Sequence[FieldChange],
    reason: str,
    model: ModelIdentity | None,
    outcome: str | None,
    audit_id: str | None,
    details: Mapping[str, JsonValue] | None,
) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action=str(action),
        object=obj_ref,
        change=tuple(change),
        model=model,
        reason=reason,
        outcome=outcome,
        audit_id=audit_id,
        details=dict(details or {}),
    )


class AuditTrail:
    """Record audit events to every configured sink, chained and checkpointed."""

    def __init__(
        self,
        *,
        file_sink: FileSink | None,
        forwarders: Sequence[ForwardingSink] = (),
        signer: Signer | None = None,
        checkpoints: CheckpointPolicy | None = None,
        failure_policy: FailurePolicy = FailurePolicy.PAUSE,
        rotate_bytes: int | None = None,
        durable_timeout: float = 30.0,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        on_checkpoint: Callable[[AuditRecord], None] | None = None,
    ) -> None:
        if rotate_bytes is not None and signer is None:
            raise ValueError("rotation needs a signing key: every rotated file ends signed")
        self._file = file_sink
        self._forwarders = tuple(forwarders)
        self._policy = checkpoints or CheckpointPolicy()
        self.failure_policy = failure_policy
        self._rotate_bytes = rotate_bytes
        self._durable_timeout = durable_timeout
        self._clock = clock
        self._monotonic = monotonic
        self.on_checkpoint = on_checkpoint
        """Called (on the writer thread) with each durable checkpoint, e.g. to publish it
        to the ConfigMap as an anchor. Must not block for long."""
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()  # None: stop
        self._closed = False
        self._broken = False
        try:
            opened = file_sink.open() if file_sink else None
        except Exception:
            for sink in self._forwarders:
                sink.close(0)
            raise
        self._chain = Chain(opened.head if opened else ChainHead(), signer)
        self._segment_bytes = file_sink.size if file_sink else 0
        self._last_checkpoint_at = monotonic()
        if opened is not None and file_sink is not None:
            self._catch_up(file_sink, opened.head)
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._writer.start()
        self._resume(opened.head if opened else ChainHead(), opened.torn if opened else None)

    @classmethod
    def open(
        cls,
        config: AuditConfig,
        *,
        signer: Signer | None = None,
        on_checkpoint: Callable[[AuditRecord], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> AuditTrail:
        """Build the sinks a config names and continue the chain where the log left off.

        `signer`: a key loaded elsewhere (e.g. read from a Secret); else `config.signing_key`.
        """
        if signer is None and config.signing_key:
            signer = Signer.from_file(config.signing_key)
        if signer is None:
            log.warning("audit: no signing key; records are chained but never signed or rotated")
        spool = config.spool_dir or (config.file.parent / "spool" if config.file else None)
        forwarders: list[ForwardingSink] = []
        wanted = (config.stdout, config.syslog, config.http)
        if any(wanted) and spool is None:
            raise ValueError("forwarding sinks need spool_dir when no file sink is configured")
        if spool is not None:
            if config.stdout:
                forwarders.append(StdoutSink(spool, backoff=config.backoff))
            if config.syslog:
                forwarders.append(SyslogSink(config.syslog, spool, backoff=config.backoff))
            if config.http:
                forwarders.append(HttpSink(config.http, spool, backoff=config.backoff))
        return cls(
            file_sink=FileSink(config.file, fsync=config.fsync) if config.file else None,
            forwarders=forwarders,
            signer=signer,
            checkpoints=config.checkpoints,
            failure_policy=config.failure_policy,
            rotate_bytes=config.rotate_bytes if config.file and signer else None,
            durable_timeout=config.durable_timeout,
            clock=clock,
            monotonic=monotonic,
            on_checkpoint=on_checkpoint,
        )

    @property
    def head(self) -> ChainHead:
        with self._lock:
            return self._chain.head

    def record(
        self,
        actor: Actor,
        action: Action | str,
        obj_ref: ObjectRef | None = None,
        *,
        change: Sequence[FieldChange] = (),
        reason: str = "",
        model: ModelIdentity | None = None,
        outcome: str | None = None,
        audit_id: str | None = None,
        details: Mapping[str, JsonValue] | None = None,
    ) -> AuditRecord:
        """Record one event; returns once it is durable (on disk, when a file sink is set)."""
        event = _event(
            actor,
            action,
            obj_ref,
            change=change,
            reason=reason,
            model=model,
            outcome=outcome,
            audit_id=audit_id,
            details=details,
        )
        return self._wait(self._submit(event))

    async def arecord(
        self,
        actor: Actor,
        action: Action | str,
        obj_ref: ObjectRef | None = None,
        *,
        change: Sequence[FieldChange] = (),
        reason: str = "",
        model: ModelIdentity | None = None,
        outcome: str | None = None,
        audit_id: str | None = None,
        details: Mapping[str, JsonValue] | None = None,
    ) -> AuditRecord:
        """`record()` for coroutines: the event loop keeps running while the disk flushes."""
        event = _event(
            actor,
            action,
            obj_ref,
            change=change,
            reason=reason,
            model=model,
            outcome=outcome,
            audit_id=audit_id,
            details=details,
        )
        return await self.arecord_event(event)

    async def arecord_event(self, event: AuditEvent) -> AuditRecord:
        """`arecord()` for an event built elsewhere (e.g. by the operator's audit hooks)."""
        done = self._submit(event)
        try:
            # shield: a cancelled caller must not cancel the write of a chained record.
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(done)), self._durable_timeout
            )
        except TimeoutError:
            raise self._unavailable() from None

    def checkpoint(self, reason: CheckpointReason = CheckpointReason.PERIODIC) -> AuditRecord:
        """Sign the chain now (e.g. before a planned handover); waits until durable."""
        with self._lock:
            done = self._enqueue_checkpoint(reason)
        return self._wait(done)

    def health(self) -> AuditHealth:
        sinks = [self._file.health()] if self._file else []
        sinks += [sink.health() for sink in self._forwarders]
        return AuditHealth(tuple(sinks), self.failure_policy)

    def should_pause_changes(self) -> bool:
        """True while a sink fails and `audit.failurePolicy` is `pause`."""
        return self.failure_policy is FailurePolicy.PAUSE and not self.health().healthy

    def close(self, drain_timeout: float = 5.0) -> None:
        """Seal the log, write what is queued, give forwarders time to deliver, release the file."""
        with self._lock:
            if self._closed:
                return
            head = self._chain.head
            if (
                self._chain.signs
                and not head.is_empty
                and head.last_checkpoint_reason is not CheckpointReason.SEAL
            ):
                self._enqueue_checkpoint(CheckpointReason.SEAL)
            self._closed = True
            self._queue.put(None)
        self._writer.join()
        for sink in self._forwarders:
            sink.close(drain_timeout)
        if self._file:
            self._file.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _catch_up(self, file_sink: FileSink, head: ChainHead) -> None:
        """Forward what a crash left in the log but not in a forwarder's spool.

        A batch reaches the file first and the spools after; a process killed in between
        leaves records only the file holds. Each spool notes the last seq it accepted.
        """
        for sink in self._forwarders:
            through = sink.spooled_through()
            if through is None or through >= head.next_seq - 1:
                continue
            missing = records_after(_files_from(file_sink.path, through + 1), through)
            log.warning(
                "audit: re-forwarding %d records to %s after a crash", len(missing), sink.name
            )
            sink.submit(missing)

    # -- accepting records (under the lock) ------------------------------------------

    def _resume(self, head: ChainHead, torn: TornTail | None) -> None:
        """After a restart: record a torn tail that was set aside, and sign an unsigned tail."""
        with self._lock:
            if torn is not None:
                event = AuditEvent(
                    OPERATOR_ACTOR,
                    Action.AUDIT_RECOVER,
                    reason=(
                        f"an incomplete record ({torn.size} bytes at offset {torn.offset}) was "
                        f"found at start-up after a crash and moved to {torn.quarantine}"
                    ),
                    details={
                        "bytes": torn.size,
                        "sha256": torn.sha256,
                        "quarantine": torn.quarantine,
                    },
                )
                self._enqueue(self._chain.append(event, self._clock()))
            unsigned = torn is not None or (
                not head.is_empty and head.last_checkpoint_reason is None
            )
            if unsigned and self._chain.signs:
                self._enqueue_checkpoint(CheckpointReason.RESUME)

    def _submit(self, event: AuditEvent) -> Future[AuditRecord]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit trail is closed")
            done = self._enqueue(self._chain.append(event, self._clock()))
            if self._rotate_bytes is not None and self._segment_bytes >= self._rotate_bytes:
                self._enqueue_checkpoint(CheckpointReason.ROTATE)
            elif self._checkpoint_due():
                self._enqueue_checkpoint(CheckpointReason.PERIODIC)
        return done

    def _checkpoint_due(self) -> bool:
        elapsed = self._monotonic() - self._last_checkpoint_at
        return self._chain.signs and self._policy.due(self._chain.records_since_checkpoint, elapsed)

    def _enqueue_checkpoint(self, reason: CheckpointReason) -> Future[AuditRecord]:
        record = self._chain.checkpoint(reason, self._clock())
        self._last_checkpoint_at = self._monotonic()
        rotate = reason is CheckpointReason.ROTATE
        done = self._enqueue(record, rotate_after=rotate)
        if rotate:
            self._segment_bytes = 0
        return done

    def _enqueue(self, record: AuditRecord, *, rotate_after: bool = False) -> Future[AuditRecord]:
        done: Future[AuditRecord] = Future()
        self._segment_bytes += len(record.line)
        self._queue.put(_Queued(record, rotate_after, done))
        return done

    def _wait(self, done: Future[AuditRecord]) -> AuditRecord:
        try:
            return done.result(timeout=self._durable_timeout)
        except TimeoutError:
            raise self._unavailable() from None

    def _unavailable(self) -> AuditUnavailable:
        problems = "; ".join(s.last_error for s in self.health().sinks if s.last_error)
        return AuditUnavailable(
            f"the audit record was accepted but is not yet durable after "
            f"{self._durable_timeout:.0f}s ({problems or 'writer busy'}); it stays queued in order"
        )

    # -- writing (the writer thread) -------------------------------------------------

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=_IDLE_TICK)
            except queue.Empty:
                self._checkpoint_if_idle()
                continue
            batch: list[_Queued] = []
            while item is not None:
                batch.append(item)
                if item.rotate_after or len(batch) >= _MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            if batch:
                self._write_batch(batch)

    def _checkpoint_if_idle(self) -> None:
        with self._lock:
            if not self._closed and self._checkpoint_due():
                self._enqueue_checkpoint(CheckpointReason.PERIODIC)

    def _write_batch(self, batch: list[_Queued]) -> None:
        records = [item.record for item in batch]
        if self._file is not None:
            try:
                self._write_file(self._file, records, rotate_after=batch[-1].rotate_after)
            except OSError as error:
                # Only reached while closing: what is not on disk must not be acknowledged,
                # and nothing after it may be written, or the file would have a gap.
                self._broken = True
                for item in batch:
                    item.done.set_exception(AuditUnavailable(f"not written: {error}"))
                return
        for sink in self._forwarders:
            sink.submit(records)
        for item in batch:
            item.done.set_result(item.record)
            if item.record.type is RecordType.CHECKPOINT and self.on_checkpoint is not None:
                try:
                    self.on_checkpoint(item.record)
                except Exception:
                    log.exception("audit on_checkpoint hook failed")

    def _write_file(
        self, sink: FileSink, records: list[AuditRecord], *, rotate_after: bool
    ) -> None:
        """Write, retrying while the disk refuses: a chained record cannot be skipped.

        Callers wait (up to durable_timeout, then AuditUnavailable) and the file sink
        reports unhealthy meanwhile; only a close gives up, after durable_timeout.
        """
        if self._broken:
            raise OSError("an earlier batch could not be written")
        started = self._monotonic()
        tenacity.Retrying(
            wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.05),
            retry=tenacity.retry_if_exception_type(OSError),
            stop=lambda _state: (
                self._closed and self._monotonic() - started > self._durable_timeout
            ),
            before_sleep=lambda state: log.error(
                "audit file write failed, retrying: %s",
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )(sink.write, records, rotate_after=rotate_after)
