"""What `sovereign cluster status` and `env` report about a cluster in a state folder."""

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s

from . import processes
from .config import GPU_PRODUCT_LABEL, GPU_RESOURCE
from .kube import admin_tls_context, api_client, node_ready, object_name
from .state import ClusterInfo, StateDir


class NoClusterError(RuntimeError):
    """The state folder holds no cluster."""


@dataclass(frozen=True)
class NodeSummary:
    name: str
    ready: bool
    gpus: str
    gpu_product: str


@dataclass(frozen=True)
class ClusterStatus:
    info: ClusterInfo
    components: dict[str, bool]
    apiserver_ready: bool
    nodes: list[NodeSummary]

    @property
    def healthy(self) -> bool:
        return (
            self.apiserver_ready
            and all(self.components.values())
            and all(node.ready for node in self.nodes)
        )


def status(state_root: Path) -> ClusterStatus:
    state = StateDir(state_root.resolve())
    if not state.cluster_file.is_file():
        raise NoClusterError(f"no cluster in {state.root} (run `up` first)")
    info = ClusterInfo.load(state)
    running = {record.name: record.matches_live_process() for record in processes.records(state)}
    nodes: list[NodeSummary] = []
    ready = running.get("kube-apiserver", False) and _apiserver_ready(state, info)
    if ready:
        with api_client(state.admin_kubeconfig) as api:
            nodes = [_summary(node) for node in k8s.CoreV1Api(api).list_node().items]
    return ClusterStatus(info=info, components=running, apiserver_ready=ready, nodes=nodes)


def _apiserver_ready(state: StateDir, info: ClusterInfo) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310  (our own https URL)
            f"{info.server}/readyz", timeout=5, context=admin_tls_context(state)
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _summary(node: k8s.V1Node) -> NodeSummary:
    capacity = (node.status and node.status.capacity) or {}
    labels = (node.metadata and node.metadata.labels) or {}
    return NodeSummary(
        name=object_name(node),
        ready=node_ready(node),
        gpus=capacity.get(GPU_RESOURCE, "0"),
        gpu_product=labels.get(GPU_PRODUCT_LABEL, "-"),
    )


def env_lines(state_root: Path) -> list[str]:
    """Shell lines that point kubectl, helm and the test suite at this cluster."""
    state = StateDir(state_root.resolve())
    if not state.cluster_file.is_file():
        raise NoClusterError(f"no cluster in {state.root} (run `up` first)")
    info = ClusterInfo.load(state)
    return [
        f"export KUBECONFIG={state.admin_kubeconfig}",
        f"export SOVEREIGN_KUBECONFIG={state.admin_kubeconfig}",
        f'export PATH="{info.bin_dir}:$PATH"',
    ]
