"""Command lines of the control plane components: what each process is told, and why.

Pure: builds argv lists and file contents. Starting and stopping lives in processes.py.
"""

from dataclasses import dataclass, field
from pathlib import Path

from .binaries import Binaries
from .pki import FRONT_PROXY_CLIENT, ClientIdentity, Pki
from .state import Ports, StateDir

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# kwok renews each node's Lease at this period; the controller-manager marks a node
# NotReady when its lease is older than --node-monitor-grace-period (default 50 s).
NODE_LEASE_SECONDS = 40

# Certificate identities of the components. The scheduler and controller-manager get the
# bootstrap RBAC roles Kubernetes ships for exactly these user names; kwok writes the status
# of every node and pod, so it acts as a cluster admin, under its own name for the audit log.
COMPONENT_IDENTITIES = {
    "admin": ClientIdentity("admin", "system:masters"),
    "kube-controller-manager": ClientIdentity("system:kube-controller-manager"),
    "kube-scheduler": ClientIdentity("system:kube-scheduler"),
    "kwok": ClientIdentity("kwok-controller", "system:masters"),
}

# Request metadata for every call (who did what), without bodies: enough to check the
# operator's least-privilege claims, small enough for a test run. Lease renewals are noise.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{group: coordination.k8s.io, resources: [leases]}]
  - level: None
    nonResourceURLs: [/healthz*, /readyz*, /livez*, /version]
  - level: Metadata
"""


@dataclass(frozen=True)
class Component:
    """One process: how to start it and which URL answers 200 once it is serving."""

    name: str
    argv: list[str]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)


def control_plane(
    binaries: Binaries, state: StateDir, ports: Ports, pki: Pki, kwok_config: Path
) -> list[Component]:
    """The components in start order; `down` stops them in reverse."""
    return [
        _etcd(binaries, state, ports),
        _apiserver(binaries, state, ports, pki),
        _controller_manager(binaries, state, ports, pki),
        _scheduler(binaries, state, ports, pki),
        _kwok(binaries, state, ports, kwok_config),
    ]


def _etcd(binaries: Binaries, state: StateDir, ports: Ports) -> Component:
    client = f"http://127.0.0.1:{ports.etcd}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return Component(
        name="etcd",
        argv=[
            str(binaries.path("etcd")),
            "--name=local",
            f"--data-dir={state.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            # Throwaway data: durability costs seconds per test on slow disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        health_url=f"{client}/health",
    )


def _apiserver(binaries: Binaries, state: StateDir, ports: Ports, pki: Pki) -> Component:
    return Component(
        name="kube-apiserver",
        argv=[
            str(binaries.path("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
            "--bind-address=127.0.0.1",
            # Without it the apiserver looks for a default route and, on a machine without
            # one, refuses to start.
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={pki.directory / 'tokens.csv'}",
            f"--requestheader-client-ca-file={pki.front_proxy_ca}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            "--authorization-mode=Node,RBAC",
            # The default plugin set (NamespaceLifecycle, ServiceAccount, PodSecurity,
            # the admission webhooks, ResourceQuota, ...) plus what kubeadm adds.
            "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            # No kube-proxy or real endpoints here: don't publish 127.0.0.1 as the
            # `kubernetes` service's endpoint, where pods could not reach it anyway.
            "--endpoint-reconciler-type=none",
            # Allowed cluster-wide so PodSecurity, not the apiserver, is what refuses a
            # privileged pod in a restricted namespace (as on a real cluster).
            "--allow-privileged=true",
            f"--audit-policy-file={state.config / 'audit-policy.yaml'}",
            f"--audit-log-path={state.logs / 'audit.log'}",
            "--audit-log-maxsize=100",
            "--profiling=false",
        ],
        health_url=f"https://127.0.0.1:{ports.apiserver}/readyz",
    )


def _controller_manager(binaries: Binaries, state: StateDir, ports: Ports, pki: Pki) -> Component:
    return _kube_component(
        "kube-controller-manager",
        ports.controller_manager,
        binaries,
        state,
        pki,
        # Each controller acts as its own service account, as under kubeadm, so RBAC
        # denials in tests look the way they would on a real cluster.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
    )


def _scheduler(binaries: Binaries, state: StateDir, ports: Ports, pki: Pki) -> Component:
    return _kube_component("kube-scheduler", ports.scheduler, binaries, state, pki)


def _kube_component(
    name: str, port: int, binaries: Binaries, state: StateDir, pki: Pki, *extra: str
) -> Component:
    """The controller-manager and the scheduler start alike: their own identity's kubeconfig
    (also for delegated authentication and authorization), a loopback HTTPS port with the
    apiserver's serving certificate, no leader election (one replica), no profiling."""
    kubeconfig = state.component_kubeconfig(name)
    return Component(
        name=name,
        argv=[
            str(binaries.path(name)),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--leader-elect=false",
            *extra,
            "--profiling=false",
        ],
        health_url=f"https://127.0.0.1:{port}/healthz",
    )


def _kwok(binaries: Binaries, state: StateDir, ports: Ports, kwok_config: Path) -> Component:
    return Component(
        name="kwok",
        argv=[
            str(binaries.path("kwok")),
            f"--kubeconfig={state.component_kubeconfig('kwok')}",
            f"--config={kwok_config}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            # Fallbacks for a node created without podCIDR/addresses: stay on loopback.
            "--cidr=127.0.255.0/24",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{ports.kwok}",
        ],
        health_url=f"http://127.0.0.1:{ports.kwok}/healthz",
        env={"KWOK_WORKDIR": str(state.kwok_workdir)},
    )


def kwok_stages(stage_dir: Path) -> str:
    """The vendored Stage documents joined into one multi-document YAML for --config."""
    files = sorted(stage_dir.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no kwok Stage files in {stage_dir}")
    return "\n---\n".join(path.read_text().strip() for path in files) + "\n"
