"""The operator's own configuration: names it owns, timings, and limits (pure).

These are decided once at start-up (`sovereign run` options, the chart's values) and
applied to kopf in `handlers/startup.py`. Every name here is ours, never kopf's default,
so this operator and any other kopf operator on the cluster never fight over a finalizer
or an annotation (kopf #587, #664, #1107).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sovereign_operator.planning import DEFAULT_ENGINE_IMAGE
from sovereign_operator.render.options import DEFAULT_OPERATOR_NAMESPACE, RenderOptions

if TYPE_CHECKING:
    from sovereign_operator.audit_hooks import AuditSettings

FINALIZER: Final = "sovereign.dev/finalizer"
# kopf's bookkeeping (which handlers ran, the last handled spec) lives in annotations
# under a prefix of its own, apart from the sovereign.dev/ labels users read.
ANNOTATION_PREFIX: Final = "operator.sovereign.dev"
DIFFBASE_KEY: Final = "last-handled-configuration"
EVENT_COMPONENT: Final = "sovereign-operator"


@dataclass(frozen=True)
class WatchTimeouts:
    """Bounds on every watch request, so a silently dead connection cannot stall us.

    The server ends each watch after `server` seconds, the client gives up at `client`
    (a little later, in case the server's close is lost), and a stream without any event
    or bookmark for `inactivity` seconds is reconnected (the API server sends bookmarks
    about every minute).
    """

    server: int = 300
    """Whole seconds: the API server parses timeoutSeconds as an integer."""
    client: float = 330.0
    connect: float = 10.0
    inactivity: float = 90.0


@dataclass(frozen=True)
class WebhookSettings:
    """The validating admission webhook (`handlers/admission.py`)."""

    port: int = 9443
    cert_dir: Path = Path("/var/run/sovereign/webhook")
    """Where the operator keeps the CA and serving certificate it issues and rotates."""
    host: str | None = None
    """The address the API server reaches in a URL client config (an operator run outside
    the cluster); unused when `service` is set."""
    service: str | None = None
    """The webhook Service in the operator's namespace (in a cluster)."""
    configuration_name: str = "sovereign-operator"
    """The ValidatingWebhookConfiguration the operator keeps up to date (the chart's)."""
    exempt_users: tuple[str, ...] = ()
    """Users the webhook skips, besides the operator's own identity (found at start)."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything `sovereign run` decides before the operator starts."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty means all namespaces."""
    kubeconfig: Path | None = None
    """None: in-cluster service account."""
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    engine_image: str = DEFAULT_ENGINE_IMAGE
    resync_seconds: float = 300.0
    """Full reconcile of every ModelDeployment this often, on top of watch-driven ones."""
    worker_limit: int = 5000
    """kopf's per-resource-kind worker cap. It must exceed the number of objects of any
    watched kind at start-up: kopf indexes wait for every object to be indexed, and objects
    beyond the cap would never get a worker (kopf docs/indexing.rst)."""
    reconcile_concurrency: int = 16
    """Reconcile passes running at once. kopf's workers cannot be capped low (see above),
    so this is what keeps a burst of thousands of objects from queueing thousands of
    requests on the client and the API server: passes wait for a slot, not for a socket."""
    watch: WatchTimeouts = field(default_factory=WatchTimeouts)
    request_timeout: float = 60.0
    liveness_window: float = 240.0
    """/healthz fails when a watch stream has seen no event or bookmark for this long:
    past kopf's own reconnect after `watch.inactivity`, so only a stuck loop trips it."""
    metrics_port: int = 8080
    health_port: int = 8081
    bind_address: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    autoscaler_interval: float = 5.0
    """Seconds between the autoscaler's scrape-and-decide rounds."""
    autoscaler_startup_grace: float = 60.0
    """Seconds a replica must have been Ready before its metrics count (Tuning's default);
    tests shorten it, since simulated pods carry no traffic while they start."""
    audit: AuditSettings | None = None
    """None: no audit trail (`--audit-dir` unset)."""
    webhook: WebhookSettings | None = None
    """None: no admission webhook; reconcile still enforces every ModelPolicy."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def render_options(self) -> RenderOptions:
        return RenderOptions(operator_namespace=self.operator_namespace)
