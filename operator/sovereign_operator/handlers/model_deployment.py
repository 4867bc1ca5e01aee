"""kopf handlers for ModelDeployment: thin, level-based, all ending in one reconcile.

- create, update, resume and a periodic resync timer reconcile the object kopf hands us;
- a watch event on any child or engine pod reconciles its owner, so a deleted or edited
  child is repaired at once and the status follows the pods without waiting for resync;
- deletion removes the children in order, then kopf releases our finalizer.

What the cluster holds is read from kopf indexes fed by the same watch streams (children,
engine pods, nodes), never listed per reconcile. The handlers parse nothing themselves and
never write the spec.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any, Final

import kopf

from sovereign_operator.api.base import GROUP, VERSION
from sovereign_operator.observe import (
    CHILD_KINDS,
    ChildKind,
    ChildRef,
    NodeSnapshot,
    ObservedChild,
    PodSnapshot,
    observe_child,
    observe_node,
    observe_pod,
)
from sovereign_operator.reconcile import ApiError, Observation, Outcome
from sovereign_operator.render.meta import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGED_BY
from sovereign_operator.runtime import Lookup, Runtime

MD: Final = (GROUP, VERSION, "modeldeployments")
OWNED: Final[dict[str, Any]] = {
    LABEL_MANAGED_BY: MANAGED_BY,
    LABEL_DEPLOYMENT: kopf.PRESENT,
}
MD_INDEX: Final = "model_deployments"
POD_INDEX: Final = "engine_pods"
NODE_INDEX: Final = "nodes"
# Retry soon when the API server was briefly unavailable; slowly when it refused (RBAC,
# admission), which only a person can fix.
RETRY_SOON: Final = 5.0
RETRY_LATER: Final = 60.0
FINALIZE_POLL: Final = 1.0
FINALIZE_WAIT: Final = 60.0


def child_index(kind: ChildKind) -> str:
    return f"children_{kind.plural}"


def _snapshot_md(body: Mapping[str, Any]) -> dict[str, Any]:
    """What reconcile reads of a ModelDeployment, detached from kopf's live body."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: copy.deepcopy(meta[k])
            for k in ("name", "namespace", "uid", "generation", "deletionTimestamp")
            if k in meta
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _values(index: Any, key: object) -> list[Any]:
    store = index.get(key) if index is not None else None
    return list(store) if store is not None else []


def observation(indexes: Mapping[str, Any], namespace: str, name: str) -> Observation:
    """This ModelDeployment's children and pods, and every node, from the indexes."""
    key = (namespace, name)
    children: list[ObservedChild] = []
    for kind in CHILD_KINDS:
        children += _values(indexes.get(child_index(kind)), key)
    pods: list[PodSnapshot] = _values(indexes.get(POD_INDEX), key)
    nodes: list[NodeSnapshot] = [
        node for store in (indexes.get(NODE_INDEX) or {}).values() for node in store
    ]
    return Observation(children=children, pods=pods, nodes=nodes)


def lookup_from(indexes: Mapping[str, Any]) -> Lookup:
    """Reads the live indexes when called, so a deferred pass sees the latest state."""

    def lookup(namespace: str, name: str) -> tuple[Mapping[str, Any] | None, Observation]:
        found = _values(indexes.get(MD_INDEX), (namespace, name))
        md = found[0] if found else None
        return md, observation(indexes, namespace, name)

    return lookup


