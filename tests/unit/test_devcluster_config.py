"""The pure parts of the local control plane: node pools, pod network, tokens, kubeconfigs."""

import csv
import io
import ipaddress
from pathlib import Path

import pytest
import yaml

from sovereign_operator.devcluster.binaries import pinned_versions, repo_root
from sovereign_operator.devcluster.components import kwok_stages
from sovereign_operator.devcluster.config import (
    DEFAULT_NODES_FILE,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    Identity,
    default_identities,
    load_node_config,
    node_manifests,
    parse_node_config,
    pod_network_for,
    render_tokens_csv,
)
from sovereign_operator.devcluster.kubeconfig import render_kubeconfig

pytestmark = pytest.mark.unit

NETWORK = ipaddress.IPv4Network("127.100.0.0/16")


@pytest.fixture
def default_config_path() -> Path:
    return repo_root() / DEFAULT_NODES_FILE


def test_default_pools_are_the_documented_gpu_fleet(default_config_path: Path) -> None:
    config = load_node_config(default_config_path)
    shape = {(p.name, p.count, p.gpus, p.gpu_product) for p in config.pools}
    assert shape == {
        ("h100", 4, 8, "NVIDIA-H100-80GB-HBM3"),
        ("l40s", 2, 4, "NVIDIA-L40S"),
        ("cpu", 2, 0, None),
    }
    assert config.node_names()[:2] == ["h100-0", "h100-1"]


def test_nodes_carry_gpu_capacity_and_labels_only_in_gpu_pools(default_config_path: Path) -> None:
    nodes = {
        n["metadata"]["name"]: n
        for n in node_manifests(load_node_config(default_config_path), NETWORK)
    }
    h100, l40s, cpu = nodes["h100-3"], nodes["l40s-1"], nodes["cpu-0"]
    assert h100["status"]["capacity"][GPU_RESOURCE] == "8"
    assert h100["metadata"]["labels"][GPU_PRODUCT_LABEL] == "NVIDIA-H100-80GB-HBM3"
    assert l40s["status"]["allocatable"][GPU_RESOURCE] == "4"
    assert l40s["metadata"]["labels"][GPU_PRODUCT_LABEL] == "NVIDIA-L40S"
    assert GPU_RESOURCE not in cpu["status"]["capacity"]
    assert GPU_PRODUCT_LABEL not in cpu["metadata"]["labels"]
    for node in nodes.values():
        # The scheduler reads allocatable; kwok keeps what the node was created with.
        assert node["status"]["allocatable"] == node["status"]["capacity"]
        assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_each_node_gets_its_own_loopback_pod_range_and_address(default_config_path: Path) -> None:
    nodes = node_manifests(load_node_config(default_config_path), NETWORK)
    cidrs = [ipaddress.IPv4Network(n["spec"]["podCIDR"]) for n in nodes]
    addresses = [
        ipaddress.IPv4Address(a["address"])
        for n in nodes
        for a in n["status"]["addresses"]
        if a["type"] == "InternalIP"
    ]
    assert len(set(cidrs)) == len(nodes) == len(set(addresses))
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    for cidr in cidrs:
        assert cidr.subnet_of(NETWORK)
        assert cidr.subnet_of(loopback)
        assert cidr.prefixlen == 24  # equal-size and distinct, hence disjoint
        assert not any(address in cidr for address in addresses)


def test_pod_network_is_stable_per_state_folder_and_on_loopback() -> None:
    first = pod_network_for("/tmp/cluster-a")
    assert first == pod_network_for("/tmp/cluster-a")
    assert first != pod_network_for("/tmp/cluster-b")
    assert first.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    assert first.prefixlen == 16
    # 127.0.x and 127.1.x are where people bind things by hand; stay clear of them.
    assert int(str(first.network_address).split(".")[1]) >= 64


