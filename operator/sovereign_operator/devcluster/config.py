"""The simulated cluster's shape: fake node pools and the users that can log in.

Pure: parsing, validation and rendering only, so the unit tier covers it without a cluster.
"""

import csv
import hashlib
import io
import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
POOL_LABEL = "sovereign.dev/node-pool"
# kwok manages only nodes carrying this annotation, so a test may add a node it drives itself.
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
DEFAULT_NODES_FILE = Path("e2e/cluster/nodes.yaml")
# One /24 of pod IPs per node inside a /16, and the node addresses in x.y.0.0/24.
MAX_NODES = 254

DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )


class NodePool(_Model):
    """`count` identical fake nodes named `<name>-<index>`."""

    name: DnsLabel
    count: Annotated[int, Field(ge=1, le=MAX_NODES)]
    gpus: Annotated[int, Field(ge=0)] = 0
    gpu_product: str | None = None
    cpu: str = "32"
    memory: str = "128Gi"
    pods: Annotated[int, Field(ge=1)] = 110
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _gpu_product_matches_gpus(self) -> "NodePool":
        if self.gpus and not self.gpu_product:
            raise ValueError(f"pool {self.name!r} has gpus but no gpuProduct label value")
        if self.gpu_product and not self.gpus:
            raise ValueError(f"pool {self.name!r} names gpuProduct but has no gpus")
        return self

    def node_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.count)]


class NodeConfig(_Model):
    pools: Annotated[list[NodePool], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_and_bounded(self) -> "NodeConfig":
        names = [pool.name for pool in self.pools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(duplicates)}")
        total = sum(pool.count for pool in self.pools)
        if total > MAX_NODES:
            raise ValueError(f"{total} nodes requested; at most {MAX_NODES} fit the pod network")
        return self

    def node_names(self) -> list[str]:
        return [name for pool in self.pools for name in pool.node_names()]


def parse_node_config(text: str, source: str = "<string>") -> NodeConfig:
    try:
        return NodeConfig.model_validate(yaml.safe_load(text))
    except ValidationError as error:
        # Name the file: the default one and a user's --nodes file look alike otherwise.
        raise ValueError(f"{source}: invalid node config: {error}") from error


def load_node_config(path: Path) -> NodeConfig:
    return parse_node_config(path.read_text(), str(path))


def pod_network_for(key: str) -> ipaddress.IPv4Network:
    """A /16 inside 127.0.0.0/8 for one cluster's pod and node addresses.

    Pod IPs live on loopback so a test can bind a real server to a pod's IP and reach it.
    The second octet comes from the state folder, so two clusters rarely overlap.
    """
    octet = 64 + int(hashlib.sha256(key.encode()).hexdigest(), 16) % 190
    return ipaddress.IPv4Network(f"127.{octet}.0.0/16")


def node_manifests(config: NodeConfig, network: ipaddress.IPv4Network) -> list[dict[str, Any]]:
    """Node objects created with status, because kwok keeps a new node's capacity as given."""
    base = int(network.network_address)
    manifests = []
    index = 0
    for pool in config.pools:
        for name in pool.node_names():
            index += 1
            pod_cidr = ipaddress.IPv4Network((base + (index << 8), 24))
            address = ipaddress.IPv4Address(base + index)
            manifests.append(_node(pool, name, str(pod_cidr), str(address)))
    return manifests


def _node(pool: NodePool, name: str, pod_cidr: str, address: str) -> dict[str, Any]:
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.pods)}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    if pool.gpus:
        capacity[GPU_RESOURCE] = str(pool.gpus)
        labels[GPU_PRODUCT_LABEL] = str(pool.gpu_product)
        labels[GPU_COUNT_LABEL] = str(pool.gpus)
        labels["nvidia.com/gpu.present"] = "true"
    labels.update(pool.labels)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE},
        },
        # kwok hands out pod IPs from the node's podCIDR (pkg/kwok/controllers/pod_controller.go).
        "spec": {"providerID": f"kwok://{name}", "podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
        },
    }


class Identity(_Model):
    """A user the apiserver authenticates by bearer token (--token-auth-file)."""

    name: str
    uid: str
    token: str
    groups: tuple[str, ...] = ()


ADMIN = "admin"
OPERATOR = "sovereign-operator"
TEST_USERS = ("alice", "bob", "mallory")


def default_identities(
    new_token: Callable[[], str] = lambda: secrets.token_hex(24),
) -> list[Identity]:
    """The admin, the operator, and test users that only ever get system:authenticated."""
    identities = [
        Identity(name=ADMIN, uid="uid-admin", token=new_token(), groups=("system:masters",))
    ]
    identities.extend(
        Identity(name=name, uid=f"uid-{name}", token=new_token())
        for name in (OPERATOR, *TEST_USERS)
    )
    return identities


def render_tokens_csv(identities: list[Identity]) -> str:
    """token,user,uid,"group1,group2" lines; the apiserver reads the file with encoding/csv."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for identity in identities:
        row = [identity.token, identity.name, identity.uid]
        if identity.groups:
            row.append(",".join(identity.groups))
        writer.writerow(row)
    return out.getvalue()
