"""Bounded per-deployment history of the evidence the policy reads.

Pure. Each snapshot is assessed once, when it is recorded, and only its `TickEvidence` is
kept: a tick's decision then costs a pass over small precomputed records instead of
re-reading every replica sample of the last few minutes, and a thousand deployments keep
tens of thousands of small objects rather than half a million (the garbage collector's
pauses grow with the latter). A changed scaling spec or tuning starts the evidence afresh:
pressure measured against the old target is no evidence under the new one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from sovereign_operator.api.model_deployment import ScalingSpec
from sovereign_operator.autoscaling.evidence import (
    DEFAULT_TUNING,
    Snapshot,
    TickEvidence,
    Tuning,
    assess,
)

# A hard cap on ticks kept per deployment whatever the windows say: a day-long
# scale-down window at a 1 s tick must not grow memory without bound.
MAX_TICKS: Final = 4096


def retention_seconds(scaling: ScalingSpec, tuning: Tuning = DEFAULT_TUNING) -> float:
    """How far back the policy looks: the down window replays up windows, plus one anchor tick."""
    return (
        scaling.scale_down_stabilization_seconds
        + scaling.scale_up_stabilization_seconds
        + 2 * tuning.max_evidence_gap_seconds
    )


class DeploymentHistory:
    """The recent evidence of one deployment, oldest first."""

    def __init__(self, *, max_ticks: int = MAX_TICKS) -> None:
        self._max_ticks = max_ticks
        self._evidence: list[TickEvidence] = []
        self._last_at: float | None = None
        # (at, peak_running) with peaks decreasing from left to right: the sliding maximum,
        # so the capacity hint costs O(1) per record instead of a pass over the history.
        self._peaks: deque[tuple[float, float]] = deque()
        self._settings: tuple[ScalingSpec, Tuning] | None = None

    def __len__(self) -> int:
        return len(self._evidence)

    def record(
        self, snapshot: Snapshot, scaling: ScalingSpec, tuning: Tuning = DEFAULT_TUNING
    ) -> TickEvidence | None:
        """Assess a snapshot, keep its evidence, drop what has aged out; return the evidence.

        A snapshot not newer than the last one is ignored (a clock step backwards must not
        reorder the evidence); one without evidence leaves a gap.
        """
        if self._last_at is not None and snapshot.at <= self._last_at:
            return None
        self._last_at = snapshot.at
        if self._settings is None or self._settings != (scaling, tuning):
            self._settings = (scaling, tuning)
            self._evidence.clear()
            self._peaks.clear()
        self.prune(snapshot.at - retention_seconds(scaling, tuning))
        hint = self._peaks[0][1] if self._peaks else 0.0
        previous = self._evidence[-1] if self._evidence else None
        evidence = assess(snapshot, scaling, capacity_hint=hint, previous=previous, tuning=tuning)
        if evidence is not None:
            self._evidence.append(evidence)
            while self._peaks and self._peaks[-1][1] <= evidence.peak_running:
                self._peaks.pop()
            self._peaks.append((evidence.at, evidence.peak_running))
            if len(self._evidence) > self._max_ticks:
                self.prune(self._evidence[-self._max_ticks].at)
        return evidence

    def prune(self, older_than: float) -> None:
        """Forget evidence from before `older_than`."""
        stale = 0
        while stale < len(self._evidence) and self._evidence[stale].at < older_than:
            stale += 1
        if stale:
            del self._evidence[:stale]
        while self._peaks and self._peaks[0][0] < older_than:
            self._peaks.popleft()

    def evidence(self) -> Sequence[TickEvidence]:
        """The evidence ticks, oldest first. The history's own list, not a copy: read it,
        do not change it."""
        return self._evidence


DeploymentKey = tuple[str, str, str]
"""(namespace, name, uid): a deleted and re-created deployment starts a fresh history."""


class HistoryStore:
    """Histories of every autoscaled deployment, keyed by namespace, name and uid."""

    def __init__(self, *, max_ticks: int = MAX_TICKS) -> None:
        self._max_ticks = max_ticks
        self._histories: dict[DeploymentKey, DeploymentHistory] = {}

    def __len__(self) -> int:
        return len(self._histories)

    def get(self, key: DeploymentKey) -> DeploymentHistory:
        history = self._histories.get(key)
        if history is None:
            history = self._histories[key] = DeploymentHistory(max_ticks=self._max_ticks)
        return history

    def retain_only(self, keys: Iterable[DeploymentKey]) -> None:
        """Forget deployments that are gone or no longer autoscaled."""
        keep = set(keys)
        for key in [k for k in self._histories if k not in keep]:
            del self._histories[key]

    def keys(self) -> Sequence[DeploymentKey]:
        return list(self._histories)
