"""What a reconcile pass works with: its context, what it observed, what it answers.

Kept apart from `reconcile` (the pass) and `desired` (planning and rendering the children)
so both can use them without importing each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sovereign_operator.actions import Action, Written
from sovereign_operator.api.model_deployment import ModelDeploymentStatus
from sovereign_operator.hooks import DeploymentKey, Hooks
from sovereign_operator.observe import ChildRef, NodeSnapshot, ObservedChild, PodSnapshot
from sovereign_operator.planning import DEFAULT_ENGINE_IMAGE
from sovereign_operator.render import Manifest, RenderOptions
from sovereign_operator.status import Transition

if TYPE_CHECKING:
    from sovereign_operator.desired import Desired


class ApiError(Exception):
    """A request the API server refused or never answered (after retries), with what it said."""

    def __init__(self, target: str, code: int | None, message: str) -> None:
        self.target = target
        self.code = code
        super().__init__(f"{target}: {code or 'no response'}: {message}")


class ChildWriter(Protocol):
    """The writes (and the one cluster-wide read) reconcile needs."""

    async def apply(self, manifest: Manifest) -> Mapping[str, Any]: ...

    async def delete(self, ref: ChildRef, uid: str, *, foreground: bool = False) -> None: ...

    def take_audit_id(self, ref: ChildRef) -> str | None:
        """The API server's Audit-ID of the last write of `ref` (None if unknown), once."""
        ...

    async def patch_status(self, key: DeploymentKey, patch: Mapping[str, Any]) -> None: ...

    async def gpu_usage(self) -> Mapping[str, int]:
        """nvidia.com/gpu requested per node by all scheduled pods in the cluster."""
        ...


@dataclass(frozen=True)
class Observation:
    """This ModelDeployment's children and engine pods, and the cluster's nodes."""

    children: Sequence[ObservedChild] = ()
    pods: Sequence[PodSnapshot] = ()
    nodes: Sequence[NodeSnapshot] = ()


@dataclass
class StatusMemo:
    """The status we last wrote, and the ones it replaced (most recent last).

    Watch-driven passes read the ModelDeployment from a cache that may not have our own
    last status write yet. Seeing a status we already replaced means "stale", not "someone
    changed it": the pass then continues from what we wrote, so it neither repeats the
    write nor posts the same transition Event twice.
    """

    written: ModelDeploymentStatus
    superseded: list[ModelDeploymentStatus | None] = field(default_factory=list)

    KEEP: ClassVar[int] = 8

    def resolve(self, observed: ModelDeploymentStatus | None) -> ModelDeploymentStatus | None:
        return self.written if observed in self.superseded else observed

    def record(
        self, replaced: ModelDeploymentStatus | None, written: ModelDeploymentStatus
    ) -> None:
        self.superseded = [*self.superseded, replaced, self.written][-self.KEEP :]
        self.written = written


@dataclass(frozen=True)
class ReconcileContext:
    writer: ChildWriter
    options: RenderOptions = field(default_factory=RenderOptions)
    hooks: Hooks = field(default_factory=Hooks)
    default_image: str = DEFAULT_ENGINE_IMAGE
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    written: MutableMapping[ChildRef, Written] = field(default_factory=dict)
    """Our last write of each child; shared across passes, cleared when a child is deleted."""
    statuses: MutableMapping[tuple[str, str], StatusMemo] = field(default_factory=dict)
    """Our last status write per ModelDeployment (namespace, name)."""
    rendered: MutableMapping[tuple[str, str], tuple[tuple[Hashable, Hashable], Desired]] = field(
        default_factory=dict
    )
    """The last rendering per ModelDeployment and what it was rendered from: (the spec and
    cluster facts it was planned from, the groups it parked)."""
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Outcome:
    """What one pass did and found."""

    key: DeploymentKey
    actions: tuple[Action, ...] = ()
    transitions: tuple[Transition, ...] = ()
    status_written: bool = False
    phase: str = ""
    desired_replicas: int = 0
    ready_replicas: int = 0
    error: ApiError | None = None
    refused: bool = False
    recheck_after: float | None = None
    """Seconds until a deadline this pass found (a group's placement timeout) runs out: the
    operator passes again then, since no watch event marks that moment."""

    @property
    def writes(self) -> int:
        return len(self.actions) + int(self.status_written)

    @property
    def result(self) -> str:
        """For metrics: error, refused, changed (something written) or noop."""
        if self.error is not None:
            return "error"
        if self.refused:
            return "refused"
        return "changed" if self.writes else "noop"
