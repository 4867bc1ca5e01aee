"""Desired vs observed -> the actions that make them equal (pure).

`plan_actions` returns what to apply and what to prune, and nothing at all when every
child matches: the spec-hash annotation and every field we render. `differences` is the
field-level comparison behind drift repair; `Written` remembers our own writes so a watch
cache that lags behind them is not mistaken for drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from sovereign_operator.api.common import QUANTITY_PATTERN, parse_quantity
from sovereign_operator.observe import WORKLOAD_KINDS, ChildRef, ObservedChild
from sovereign_operator.render import SPEC_HASH_ANNOTATION, Manifest

_QUANTITY = re.compile(QUANTITY_PATTERN)
_MISSING: Final = object()


@dataclass(frozen=True)
class Apply:
    """Server-side apply one rendered child."""

    manifest: Manifest
    reason: Literal["missing", "changed", "drifted"]
    drift: tuple[str, ...] = ()
    """Paths whose observed value differs from the rendered one (for `drifted`)."""

    @property
    def ref(self) -> ChildRef:
        return ChildRef.of(self.manifest)


@dataclass(frozen=True)
class Prune:
    """Delete a child the current plan no longer contains."""

    child: ObservedChild

    @property
    def ref(self) -> ChildRef:
        return self.child.ref


Action = Apply | Prune

# How long a child we wrote may be absent from the watch cache before we write it again.
# Its watch event normally arrives within milliseconds, but a burst of thousands of objects
# can delay it by minutes; a DELETED event for it ends the grace at once.
WRITE_GRACE_SECONDS: Final = 180.0


@dataclass(frozen=True)
class Written:
    """A child as our last write left it, to tell a lagging watch cache from real drift."""

    uid: str
    generation: int
    at: float
    """time.monotonic() of the write."""
    resource_version: str = ""

    def echoes(self, uid: str, resource_version: str) -> bool:
        """Whether a watch event shows exactly the object our write produced."""
        return bool(resource_version) and (uid, resource_version) == (
            self.uid,
            self.resource_version,
        )


def differences(desired: Any, observed: Any, path: str = "") -> list[str]:  # noqa: PLR0911 - one return per shape
    """Paths under `desired` whose value the observed object does not have.

    Only fields we render are compared: the API server's defaults and other managers'
    fields are not ours to judge. Empty maps and lists equal absent ones (the API server
    drops them), and quantities compare by value ("1Gi" == "1024Mi").
    """
    if _empty(desired):
        return [] if _empty(observed) else [path or "."]
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += differences(value, observed.get(key, _MISSING), f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, observed, strict=True)):
            found += differences(want, have, f"{path}[{index}]")
        return found
    if desired == observed or _same_quantity(desired, observed):
        return []
    return [path]


def _empty(value: Any) -> bool:
    return value is _MISSING or value is None or (isinstance(value, Mapping | list) and not value)


def _same_quantity(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    texts = [str(v) for v in (a, b) if isinstance(v, str | int)]
    if len(texts) != 2 or not all(_QUANTITY.match(t) for t in texts):
        return False
    values: list[Decimal] = [parse_quantity(t) for t in texts]
    return values[0] == values[1]


def _lagging(child: ObservedChild | None, written: Written | None, now: float) -> bool:
    """True when the observed child predates our own last write of it."""
    if written is None:
        return False
    if child is None:
        return now - written.at < WRITE_GRACE_SECONDS
    return child.uid == written.uid and child.generation < written.generation


def plan_actions(
    desired: Sequence[Manifest],
    observed: Sequence[ObservedChild],
    owner_uid: str,
    *,
    written: Mapping[ChildRef, Written] | None = None,
    now: float = 0.0,
) -> list[Action]:
    """What to apply and prune so the cluster holds exactly `desired`; [] when it does.

    Applies keep the render order (isolation before workloads). A child being deleted is
    left alone until it is gone; its watch event then brings it back. A child whose
    observed state predates our last write of it (`written`: the watch cache lags behind
    our own write) is not written again. Only children this ModelDeployment controls are
    pruned, workloads first so no engine pod outlives its NetworkPolicy.
    """
    by_ref = {child.ref: child for child in observed}
    written = written or {}
    actions: list[Action] = []
    for manifest in desired:
        ref = ChildRef.of(manifest)
        child = by_ref.get(ref)
        if _lagging(child, written.get(ref), now):
            continue
        if child is None:
            actions.append(Apply(manifest, "missing"))
            continue
        if child.deleting:
            continue
        wanted = manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        if child.spec_hash != wanted:
            actions.append(Apply(manifest, "changed"))
            continue
        drift = differences(manifest, child.body)
        if drift:
            actions.append(Apply(manifest, "drifted", tuple(drift)))
    wanted_refs = {ChildRef.of(m) for m in desired}
    stale = [
        child
        for child in observed
        if child.ref not in wanted_refs and child.owner_uid == owner_uid and not child.deleting
    ]
    stale.sort(key=lambda c: (c.ref.kind not in WORKLOAD_KINDS, c.ref))
    actions += [Prune(child) for child in stale]
    return actions
