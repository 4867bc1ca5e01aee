"""kopf handlers for ModelPolicies and namespaces: the indexes policy evaluation reads, and
prompt re-reconciles when a policy or a namespace's labels change.

A policy tightened after a deployment was admitted must show on that deployment at once
(PolicyCompliant=False, new rollouts held), not at the next resync; so must a namespace
relabelled into (or out of) a policy's namespaceSelector. Each change nudges exactly the
ModelDeployments it can concern, through the same coalesced pass child events use.

Each policy's own status (what it selects, which deployments break it) is refreshed by
one operator-wide loop from the indexes, and written only when it changed. Not a
kopf.timer: kopf puts a finalizer on every object with a timer, and a policy must stay
deletable while the operator is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from sovereign_operator.api.base import GROUP, VERSION
from sovereign_operator.handlers.model_deployment import lookup_from
from sovereign_operator.policy import NamedPolicy
from sovereign_operator.policy_hook import (
    NAMESPACE_INDEX,
    POLICY_INDEX,
    POLICY_STATUS_INDEX,
    IndexedPolicies,
    PolicyEntry,
    UnreadablePolicy,
    read_policy,
)
from sovereign_operator.policy_status import PolicyStanding, policy_status, status_changed
from sovereign_operator.reconcile import ApiError
from sovereign_operator.runtime import Runtime

logger = logging.getLogger(__name__)

MPOL: Final = (GROUP, VERSION, "modelpolicies")
STATUS_SECONDS: Final = 10.0
"""How often every policy's status is recomputed: a sweep of the indexes, no API reads."""
StatusWriter = Callable[[str, Mapping[str, Any]], Awaitable[None]]


def register(registry: kopf.OperatorRegistry, runtime: Runtime, policies: IndexedPolicies) -> None:
    # What each policy and namespace looked like when last handled: a change is acted on
    # once, and a policy's status or a namespace's annotations alone change nothing.
    seen_policies: dict[str, PolicyEntry] = {}
    seen_labels: dict[str, dict[str, str]] = {}

    @kopf.on.startup(id="bind_policy_indexes", registry=registry)
    async def bind(**kwargs: Any) -> None:
        # kopf hands start-up handlers its live (still filling) indexes; every ModelDeployment
        # handler waits until they are complete, so reconcile never reads a partial view.
        policies.bind(kwargs)

    @kopf.index(*MPOL, id=POLICY_INDEX, registry=registry)
    async def model_policies(body: kopf.Body, name: str, **_: Any) -> dict[str, PolicyEntry]:
        return {name: read_policy(body)}

    @kopf.index(*MPOL, id=POLICY_STATUS_INDEX, registry=registry)
    async def model_policy_statuses(body: kopf.Body, name: str, **_: Any) -> dict[str, Any]:
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        return {name: (meta.get("generation"), dict(status))}

    @kopf.index("v1", "namespaces", id=NAMESPACE_INDEX, registry=registry)
    async def namespace_labels(
        name: str, labels: kopf.Labels, **_: Any
    ) -> dict[str, dict[str, str]]:
        return {name: dict(labels)}

    async def nudge_all(keys: list[tuple[str, str]], indexes: Mapping[str, Any]) -> None:
        lookup = lookup_from(indexes)
        await asyncio.gather(*(runtime.nudge(ns, name, lookup) for ns, name in keys))

    @kopf.on.event(*MPOL, id="model_policy_changed", registry=registry)
    async def model_policy_changed(
        type: str | None, body: kopf.Body, name: str, **kwargs: Any
    ) -> None:
        entry = read_policy(body)
        before = seen_policies.get(name)
        if type == "DELETED":
            seen_policies.pop(name, None)
        else:
            seen_policies[name] = entry
        # The initial listing only fills the index: every deployment is reconciled on
        # resume anyway, after the indexes are complete.
        if type is None or (type != "DELETED" and before == entry):
            return
        concerned = {
            key
            for version in (before, entry)
            if isinstance(version, NamedPolicy)
            for key in policies.selected_deployments(version)
        }
        if not isinstance(entry, NamedPolicy) or not isinstance(before, NamedPolicy | None):
            concerned = set(policies.deployments())  # unreadable: it refuses everything
        logger.info(
            "ModelPolicy %s %s: re-checking %d ModelDeployment(s)",
            name,
            (type or "").lower(),
            len(concerned),
        )
        await nudge_all(sorted(concerned), kwargs)

    @kopf.on.event("v1", "namespaces", id="namespace_labels_changed", registry=registry)
    async def namespace_labels_changed(
        type: str | None, name: str, labels: kopf.Labels, **kwargs: Any
    ) -> None:
        now = dict(labels)
        before = seen_labels.get(name)
        if type == "DELETED":
            seen_labels.pop(name, None)
            return
        seen_labels[name] = now
        if type is None or before is None or before == now:
            return
        await nudge_all(policies.deployments(name), kwargs)


async def refresh_policy_statuses(
    policies: IndexedPolicies, write: StatusWriter, now: datetime
) -> int:
    """One round: each policy's status recomputed, written where it changed; how many were."""
    written = 0
    standings = policies.standings()  # every deployment judged once for all policies
    for entry in policies.entries():
        generation, stored = policies.stored_status(entry.name)
        problem = entry.problem if isinstance(entry, UnreadablePolicy) else None
        standing = standings.get(entry.name, PolicyStanding(0, ()))
        new = policy_status(
            generation=generation, problem=problem, standing=standing, previous=stored, now=now
        )
        if not status_changed(new, stored):
            continue
        try:
            await write(entry.name, new)
        except ApiError as error:  # the next round tries again
            logger.warning("could not write ModelPolicy %s status: %s", entry.name, error)
            continue
        written += 1
    return written


async def follow_policy_statuses(
    policies: IndexedPolicies, write: StatusWriter, interval: float = STATUS_SECONDS
) -> None:
    """Refresh every policy's status each `interval` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        await refresh_policy_statuses(policies, write, datetime.now(UTC))
