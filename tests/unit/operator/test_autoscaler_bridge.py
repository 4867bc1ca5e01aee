"""The autoscaler bridge's pure parts: pods -> endpoints, ModelDeployments -> the loop's view,
and what a scale change writes (patch, lastScale, Event, audit record, condition)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from sovereign_operator.api.model_deployment import ModelDeploymentSpec, ScalingMetric
from sovereign_operator.autoscaler_bridge import (
    ActivityReports,
    ClusterBridge,
    EngineEndpoint,
    ScaleHeld,
    audit_record,
    autoscaled,
    engine_endpoint,
    held_by_audit,
    last_change,
    last_scale_status,
    metrics_url,
    replica_endpoints,
    scale_event,
    scale_patch,
)
from sovereign_operator.autoscaling.loop import Activity, ReplicaEndpoint
from sovereign_operator.autoscaling.policy import Decision, Direction, ScaleReason
from sovereign_operator.handlers.autoscaler import ENDPOINT_INDEX, IndexView
from sovereign_operator.handlers.model_deployment import MD_INDEX
from sovereign_operator.hooks import AuditHealthReport, DeploymentKey
from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.reconcile import ApiError

pytestmark = pytest.mark.unit

READY_AT = "2026-11-28T20:00:00Z"
READY_TS = datetime(2026, 11, 28, 20, tzinfo=UTC).timestamp()


def pod(
    name: str,
    ip: str = "127.0.0.5",
    *,
    ready: bool = True,
    deleting: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = READY_AT
    status: dict[str, Any] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastTransitionTime": READY_AT,
            }
        ]
    }
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def md(
    scaling: dict[str, Any] | None = None, *, replicas: int | None = 2, **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"source": "pvc://store/m", "digest": "sha256:" + "a" * 64},
        "resources": {"gpus": 1},
    }
    if scaling is not None:
        spec["scaling"] = scaling
    if replicas is not None:
        spec["replicas"] = replicas
    body: dict[str, Any] = {
        "apiVersion": "sovereign.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "llm", "namespace": "ai", "uid": "u1"},
        "spec": spec,
        "status": {},
    }
    for key, value in extra.items():
        if key == "status":
            body["status"] = value
        elif key == "meta":
            body["metadata"].update(value)
        else:
            spec[key] = value
    return body


def decision(current: int = 1, replicas: int = 3) -> Decision:
    return Decision(
        current=current,
        replicas=replicas,
        reason=ScaleReason(
            direction=Direction.UP if replicas > current else Direction.DOWN,
            metric=ScalingMetric.QUEUE_DEPTH,
            observed=12.0,
            target=4.0,
            window_start=READY_TS,
            window_end=READY_TS + 30,
            message=f"scaling {current} -> {replicas}: requests waiting stayed above target",
        ),
    )


def test_a_ready_pod_is_an_endpoint_with_its_url_and_ready_time() -> None:
    endpoint = engine_endpoint(pod("llm-engine-abc"), 8000)
    replica = ReplicaEndpoint("llm-engine-abc", "http://127.0.0.5:8000/metrics", True, READY_TS)
    assert endpoint == EngineEndpoint("llm-engine-abc", replica, deleting=False, leader=True)


def test_group_pods_know_their_group_and_whether_they_lead() -> None:
    group = "llm-g0-abcdef"
    leader = engine_endpoint(
        pod(
            f"{group}-0", labels={"sovereign.dev/group": group, "apps.kubernetes.io/pod-index": "0"}
        )
    )
    member = engine_endpoint(
        pod(
            f"{group}-1", labels={"sovereign.dev/group": group, "apps.kubernetes.io/pod-index": "1"}
        )
    )
    # Before Kubernetes 1.28 there is no pod-index label: the ordinal ends the name.
    old_leader = engine_endpoint(pod(f"{group}-0", labels={"sovereign.dev/group": group}))
    # A group is one replica, named after the group and scraped at its leader.
    assert (leader.replica.name, leader.leader) == (group, True)
    assert (member.replica.name, member.leader) == (group, False)
    assert old_leader.leader


def test_replicas_are_single_pods_and_group_leaders_never_terminating_ones() -> None:
    group = {"sovereign.dev/group": "llm-g0-abcdef"}
    pods = [
        engine_endpoint(pod("b", "127.0.0.2")),
        engine_endpoint(pod("a", "127.0.0.1")),
        engine_endpoint(pod("gone", "127.0.0.3", deleting=True)),
        engine_endpoint(pod("llm-g0-abcdef-0", "127.0.0.4", labels=group)),
        engine_endpoint(pod("llm-g0-abcdef-1", "127.0.0.6", labels=group)),
        engine_endpoint(pod("starting", "", ready=True)),
    ]
    replicas = replica_endpoints(pods)
    assert [(r.name, r.metrics_url, r.ready) for r in replicas] == [
        ("a", "http://127.0.0.1:8000/metrics", True),
        ("b", "http://127.0.0.2:8000/metrics", True),
        ("llm-g0-abcdef", "http://127.0.0.4:8000/metrics", True),
        # Ready but without an address yet: it cannot be scraped, so it is still starting.
        ("starting", "", False),
    ]


def test_metrics_urls_bracket_ipv6_addresses() -> None:
    assert metrics_url("fd00::5", 8000) == "http://[fd00::5]:8000/metrics"
    assert metrics_url("10.1.2.3", 9000) == "http://10.1.2.3:9000/metrics"


def test_only_deployments_with_valid_scaling_are_autoscaled() -> None:
    assert autoscaled(md(None), []) is None
    assert autoscaled(md({"minReplicas": 3, "maxReplicas": 1}), []) is None
    assert autoscaled(md({"maxReplicas": 3}, meta={"deletionTimestamp": READY_AT}), []) is None


def test_the_loop_sees_replicas_scaling_served_name_and_last_scale() -> None:
    body = md(
        {"maxReplicas": 4, "metric": "runningRequests", "target": 6},
        replicas=3,
        status={"lastScale": {"time": READY_AT, "from": 1, "to": 3, "reason": "busy"}},
    )
    view = autoscaled(body, [engine_endpoint(pod("p"))])
    assert view is not None
    assert (view.namespace, view.name, view.uid, view.replicas) == ("ai", "llm", "u1", 3)
    assert view.scaling.max_replicas == 4
    assert view.scaling.metric is ScalingMetric.RUNNING_REQUESTS
    assert view.served_model_name == "llm"  # vLLM's model_name defaults to the object's name
    assert view.last_change is not None
    assert (view.last_change.at, view.last_change.to_replicas) == (READY_TS, 3)
    assert [e.name for e in view.endpoints] == ["p"]


def test_a_served_name_and_a_missing_replicas_field_are_read_as_the_engine_and_crd_do() -> None:
    body = md({"maxReplicas": 2}, replicas=None)
    body["spec"]["model"]["servedName"] = "tiny"
    view = autoscaled(body, [])
    assert view is not None
    assert view.served_model_name == "tiny"
    assert view.replicas == ModelDeploymentSpec.model_fields["replicas"].default


def test_a_broken_last_scale_is_no_previous_change() -> None:
    assert last_change({"time": READY_AT, "from": "x", "to": 2}) is None
    assert last_change({"from": 1}) is None
    assert last_change(None) is None


def test_the_scale_patch_only_applies_to_the_count_it_was_decided_from() -> None:
    assert scale_patch(2, 5) == [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "add", "path": "/spec/replicas", "value": 5},
    ]
    # Scale.spec.replicas is omitted at zero, so a test of 0 would always fail.
    assert scale_patch(0, 1) == [{"op": "add", "path": "/spec/replicas", "value": 1}]


def test_last_scale_event_and_audit_record_carry_the_decision() -> None:
    at = datetime(2026, 11, 28, 21, 5, 7, 123456, tzinfo=UTC)
    up = decision(1, 3)
    assert last_scale_status(up, at) == {
        "time": "2026-11-28T21:05:07Z",
        "from": 1,
        "to": 3,
        "reason": up.reason.message,
    }
    assert scale_event(up) == ("Normal", "ScaledUp", up.reason.message)
    assert scale_event(decision(3, 2))[1] == "ScaledDown"
    record = audit_record(DeploymentKey("ai", "llm", "u1"), up, at)
    assert record.target == "ModelDeployment/llm/scale"
    assert record.extra["from"] == "1"
    assert record.extra["to"] == "3"
    assert record.extra["metric"] == "queueDepth"
    assert record.extra["observed"] == "12.0"
    assert record.extra["target"] == "4.0"
    assert record.extra["windowStart"].startswith("2026-11-28T20:00:00")


def test_a_long_reason_is_cut_to_the_crd_limit() -> None:
    long = Decision(
        1, 2, ScaleReason(Direction.UP, ScalingMetric.QUEUE_DEPTH, 1, 1, 0, 0, "x" * 5000)
    )
    assert len(last_scale_status(long, datetime.now(UTC))["reason"]) == 1024


def spec(scaling: dict[str, Any] | None) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(md(scaling)["spec"])


def test_reports_reach_the_condition_only_while_they_fit_the_spec() -> None:
    reports = ActivityReports()
    key = DeploymentKey("ai", "llm", "u1")
    assert reports(key, spec({"maxReplicas": 2})) is None  # nothing reported yet
    reports.set("ai", "llm", Activity(True, "Active", "scaling on queueDepth"))
    report = reports(key, spec({"maxReplicas": 2}))
    assert report is not None
    assert (report.status, report.reason) == ("True", "Active")
    # Scaling removed, or switched to external, before the loop looked again.
    assert reports(key, spec(None)) is None
    assert reports(key, spec({"mode": "external"})) is None
    reports.set("ai", "llm", Activity(False, "NoMetrics", "no fresh metrics"))
    failing = reports(key, spec({"maxReplicas": 2}))
    assert failing is not None
    assert failing.status == "False"
    # External mode is the spec's to describe, whatever the loop said.
    reports.set("ai", "llm", Activity(False, "External", "an HPA scales"))
    assert reports(key, spec({"mode": "external"})) is None
    reports.retain_only([])
    assert reports(key, spec({"maxReplicas": 2})) is None


def bridge(
    listing: list[Any], nudged: list[tuple[str, str]], held: str | None = None
) -> tuple[ClusterBridge, ActivityReports, client.ApiClient]:
    reports = ActivityReports()

    async def nudge(namespace: str, name: str) -> None:
        nudged.append((namespace, name))

    async def patch_status(*_: Any) -> None:
        raise AssertionError("not called here")

    async def audit(*_: Any) -> None:
        raise AssertionError("not called here")

    api = client.ApiClient(client.Configuration())
    made = ClusterBridge(
        api=api,
        listing=lambda: listing,
        patch_status=patch_status,
        post_event=lambda *_: None,
        audit=audit,
        metrics=OperatorMetrics(),
        reports=reports,
        nudge=nudge,
        held=lambda: held,
    )
    return made, reports, api


def test_listing_keeps_autoscaled_deployments_and_forgets_other_reports() -> None:
    async def scenario() -> None:
        other = md(None)
        other["metadata"]["name"] = "fixed"
        made, reports, api = bridge(
            [(md({"maxReplicas": 2}), [engine_endpoint(pod("p"))]), (other, [])], []
        )
        reports.set("ai", "fixed", Activity(True, "Active", "stale"))
        listed = await made.list_deployments()
        assert [d.name for d in listed] == ["llm"]
        assert reports(DeploymentKey("ai", "fixed"), spec({"maxReplicas": 2})) is None
        await made.close()
        await api.close()

    asyncio.run(scenario())


def test_an_activity_report_is_recorded_and_nudges_a_reconcile() -> None:
    async def scenario() -> None:
        nudged: list[tuple[str, str]] = []
        made, reports, api = bridge([], nudged)
        await made.report_activity("ai", "llm", Activity(False, "NoMetrics", "nothing"))
        report = reports(DeploymentKey("ai", "llm"), spec({"maxReplicas": 2}))
        assert report is not None
        assert report.reason == "NoMetrics"
        await asyncio.sleep(0)  # the nudge runs in its own task
        assert nudged == [("ai", "llm")]
        # External mode's condition comes from the spec: no pass to nudge.
        await made.report_activity("ai", "llm", Activity(False, "External", "an HPA scales"))
        await asyncio.sleep(0)
        assert nudged == [("ai", "llm")]
        await made.close()
        await api.close()

    asyncio.run(scenario())


def test_the_index_view_pairs_each_deployment_with_its_engine_pods() -> None:
    first, second = md({"maxReplicas": 2}), md(None)
    second["metadata"]["name"] = "other"
    endpoint = engine_endpoint(pod("p"))
    view = IndexView(
        indexes={
            MD_INDEX: {("ai", "llm"): [first], ("ai", "other"): [second]},
            ENDPOINT_INDEX: {("ai", "llm"): [endpoint]},
        }
    )
    assert list(view.listing()) == [(first, [endpoint]), (second, [])]
    assert list(IndexView().listing()) == []  # before kopf has handed its indexes over


class FakeScaleApi:
    """Stands in for CustomObjectsApi's scale patch: records it, or refuses as told."""

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.patches: list[tuple[str, str, Any, str]] = []

    async def patch_namespaced_custom_object_scale_with_http_info(
        self,
        _group: str,
        _version: str,
        namespace: str,
        _plural: str,
        name: str,
        body: Any,
        **kw: Any,
    ) -> tuple[Any, int, dict[str, str]]:
        if self.status is not None:
            raise ApiException(status=self.status, reason="Unprocessable Entity")
        self.patches.append((namespace, name, body, kw["_content_type"]))
        return {}, 200, {"Audit-Id": f"audit-{len(self.patches)}"}


