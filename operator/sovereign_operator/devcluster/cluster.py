"""Bring a local control plane up, report on it, and take it down again.

`up` writes everything into the state folder first (PKI, kubeconfigs, cluster.json), then
starts the components one tier at a time, so a failure at any point leaves enough behind
for `down` to clean up and for a person to read the logs.
"""

import ipaddress
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from . import components, processes
from .binaries import Binaries, ensure_binaries, repo_root
from .config import (
    DEFAULT_NODES_FILE,
    default_identities,
    load_node_config,
    node_manifests,
    pod_network_for,
    render_tokens_csv,
)
from .kube import admin_tls_context, api_client, node_ready, object_name
from .kubeconfig import render_kubeconfig, write_kubeconfig
from .pki import Pki, write_pki
from .state import ClusterInfo, Ports, StateDir

Progress = Callable[[str], None]
KWOK_STAGES_DIR = Path("e2e/cluster/kwok-stages")


class ClusterError(RuntimeError):
    """The cluster could not be brought up, or the state folder is not a cluster's."""


def _quiet(_: str) -> None:
    return None


def up(
    state_root: Path,
    *,
    nodes_file: Path | None = None,
    progress: Progress = _quiet,
    ready_timeout: float = 120.0,
    die_with_parent: bool = False,
) -> ClusterInfo:
    """Start a cluster in `state_root`, or return the one already running there.

    die_with_parent ties the components' lives to this process (test sessions); by default
    they outlive it, as `sovereign cluster up` needs.
    """
    state = StateDir(state_root.resolve())
    if state.cluster_file.is_file():
        if _all_running(state):
            progress(f"cluster already running in {state.root}")
            return ClusterInfo.load(state)
        progress(f"removing the stopped cluster left in {state.root}")
        down(state.root)
    elif state.root.exists() and any(state.root.iterdir()):
        raise ClusterError(f"{state.root} exists and is not a cluster state folder; pick another")

    started = time.monotonic()
    binaries = ensure_binaries()
    progress(f"binaries: {binaries.directory}")
    root = repo_root()
    node_config = load_node_config(nodes_file or root / DEFAULT_NODES_FILE)
    state.make_dirs()
    etcd, etcd_peer, apiserver, controller_manager, scheduler, kwok = processes.free_ports(6)
    ports = Ports(etcd, etcd_peer, apiserver, controller_manager, scheduler, kwok)
    pki, identity_names = _write_credentials(state, f"https://127.0.0.1:{ports.apiserver}")
    info = ClusterInfo(
        state_dir=str(state.root),
        bin_dir=str(binaries.directory),
        ports=ports,
        pod_network=str(pod_network_for(str(state.root))),
        node_names=tuple(node_config.node_names()),
        identities=identity_names,
    )
    (state.config / "audit-policy.yaml").write_text(components.AUDIT_POLICY)
    kwok_config = state.config / "kwok.yaml"
    kwok_config.write_text(components.kwok_stages(root / KWOK_STAGES_DIR))
    info.save(state)

    try:
        _start_components(
            binaries,
            state,
            ports,
            pki,
            kwok_config=kwok_config,
            progress=progress,
            die_with_parent=die_with_parent,
        )
        with api_client(state.admin_kubeconfig) as api:
            network = ipaddress.IPv4Network(info.pod_network)
            _create_nodes(api, node_manifests(node_config, network), progress)
            _wait_ready(api, info, ready_timeout, progress)
    except BaseException:
        processes.stop(state, order=_stop_order())
        progress(f"start-up failed; logs kept in {state.logs} (`down` removes them)")
        raise
    progress(f"cluster up in {time.monotonic() - started:.1f} s")
    return info


def _write_credentials(state: StateDir, server: str) -> tuple[Pki, tuple[str, ...]]:
    """PKI, token file, and a kubeconfig for the admin, each component and each identity."""
    pki = write_pki(state.pki, components.COMPONENT_IDENTITIES)
    identities = default_identities()
    (state.pki / "tokens.csv").write_text(render_tokens_csv(identities))
    ca = pki.ca_cert.read_bytes()
    for name, identity in components.COMPONENT_IDENTITIES.items():
        config = render_kubeconfig(
            server=server,
            ca_pem=ca,
            user=identity.user,
            client_cert_pem=pki.client_cert(name).read_bytes(),
            client_key_pem=pki.client_key(name).read_bytes(),
        )
        target = state.admin_kubeconfig if name == "admin" else state.component_kubeconfig(name)
        write_kubeconfig(target, config)
    for user in identities:
        config = render_kubeconfig(server=server, ca_pem=ca, user=user.name, token=user.token)
        write_kubeconfig(state.identity_kubeconfig(user.name), config)
    return pki, tuple(user.name for user in identities)


def _start_components(
    binaries: Binaries,
    state: StateDir,
    ports: Ports,
    pki: Pki,
    *,
    kwok_config: Path,
    progress: Progress,
    die_with_parent: bool,
) -> None:
    plane = components.control_plane(binaries, state, ports, pki, kwok_config)
    tls = admin_tls_context(state)
    etcd, apiserver, *clients = plane
    # etcd before the apiserver before its clients; the clients start together because
    # they only need the apiserver, which saves seconds on a small machine.
    for tier in ([etcd], [apiserver], clients):
        started = [
            (component, processes.start(component, state, die_with_parent=die_with_parent))
            for component in tier
        ]
        for component, record in started:
            processes.wait_healthy(component, record, state, tls)
            progress(f"{component.name} healthy (pid {record.pid})")


def _create_nodes(api: k8s.ApiClient, manifests: list[dict[str, Any]], progress: Progress) -> None:
    core = k8s.CoreV1Api(api)
    for manifest in manifests:
        body: Any = manifest  # the client sends a plain dict unchanged
        core.create_node(body=body)
    progress(f"created {len(manifests)} fake nodes")


def _wait_ready(api: k8s.ApiClient, info: ClusterInfo, timeout: float, progress: Progress) -> None:
    """Nodes Ready (kwok is managing them) and the default service account exists (the
    controller-manager is reconciling), so a pod created next is admitted and scheduled."""
    core = k8s.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    waiting: set[str] = set(info.node_names)
    while time.monotonic() < deadline:
        waiting = set(info.node_names) - {
            object_name(node) for node in core.list_node().items if node_ready(node)
        }
        accounts = core.list_namespaced_service_account("default").items
        if not waiting and "default" in {object_name(account) for account in accounts}:
            progress(f"{len(info.node_names)} nodes Ready")
            return
        time.sleep(0.3)
    raise ClusterError(
        f"not ready after {timeout:.0f} s; nodes not Ready: {sorted(waiting) or 'none'} "
        f"(see {Path(info.state_dir) / 'logs'})"
    )


def _stop_order() -> list[str]:
    return ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]


def _all_running(state: StateDir) -> bool:
    records = processes.records(state)
    return len(records) == len(_stop_order()) and all(
        record.matches_live_process() for record in records
    )


def down(state_root: Path) -> list[str]:
    """Stop the processes this state folder records, then delete the folder."""
    state = StateDir(state_root.resolve())
    if not state.root.exists():
        return []
    if not (state.cluster_file.is_file() or state.pids.is_dir()):
        raise ClusterError(f"{state.root} is not a cluster state folder; refusing to delete it")
    stopped = processes.stop(state, order=_stop_order())
    shutil.rmtree(state.root)
    return stopped
