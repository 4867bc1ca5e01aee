"""What the kopf handlers share: one reconcile per ModelDeployment at a time, coalesced
watch-driven passes, orderly deletion, events and metrics.

kopf runs each object's handlers one at a time, but a ModelDeployment is also reconciled
from its children's and pods' watch events, which kopf handles in their own workers. A
per-deployment lock keeps those passes from overlapping, and a burst of child events (a
Deployment's status moves several times while its pod starts) collapses into one pass that
runs after the current one: enough to stay level-based without a pass per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sovereign_operator.actions import Apply, Prune, Written
from sovereign_operator.hooks import DeploymentKey, Hooks, OperatorAction
from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.observe import WORKLOAD_KINDS, ChildRef, ObservedChild
from sovereign_operator.reconcile import (
    ChildWriter,
    Observation,
    Outcome,
    ReconcileContext,
    StatusMemo,
    reconcile,
)
from sovereign_operator.settings import OperatorConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Long enough to gather one change's burst of watch events, short against a rollout.
NUDGE_SETTLE_SECONDS = 0.3


EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
"""(ModelDeployment body, Normal|Warning, reason, message) -> queue a Kubernetes Event."""


class Coalescer:
    """Per-key mutual exclusion; a nudge while a pass runs is kept and run right after it.

    Only the latest nudge per key is kept (it reads the state as it is when it runs), and
    whichever pass holds the key's lock runs it before letting go, so a change that arrives
    during any pass, watch-driven or a kopf handler's, is never dropped. A nudge also waits
    `settle` seconds before its pass, so the burst of watch events one change causes (a
    Deployment created, then its status updated as its ReplicaSet and pod appear) is
    handled by one pass instead of one per event.
    """

    def __init__(self, settle: float = 0.0) -> None:
        self.settle = settle
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._pending: dict[Hashable, Callable[[], Awaitable[object]]] = {}

    def _enter(self, key: Hashable) -> asyncio.Lock:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        return lock

    def _leave(self, key: Hashable) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def busy(self, key: Hashable) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    async def _drain(self, key: Hashable) -> None:
        while (job := self._pending.pop(key, None)) is not None:
            await job()

    async def run(self, key: Hashable, job: Callable[[], Awaitable[T]]) -> T:
        """Run `job` exclusively for `key` and return its result."""
        lock = self._enter(key)
        try:
            async with lock:
                # This pass reads the latest state, which covers what a waiting nudge wanted.
                self._pending.pop(key, None)
                result = await job()
                await self._drain(key)
                return result
        finally:
            self._leave(key)

    async def nudge(self, key: Hashable, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` for `key` now, or right after the pass already running.

        `job` must handle its own errors: it may run inside another caller's `run`.
        """
        self._pending[key] = job
        if self.busy(key):
            return
        lock = self._enter(key)
        try:
            async with lock:
                if self.settle:
                    await asyncio.sleep(self.settle)
                await self._drain(key)
        finally:
            self._leave(key)


Lookup = Callable[[str, str], tuple[Mapping[str, Any] | None, Observation]]
"""(namespace, name) -> (the ModelDeployment as last seen, its observation)."""


