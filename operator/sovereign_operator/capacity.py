"""GPU capacity of the cluster: what planning may assume, and why a pod does not fit (pure).

The scheduler's own message ("0/8 nodes are available: 4 Insufficient nvidia.com/gpu, ...")
says that something is short, not how much. People sizing a model need the numbers:
"needs 8 nvidia.com/gpu of NVIDIA-H100-80GB-HBM3, largest free is 4".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sovereign_operator.observe import NodeSnapshot, PodSnapshot
from sovereign_operator.render.placement import GPU_PRODUCT_LABEL
from sovereign_operator.render.pod import GPU_RESOURCE


def gpus_per_node_by_type(nodes: Iterable[NodeSnapshot]) -> dict[str, int]:
    """The largest allocatable nvidia.com/gpu of a node, per nvidia.com/gpu.product value."""
    offered: dict[str, int] = {}
    for node in nodes:
        product = node.gpu_product
        if product and node.gpus > 0:
            offered[product] = max(offered.get(product, 0), node.gpus)
    return offered


@dataclass(frozen=True)
class Candidate:
    node: str
    free: int
    product: str | None


def matches_placement(pod: PodSnapshot, node: NodeSnapshot) -> bool:
    """Whether `pod` may run on `node`: nodeSelector, required node affinity
    (In/NotIn/Exists/DoesNotExist) and taints; resources are not considered."""
    if any(node.labels.get(key) != value for key, value in pod.node_selector.items()):
        return False
    if pod.required_terms and not any(
        all(_expression_holds(node.labels, *expression) for expression in term)
        for term in pod.required_terms
    ):
        return False
    return all(any(t.tolerates(taint) for t in pod.tolerations) for taint in node.taints)


def _expression_holds(
    labels: Mapping[str, str], key: str, operator: str, values: tuple[str, ...]
) -> bool:
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    return True  # Gt/Lt: not used by our pods; don't claim a mismatch we cannot judge


def _placement_text(pod: PodSnapshot) -> str:
    parts = [f"{k}={v}" for k, v in sorted(pod.node_selector.items())]
    for term in pod.required_terms[:1]:
        parts += [f"{k} {op} [{', '.join(vs)}]" for k, op, vs in term]
    return ", ".join(parts) or "any node"


def gpu_shortage(
    pod: PodSnapshot, nodes: Iterable[NodeSnapshot], used: Mapping[str, int]
) -> str | None:
    """Why `pod` cannot get its GPUs, or None when GPUs are not what stops it.

    Free GPUs per node are allocatable minus what scheduled pods request, counted only on
    nodes the pod may run on (its selector, affinity and taints). None when some such node
    has enough free GPUs: then the shortage is elsewhere (CPU, memory, volumes) and the
    scheduler's message says more than we could.
    """
    if pod.gpus <= 0:
        return None
    product = pod.node_selector.get(GPU_PRODUCT_LABEL)
    of_what = f"{GPU_RESOURCE} of {product}" if product else f"{GPU_RESOURCE} on one node"
    eligible = [n for n in nodes if n.schedulable and matches_placement(pod, n)]
    if not eligible:
        return (
            f"needs {pod.gpus} {of_what}, but no ready, schedulable node matches the "
            f"placement ({_placement_text(pod)})"
        )
    candidates = [
        Candidate(node.name, max(node.gpus - used.get(node.name, 0), 0), node.gpu_product)
        for node in eligible
    ]
    best = max(candidates, key=lambda c: (c.free, c.node))
    if best.free >= pod.gpus:
        return None
    largest = max(node.gpus for node in eligible)
    where = f"on {best.node}" if product else f"on {best.node}, {best.product or 'no GPU'}"
    message = f"needs {pod.gpus} {of_what}, largest free is {best.free} ({where})"
    if largest < pod.gpus:
        message += f"; no matching node has more than {largest} in total"
    return message
