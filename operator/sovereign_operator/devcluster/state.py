"""Where a local cluster keeps its files, and the facts `up` records for `down` and `status`.

Everything a cluster owns lives under one state folder, so two clusters with two folders
never share a file, and `down` can remove exactly what `up` created.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class StateDir:
    """The layout of one cluster's state folder."""

    root: Path

    @property
    def cluster_file(self) -> Path:
        return self.root / CLUSTER_FILE

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def config(self) -> Path:
        """Generated component configuration (audit policy, kwok stages list)."""
        return self.root / "config"

    @property
    def kwok_workdir(self) -> Path:
        # kwok loads ~/.kwok/kwok.yaml when present; a private workdir keeps it hermetic.
        return self.root / "kwok"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def identity_kubeconfigs(self) -> Path:
        return self.root / "kubeconfigs"

    def identity_kubeconfig(self, identity: str) -> Path:
        return self.identity_kubeconfigs / f"{identity}.kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.config / f"{component}.kubeconfig"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def make_dirs(self) -> None:
        # Keys, tokens and kubeconfigs live here: only the owner may look inside.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pki.mkdir(mode=0o700, exist_ok=True)
        for folder in (
            self.logs,
            self.pids,
            self.config,
            self.kwok_workdir,
            self.identity_kubeconfigs,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        # etcd refuses a data dir that others can read.
        self.etcd_data.mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


@dataclass(frozen=True)
class ClusterInfo:
    """What `up` decided; read back by `down`, `status`, `env` and the test fixtures."""

    state_dir: str
    bin_dir: str
    ports: Ports
    pod_network: str
    node_names: tuple[str, ...]
    identities: tuple[str, ...]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def save(self, state: StateDir) -> None:
        state.cluster_file.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state: StateDir) -> "ClusterInfo":
        raw = json.loads(state.cluster_file.read_text())
        return cls(
            state_dir=raw["state_dir"],
            bin_dir=raw["bin_dir"],
            ports=Ports(**raw["ports"]),
            pod_network=raw["pod_network"],
            node_names=tuple(raw["node_names"]),
            identities=tuple(raw["identities"]),
        )