@dataclass
class Runtime:
    """The operator's state and the three entry points handlers call."""

    config: OperatorConfig
    writer: ChildWriter
    metrics: OperatorMetrics
    hooks: Hooks = field(default_factory=Hooks)
    post_event: EventPoster = lambda *_: None
    coalescer: Coalescer = field(default_factory=lambda: Coalescer(settle=NUDGE_SETTLE_SECONDS))
    written: dict[ChildRef, Written] = field(default_factory=dict)
    statuses: dict[tuple[str, str], StatusMemo] = field(default_factory=dict)
    rendered: dict[tuple[str, str], Any] = field(default_factory=dict)
    lookup: Lookup | None = None
    """Reads the handlers' live indexes; set by the handlers once kopf has filled them.
    Passes that no watch event starts (deadlines, audit health) go through it."""

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.config.reconcile_concurrency)
        self._waiting = 0
        self._last_done = time.monotonic()
        self._wakes: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._woken: set[asyncio.Task[None]] = set()

    def context(self) -> ReconcileContext:
        return ReconcileContext(
            writer=self.writer,
            options=self.config.render_options(),
            hooks=self.hooks,
            default_image=self.config.engine_image,
            written=self.written,
            statuses=self.statuses,
            rendered=self.rendered,
        )

    def child_deleted(self, ref: ChildRef) -> None:
        """A child's DELETED event: it is really gone, so the next pass recreates it."""
        self.written.pop(ref, None)

    def is_echo(self, ref: ChildRef, uid: str, resource_version: str) -> bool:
        """Whether a child's watch event only shows our own last write of it: nothing to
        reconcile (an edit by anyone else, or a status update, has a new resourceVersion)."""
        written = self.written.get(ref)
        return written is not None and written.echoes(uid, resource_version)

    async def reconcile(
        self, md: Mapping[str, Any], observation: Observation | Callable[[], Observation]
    ) -> Outcome:
        """One pass for `md`, after any pass already running for it.

        Give `observation` as a callable to read it when the pass starts: a pass that waited
        for another must not act on what the cluster showed before that one (it would see
        pods gone that the other pass saw, and flap the conditions back).
        """
        key = _key(md)

        async def job() -> Outcome:
            observed = observation() if callable(observation) else observation
            return await self._pass(md, observed)

        return await self.coalescer.run((key.namespace, key.name), job)

    async def nudge(self, namespace: str, name: str, lookup: Lookup) -> None:
        """A child or pod changed: reconcile its ModelDeployment as it is now."""

        async def job() -> None:
            md, observation = lookup(namespace, name)
            if md is None or (md.get("metadata") or {}).get("deletionTimestamp"):
                return
            try:
                await self._pass(md, observation)
            except Exception:  # a watch-driven pass must not take the child's handler down
                logger.exception("reconcile of %s/%s after a child event failed", namespace, name)

        await self.coalescer.nudge((namespace, name), job)

    def wake_after(self, namespace: str, name: str, seconds: float) -> None:
        """Reconcile `namespace/name` in `seconds` though nothing changes on the cluster
        (a deadline passes); an earlier wake already set for it is kept."""
        if self.lookup is None:
            return  # before kopf's first handler call: the resync timer covers it
        loop = asyncio.get_running_loop()
        key = (namespace, name)
        pending = self._wakes.get(key)
        if pending is not None and pending.when() <= loop.time() + seconds:
            return
        if pending is not None:
            pending.cancel()
        self._wakes[key] = loop.call_later(seconds, self._wake, namespace, name)

    def wake_all(self) -> None:
        """Reconcile every ModelDeployment this operator has written a status for, soon:
        something every status depends on changed (the audit trail's health)."""
        for namespace, name in list(self.statuses):
            self.wake_after(namespace, name, 0.0)

    def _wake(self, namespace: str, name: str) -> None:
        self._wakes.pop((namespace, name), None)
        if self.lookup is None:
            return
        task = asyncio.get_running_loop().create_task(self.nudge(namespace, name, self.lookup))
        self._woken.add(task)  # keep a reference until done, or the task may be collected
        task.add_done_callback(self._woken.discard)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the reconcile slots; the stall watchdog counts who waits for one."""
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
            self._last_done = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds passes have waited for a slot while none finished; 0 when idle or moving."""
        if self._waiting <= 0:
            return 0.0
        return time.monotonic() - self._last_done

    async def _pass(self, md: Mapping[str, Any], observation: Observation) -> Outcome:
        async with self._slot():
            started = time.perf_counter()
            try:
                outcome = await reconcile(md, observation, self.context())
            except Exception:
                self.metrics.reconciles.labels("error").inc()
                raise
            seconds = time.perf_counter() - started
        self.metrics.observe_reconcile(
            outcome.key,
            result=outcome.result,
            seconds=seconds,
            phase=outcome.phase,
            desired=outcome.desired_replicas,
            ready=outcome.ready_replicas,
        )
        self._report(md, outcome)
        if outcome.recheck_after is not None:
            self.wake_after(outcome.key.namespace, outcome.key.name, outcome.recheck_after)
        return outcome

    def _report(self, md: Mapping[str, Any], outcome: Outcome) -> None:
        for action in outcome.actions:
            if isinstance(action, Apply) and action.reason == "drifted":
                where = ", ".join(action.drift[:5])
                self.post_event(md, "Normal", "DriftRepaired", f"{action.ref}: restored {where}")
            elif isinstance(action, Apply):
                logger.info("%s: applied %s (%s)", outcome.key, action.ref, action.reason)
            elif isinstance(action, Prune):
                self.post_event(md, "Normal", "Pruned", f"{action.ref} is not in the current plan")
        for transition in outcome.transitions:
            kind = "Warning" if transition.warning else "Normal"
            self.post_event(
                md,
                kind,
                transition.reason,
                f"{transition.type}={transition.status}: {transition.message}",
            )
        if outcome.error is not None:
            self.post_event(md, "Warning", "ApplyFailed", str(outcome.error))

    async def finalize(
        self, namespace: str, name: str, uid: str, children: Sequence[ObservedChild]
    ) -> list[str]:
        """Delete the children in order; returns those still present (call again later).

        `children` come from the watch-fed index, so polling deletion costs no LIST (a
        label-selected LIST scans the whole namespace: thousands of deletions would cost
        millions of object visits). A child created so recently that the index has not seen
        it yet is removed by the garbage collector through its owner reference.
        Workloads go first, foreground, so their pods are gone before the NetworkPolicy
        that isolates them and the Service in front of them are removed.
        """
        key = DeploymentKey(namespace, name, uid)

        async def job() -> list[str]:
            # The deployment's lock first, then a slot, in the same order as every reconcile
            # pass: the other order deadlocks against a watch-driven pass.
            async with self._slot():
                owned = [c for c in children if c.owner_uid == uid]
                workloads = [c for c in owned if c.ref.kind in WORKLOAD_KINDS]
                batch = workloads or owned
                for child in batch:
                    if not child.deleting:
                        await self.writer.delete(
                            child.ref, child.uid, foreground=child.ref.kind in WORKLOAD_KINDS
                        )
                        await self.hooks.audit(
                            OperatorAction(
                                key,
                                "delete",
                                str(child.ref),
                                "ModelDeployment deleted",
                                target_uid=child.uid or None,
                                target_generation=child.generation or None,
                                audit_id=self.writer.take_audit_id(child.ref),
                            )
                        )
                return [str(c.ref) for c in batch]

        remaining = await self.coalescer.run((namespace, name), job)
        if not remaining:
            self.metrics.forget(key)
            self.statuses.pop((namespace, name), None)
            self.rendered.pop((namespace, name), None)
            wake = self._wakes.pop((namespace, name), None)
            if wake is not None:
                wake.cancel()
        return remaining


def _key(md: Mapping[str, Any]) -> DeploymentKey:
    meta = md.get("metadata") or {}
    return DeploymentKey(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")))
