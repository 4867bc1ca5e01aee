"""Where engine pods may run: GPU product, user node selectors, residency, tolerations."""

from __future__ import annotations

from typing import Any, Final

from sovereign_operator.api.model_deployment import ModelDeploymentSpec

# Set by NVIDIA's GPU feature discovery on every GPU node; spec.resources.gpuType names it.
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
# The taint GPU node pools commonly carry so that only GPU workloads land there.
GPU_TOLERATION: Final = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def node_selector(spec: ModelDeploymentSpec) -> dict[str, str]:
    """The user's node selector plus the GPU product; the typed gpuType field wins a clash."""
    selector = dict(spec.placement.node_selector)
    if spec.resources.gpu_type is not None:
        selector[GPU_PRODUCT_LABEL] = spec.resources.gpu_type
    return selector


def affinity(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """Residency labels as a *required* node affinity, kept apart from nodeSelector.

    Both must hold, but a separate term makes the data-residency constraint visible as
    such in the pod (and to policy checks), rather than mixed into scheduling preferences.
    Required-during-scheduling: a pod is never placed outside the residency zone, even when
    that leaves it Pending.
    """
    if not spec.placement.residency:
        return {}
    expressions = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(spec.placement.residency.items())
    ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def tolerations(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """The spec's tolerations plus the common GPU taint, without duplicates."""
    rendered = [t.to_wire() for t in spec.placement.tolerations]
    if GPU_TOLERATION not in rendered:
        rendered.append(dict(GPU_TOLERATION))
    return rendered