def test_custom_pools_with_extra_labels() -> None:
    config = parse_node_config(
        """
        pools:
          - {name: a100, count: 2, gpus: 8, gpuProduct: NVIDIA-A100-SXM4-80GB,
             labels: {topology.kubernetes.io/zone: zone-a}}
        """
    )
    node = node_manifests(config, NETWORK)[1]
    assert node["metadata"]["name"] == "a100-1"
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pools: [{name: h100, count: 1, gpus: 8}]", "has gpus but no gpuProduct"),
        ("pools: [{name: cpu, count: 1, gpuProduct: X}]", "names gpuProduct but has no gpus"),
        ("pools: [{name: a, count: 1}, {name: a, count: 2}]", "repeated: a"),
        ("pools: [{name: a, count: 255}]", "less than or equal to 254"),
        ("pools: [{name: Bad_Name, count: 1}]", "should match pattern"),
        ("pools: [{name: a, count: 1, gpu: 8}]", "Extra inputs are not permitted"),
        ("pools: []", "at least 1 item"),
        ("- just a list", "nodes.yaml"),
    ],
)
def test_invalid_node_configs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^nodes\.yaml: ") as error:
        parse_node_config(text, "nodes.yaml")
    assert message in str(error.value)


def test_tokens_file_has_the_documented_identities() -> None:
    counter = iter(range(100))
    identities = default_identities(lambda: f"token-{next(counter)}")
    rows = list(csv.reader(io.StringIO(render_tokens_csv(identities))))
    by_user = {row[1]: row for row in rows}
    assert set(by_user) == {"admin", "sovereign-operator", "alice", "bob", "mallory"}
    assert by_user["admin"][3] == "system:masters"
    for user in ("sovereign-operator", "alice", "bob", "mallory"):
        assert len(by_user[user]) == 3, "test users must get no groups beyond authenticated"
    assert len({row[0] for row in rows}) == len(rows), "tokens must be distinct"
    assert len({row[2] for row in rows}) == len(rows), "uids must be distinct"


def test_default_tokens_are_random_and_long() -> None:
    first, second = default_identities(), default_identities()
    assert first[0].token != second[0].token
    assert all(len(identity.token) >= 32 for identity in first)


def test_several_groups_are_quoted_into_one_csv_field() -> None:
    identity = Identity(name="ops", uid="u1", token="t", groups=("team-a", "team-b"))
    assert render_tokens_csv([identity]) == 't,ops,u1,"team-a,team-b"\n'


def test_kubeconfig_with_token_or_certificate() -> None:
    token = render_kubeconfig(server="https://127.0.0.1:1", ca_pem=b"CA", user="alice", token="t")
    assert token["users"] == [{"name": "alice", "user": {"token": "t"}}]
    assert token["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
    assert token["current-context"] == "alice@sovereign-local"
    cert = render_kubeconfig(
        server="https://127.0.0.1:1",
        ca_pem=b"CA",
        user="admin",
        client_cert_pem=b"C",
        client_key_pem=b"K",
    )
    assert cert["users"][0]["user"] == {
        "client-certificate-data": "Qw==",
        "client-key-data": "Sw==",
    }
    with pytest.raises(ValueError, match="exactly one"):
        render_kubeconfig(server="s", ca_pem=b"", user="u", token="t", client_cert_pem=b"C")
    with pytest.raises(ValueError, match="client_key_pem"):
        render_kubeconfig(server="s", ca_pem=b"", user="u", client_cert_pem=b"C")


def test_vendored_kwok_stages_cover_node_and_pod_lifecycles() -> None:
    documents = list(yaml.safe_load_all(kwok_stages(repo_root() / "e2e/cluster/kwok-stages")))
    assert {d["kind"] for d in documents} == {"Stage"}
    assert {d["metadata"]["name"] for d in documents} == {
        "node-initialize",
        "node-heartbeat-with-lease",
        "pod-ready",
        "pod-complete",
        "pod-delete",
    }


def test_pinned_versions_come_from_the_build_script() -> None:
    versions = pinned_versions()
    assert versions.kubernetes.startswith("v1.")
    assert versions.helm.startswith("v3.")
    assert versions.etcd.startswith("v3.6.")
    assert versions.kwok.startswith("v0.")
