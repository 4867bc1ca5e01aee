"""Running reconcile passes against a FakeCluster, shared by the reconcile tests."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from sovereign_operator import desired as desired_module
from sovereign_operator.observe import PodSnapshot
from sovereign_operator.reconcile import Outcome, ReconcileContext, reconcile
from tests.unit.operator.fakes import FakeCluster, pod

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def run_pass(
    cluster: FakeCluster,
    body: dict[str, Any],
    pods: tuple[PodSnapshot, ...] = (),
    now: datetime = NOW,
    **context: Any,
) -> Outcome:
    """One reconcile pass of `body`, seeing `pods` and the cluster's objects, at `now`."""
    ctx = ReconcileContext(writer=cluster, now=lambda: now, **context)
    return asyncio.run(reconcile(body, cluster.observe(pods), ctx))


def with_status(cluster: FakeCluster, body: dict[str, Any]) -> dict[str, Any]:
    """The body as the next watch event would bring it: with the status we wrote."""
    key = next(iter(cluster.status))
    return {**body, "status": copy.deepcopy(cluster.status[key])}


def written_status(cluster: FakeCluster) -> dict[str, Any]:
    return next(iter(cluster.status.values()))


def condition(cluster: FakeCluster, kind: str) -> dict[str, Any]:
    return next(c for c in written_status(cluster)["conditions"] if c["type"] == kind)


def rolled_out_pod(cluster: FakeCluster) -> PodSnapshot:
    """Roll the engine Deployment out and return its one Ready pod of the current template."""
    cluster.roll_out()
    template = cluster.deployment()["spec"]["template"]["metadata"]["annotations"]
    return pod(template_hash=template["sovereign.dev/template-hash"])


def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gains one entry each time reconcile renders children."""
    calls: list[str] = []
    real = desired_module.render_children

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("render")
        return real(*args, **kwargs)

    monkeypatch.setattr(desired_module, "render_children", counting)
    return calls
