"""The NetworkPolicy that isolates engine pods: who may call them, and where they may reach.

Engine pods hold model weights and see every prompt, so they get the least network a
sovereign deployment allows: calls only from the gateway, the operator's metrics scraper
and sources the spec names; outbound only DNS and, when asked, the model store.
"""

from __future__ import annotations

from typing import Any, Final

from sovereign_operator.api.common import LabelSelector
from sovereign_operator.api.model_deployment import EgressMode, IngressSource
from sovereign_operator.planning import ENGINE_PORT, ServingPlan
from sovereign_operator.render.meta import (
    GATEWAY_ROLE,
    Manifest,
    Owner,
    engine_name,
    labels,
    object_meta,
    selector_labels,
)
from sovereign_operator.render.options import RenderOptions

# Set by the API server on every namespace since Kubernetes 1.22, so a namespace can be
# selected by name without asking anyone to label it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
DNS_PORT: Final = 53


def render_network_policy(plan: ServingPlan, options: RenderOptions, owner: Owner) -> Manifest:
    """Default-deny both ways for the engine pods, then the few allowed flows."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(engine_name(plan.name), plan.namespace, owner, labels(plan.name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(plan.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [_engine_ingress(plan, options)],
            "egress": _egress(plan, options),
        },
    }


def _engine_ingress(plan: ServingPlan, options: RenderOptions) -> dict[str, Any]:
    peers: list[dict[str, Any]] = [
        # The deployment's own gateway pods, in this namespace.
        {"podSelector": {"matchLabels": selector_labels(plan.name, GATEWAY_ROLE)}},
        # The operator scrapes /metrics on the engine port to autoscale.
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: options.operator_namespace}}},
    ]
    for source in plan.spec.network.ingress:
        peers += _ingress_peers(source)
    return {"from": peers, "ports": [{"protocol": "TCP", "port": ENGINE_PORT}]}


def _ingress_peers(source: IngressSource) -> list[dict[str, Any]]:
    """One spec source as NetworkPolicy peers.

    An ipBlock cannot share a peer with selectors, so a source naming both becomes two
    peers (either admits). A source naming nothing admits nothing: an empty peer would be
    refused by the API server, and reading it as "everyone" would silently open the engine.
    """
    peers: list[dict[str, Any]] = []
    selector_peer: dict[str, Any] = {}
    if source.namespace_selector is not None:
        selector_peer["namespaceSelector"] = _selector(source.namespace_selector)
    if source.pod_selector is not None:
        selector_peer["podSelector"] = _selector(source.pod_selector)
    if selector_peer:
        peers.append(selector_peer)
    if source.cidr is not None:
        peers.append({"ipBlock": {"cidr": source.cidr}})
    return peers


def _selector(selector: LabelSelector) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if selector.match_labels:
        rendered["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        rendered["matchExpressions"] = [
            {
                "key": e.key,
                "operator": e.operator,
                **({"values": list(e.values)} if e.values else {}),
            }
            for e in selector.match_expressions
        ]
    return rendered


def _egress(plan: ServingPlan, options: RenderOptions) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            # Only the cluster's DNS pods: DNS to arbitrary resolvers is an exfiltration path.
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {NAMESPACE_NAME_LABEL: options.dns_namespace}
                    },
                    "podSelector": {"matchLabels": dict(options.dns_pod_labels)},
                }
            ],
            "ports": [
                {"protocol": "UDP", "port": DNS_PORT},
                {"protocol": "TCP", "port": DNS_PORT},
            ],
        }
    ]
    network = plan.spec.network
    if network.egress is EgressMode.MODEL_STORE and network.model_store_cidrs:
        # Ports are left open on purpose: S3-compatible stores listen on 443, 9000 or
        # whatever the organisation chose, and the address block already pins the peer.
        rules.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in network.model_store_cidrs]})
    return rules
