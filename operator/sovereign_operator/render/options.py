"""Operator configuration that shapes rendered children but is not part of a spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

DEFAULT_OPERATOR_NAMESPACE: Final = "sovereign-system"
DEFAULT_WORKER_COMMAND: Final = "sovereign-worker"


@dataclass(frozen=True)
class RenderOptions:
    """Settings of this operator installation that the renderers need."""

    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    """Where the operator (and its metrics scraper) runs; engine ingress admits it."""
    worker_command: str = DEFAULT_WORKER_COMMAND
    """The worker entry point inside the engine image."""
    dns_namespace: str = "kube-system"
    """Namespace of the cluster DNS pods, the only egress every engine pod gets."""
    dns_pod_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    """Labels of the cluster DNS pods (CoreDNS keeps kube-dns's label for compatibility)."""
