"""A model larger than any node is reported, not hidden, and breaks nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.operator.conftest import Md, model_deployment

pytestmark = pytest.mark.integration


def test_more_gpus_than_any_node_is_scheduled_false_naming_the_shortage(
    operator: Any, model_store: str, namespace: str, md: Md
) -> None:
    # gpusPerNode claims 16-GPU nodes, so planning keeps one pod of 16 GPUs; no node has 16.
    md.create(model_deployment("too-big", namespace, resources={"gpus": 16, "gpusPerNode": 16}))
    md.create(model_deployment("fits", namespace))
    scheduled = md.wait_condition(namespace, "too-big", "Scheduled", "False")
    assert scheduled["reason"] == "InsufficientGPU"
    assert "needs 16 nvidia.com/gpu on one node, largest free is 8" in scheduled["message"]
    ready = md.condition(namespace, "too-big", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "InsufficientGPU")
    assert md.get(namespace, "too-big")["status"]["phase"] == "Pending"
    # Nothing else is affected: the next deployment in the namespace serves normally.
    md.wait_condition(namespace, "fits", "Ready")
