"""The Events the operator posts itself (kube.event_body): what kubectl shows."""

from __future__ import annotations

import pytest

from sovereign_operator.kube import event_body
from tests.unit.operator.fakes import MD_UID, md_body

pytestmark = pytest.mark.unit


def test_an_event_names_its_modeldeployment_and_stays_within_api_limits() -> None:
    body = event_body(
        md_body(), "Warning", "R" * 200, "m" * 5000, component="sovereign-operator", instance="h"
    )
    assert body["involvedObject"] == {
        "apiVersion": "sovereign.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "llama",
        "namespace": "clinical-ai",
        "uid": MD_UID,
    }
    assert body["metadata"] == {"generateName": "llama.", "namespace": "clinical-ai"}
    assert body["type"] == "Warning"
    assert len(body["reason"]) == 128
    assert len(body["message"]) == 1024
    assert body["firstTimestamp"] == body["lastTimestamp"]
    assert body["firstTimestamp"].endswith("Z")
    assert body["source"] == {"component": "sovereign-operator"}