def _raise_for_retry(outcome: Outcome) -> None:
    error = outcome.error
    if error is None:
        return
    soon = error.code is None or error.code in (409, 429) or error.code >= 500
    raise kopf.TemporaryError(str(error), delay=RETRY_SOON if soon else RETRY_LATER)


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register every ModelDeployment handler into `registry`."""

    @kopf.index(*MD, id=MD_INDEX, registry=registry)
    async def model_deployments(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        return {(str(namespace), name): _snapshot_md(body)}

    @kopf.index("v1", "pods", labels=OWNED, id=POD_INDEX, registry=registry)
    async def engine_pods(
        body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
    ) -> dict[tuple[str, str], PodSnapshot]:
        return {(str(namespace), labels[LABEL_DEPLOYMENT]): observe_pod(body)}

    @kopf.index("v1", "nodes", id=NODE_INDEX, registry=registry)
    async def nodes(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeSnapshot]:
        return {name: observe_node(body)}

    for kind in CHILD_KINDS:
        _register_child_kind(registry, runtime, kind)

    @kopf.on.event("v1", "pods", labels=OWNED, id="engine_pod_changed", registry=registry)
    async def engine_pod_changed(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
        await runtime.nudge(str(namespace), labels[LABEL_DEPLOYMENT], lookup_from(kwargs))

    @kopf.on.event(*MD, id="capture_indexes", registry=registry)
    async def capture_indexes(**kwargs: Any) -> None:
        # kopf hands its indexes only to handlers; they are live views, so one capture
        # serves the passes no watch event starts (Runtime.wake_after).
        if runtime.lookup is None:
            runtime.lookup = lookup_from(kwargs)

    async def reconcile(body: kopf.Body, kwargs: Mapping[str, Any]) -> Outcome:
        md = _snapshot_md(body)
        meta = md["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        # Read when the pass starts (it may wait for another): see Runtime.reconcile.
        return await runtime.reconcile(md, lambda: observation(kwargs, namespace, name))

    @kopf.on.create(*MD, id="reconcile_on_create", registry=registry)
    async def on_create(body: kopf.Body, **kwargs: Any) -> None:
        _raise_for_retry(await reconcile(body, kwargs))

    @kopf.on.update(*MD, id="reconcile_on_update", registry=registry)
    async def on_update(body: kopf.Body, **kwargs: Any) -> None:
        _raise_for_retry(await reconcile(body, kwargs))

    @kopf.on.resume(*MD, id="reconcile_on_resume", registry=registry)
    async def on_resume(body: kopf.Body, **kwargs: Any) -> None:
        _raise_for_retry(await reconcile(body, kwargs))

    @kopf.timer(
        *MD,
        id="resync",
        interval=runtime.config.resync_seconds,
        initial_delay=runtime.config.resync_seconds,
        registry=registry,
    )
    async def resync(body: kopf.Body, **kwargs: Any) -> None:
        # Failures are reported in status and retried at the next interval; raising would
        # stack kopf's retries on top of the timer.
        await reconcile(body, kwargs)

    @kopf.on.delete(*MD, id="finalize", registry=registry)
    async def finalize(namespace: str | None, name: str, uid: str, **kwargs: Any) -> None:
        # Wait here for the children to go (seconds, usually) rather than failing and being
        # retried: each kopf retry is another write of its progress annotation.
        deadline = asyncio.get_running_loop().time() + FINALIZE_WAIT
        while True:
            try:
                children = observation(kwargs, str(namespace), name).children
                remaining = await runtime.finalize(str(namespace), name, uid, children)
            except ApiError as error:
                raise kopf.TemporaryError(str(error), delay=RETRY_SOON) from error
            if not remaining:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise kopf.TemporaryError(
                    f"waiting for {', '.join(remaining)} to go", delay=FINALIZE_POLL
                )
            await asyncio.sleep(FINALIZE_POLL)


def _register_child_kind(
    registry: kopf.OperatorRegistry, runtime: Runtime, kind: ChildKind
) -> None:
    resource = (kind.group, kind.version, kind.plural) if kind.group else ("v1", kind.plural)

    async def index_child(
        body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
    ) -> dict[tuple[str, str], ObservedChild]:
        return {(str(namespace), labels[LABEL_DEPLOYMENT]): observe_child(body)}

    async def child_changed(
        type: str | None, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **kwargs: Any
    ) -> None:
        ref = ChildRef.of(body)
        if type == "DELETED":
            runtime.child_deleted(ref)
        else:
            meta = body.get("metadata") or {}
            if runtime.is_echo(ref, str(meta.get("uid")), str(meta.get("resourceVersion"))):
                return
        await runtime.nudge(str(namespace), labels[LABEL_DEPLOYMENT], lookup_from(kwargs))

    kopf.index(*resource, labels=OWNED, id=child_index(kind), registry=registry)(index_child)
    kopf.on.event(*resource, labels=OWNED, id=f"{kind.plural}_changed", registry=registry)(
        child_changed
    )