def test_a_scale_change_writes_scale_then_last_scale_event_and_audit() -> None:
    async def scenario() -> None:
        statuses: list[Any] = []
        posted: list[Any] = []
        audited: list[Any] = []

        async def patch_status(key: DeploymentKey, patch: Any) -> None:
            statuses.append((key, patch))

        async def audit(action: Any) -> None:
            audited.append(action)

        body = md({"maxReplicas": 3})
        api = client.ApiClient(client.Configuration())
        made = ClusterBridge(
            api=api,
            listing=lambda: [(body, [])],
            patch_status=patch_status,
            post_event=lambda *event: posted.append(event),
            audit=audit,
            metrics=OperatorMetrics(),
            reports=ActivityReports(),
            nudge=lambda *_: asyncio.sleep(0),
            now=lambda: datetime(2026, 11, 28, 21, tzinfo=UTC),
        )
        fake = FakeScaleApi()
        made._api = fake  # type: ignore[assignment]
        await made.list_deployments()
        await made.apply_scale("ai", "llm", 3, decision(1, 3))
        assert fake.patches == [("ai", "llm", scale_patch(1, 3), "application/json-patch+json")]
        assert statuses == [
            (
                DeploymentKey("ai", "llm", "u1"),
                {
                    "lastScale": last_scale_status(
                        decision(1, 3), datetime(2026, 11, 28, 21, tzinfo=UTC)
                    )
                },
            )
        ]
        assert [(e[0]["metadata"]["name"], e[2]) for e in posted] == [("llm", "ScaledUp")]
        assert [(a.target, a.extra["to"], a.audit_id) for a in audited] == [
            ("ModelDeployment/llm/scale", "3", "audit-1")
        ]

        # Someone changed replicas since: the JSON patch's test fails, nothing else is written.
        made._api = FakeScaleApi(status=422)  # type: ignore[assignment]
        with pytest.raises(ApiError, match="no longer 1"):
            await made.apply_scale("ai", "llm", 3, decision(1, 3))
        assert len(statuses) == len(posted) == len(audited) == 1
        await api.close()

    asyncio.run(scenario())


def test_no_scale_change_goes_out_while_the_audit_trail_holds_changes() -> None:
    paused = AuditHealthReport("False", "SinkFailing", "syslog: connection refused", pause=True)
    assert held_by_audit(None) is None
    assert held_by_audit(replace(paused, pause=False)) is None
    why = held_by_audit(paused)
    assert why is not None
    assert "audit.failurePolicy: pause" in why

    async def scenario() -> None:
        # No API server behind this client: a scale that got past the check would fail
        # with a connection error, not ScaleHeld.
        made, _, api = bridge([], [], held=why)
        with pytest.raises(ScaleHeld, match="syslog: connection refused"):
            await made.apply_scale("ai", "llm", 3, decision())
        await made.close()
        await api.close()

    asyncio.run(scenario())
