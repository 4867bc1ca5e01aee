"""The engine NetworkPolicy: who may call the engine, and where it may reach."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.render import RenderOptions
from tests.unit.render.cases import children, make_plan

pytestmark = pytest.mark.unit

GATEWAY = {
    "podSelector": {
        "matchLabels": {"sovereign.dev/deployment": "llama", "sovereign.dev/role": "gateway"}
    }
}
OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sovereign-system"}}
}
DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
ENGINE_PORT = [{"protocol": "TCP", "port": 8000}]


def policy(network: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    serving_plan = make_plan(network=network or {})
    spec: dict[str, Any] = children(serving_plan, options=RenderOptions(**options))[
        "NetworkPolicy"
    ]["spec"]
    return spec


def test_default_is_deny_except_gateway_metrics_and_dns() -> None:
    spec = policy()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": [GATEWAY, OPERATOR], "ports": ENGINE_PORT}]
    # modelStore egress without addresses (a pvc source needs none) is DNS only.
    assert spec["egress"] == [DNS]


@pytest.mark.parametrize(
    ("network", "egress"),
    [
        pytest.param({"egress": "none"}, [DNS], id="none"),
        pytest.param(
            {"egress": "none", "modelStoreCidrs": ["10.8.0.0/16"]}, [DNS], id="none-ignores-cidrs"
        ),
        pytest.param(
            {"egress": "modelStore", "modelStoreCidrs": ["10.8.0.0/16", "192.168.4.10/32"]},
            [
                DNS,
                {
                    "to": [
                        {"ipBlock": {"cidr": "10.8.0.0/16"}},
                        {"ipBlock": {"cidr": "192.168.4.10/32"}},
                    ]
                },
            ],
            id="model-store",
        ),
    ],
)
def test_egress_modes(network: dict[str, Any], egress: list[dict[str, Any]]) -> None:
    assert policy(network)["egress"] == egress


@pytest.mark.parametrize(
    ("source", "peers"),
    [
        pytest.param({"cidr": "10.20.0.0/16"}, [{"ipBlock": {"cidr": "10.20.0.0/16"}}], id="cidr"),
        pytest.param(
            {"namespaceSelector": {"matchLabels": {"team": "radiology"}}},
            [{"namespaceSelector": {"matchLabels": {"team": "radiology"}}}],
            id="namespaces",
        ),
        pytest.param(
            {
                "namespaceSelector": {"matchLabels": {"team": "radiology"}},
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["viewer"]}]
                },
            },
            [
                {
                    "namespaceSelector": {"matchLabels": {"team": "radiology"}},
                    "podSelector": {
                        "matchExpressions": [{"key": "app", "operator": "In", "values": ["viewer"]}]
                    },
                }
            ],
            id="pods-in-namespaces",
        ),
        pytest.param(
            {"podSelector": {"matchLabels": {"app": "notebook"}}, "cidr": "10.1.2.0/24"},
            [
                {"podSelector": {"matchLabels": {"app": "notebook"}}},
                {"ipBlock": {"cidr": "10.1.2.0/24"}},
            ],
            id="selector-and-cidr-are-separate-peers",
        ),
    ],
)
def test_ingress_sources(source: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    assert policy({"ingress": [source]})["ingress"] == [
        {"from": [GATEWAY, OPERATOR, *peers], "ports": ENGINE_PORT}
    ]


def test_operator_and_dns_locations_come_from_the_options() -> None:
    spec = policy(operator_namespace="ops", dns_namespace="dns", dns_pod_labels={"app": "coredns"})
    assert spec["ingress"][0]["from"][1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}
    }
    assert spec["egress"][0]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
            "podSelector": {"matchLabels": {"app": "coredns"}},
        }
    ]
