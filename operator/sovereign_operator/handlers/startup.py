"""kopf settings decided once at start-up, and how kopf logs in.

Each setting answers a known way kopf operators fail in production: a shared default
finalizer or annotation fights another operator; a watch without timeouts goes silent;
every handler log line posted as an Event floods the API server; unbounded retries hammer
it; scanning the whole cluster's CRDs and namespaces needs RBAC we do not want to ask for.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import kopf

from sovereign_operator.observe import CHILD_KINDS
from sovereign_operator.render.meta import LABEL_MANAGED_BY, MANAGED_BY
from sovereign_operator.settings import (
    ANNOTATION_PREFIX,
    DIFFBASE_KEY,
    EVENT_COMPONENT,
    FINALIZER,
    OperatorConfig,
)

# Retries of kopf's own API calls (patching finalizers, posting events), in seconds.
API_BACKOFFS = (0.5, 1, 2, 4, 8, 16)
# Delays between failed handler runs, growing to a few minutes for a cluster that refuses.
ERROR_DELAYS = (1, 2, 4, 8, 15, 30, 60, 120, 300)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Apply `config` to kopf's settings before the operator starts."""
    persistence = settings.persistence
    persistence.finalizer = FINALIZER
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key=DIFFBASE_KEY
    )

    watching = settings.watching
    watching.server_timeout = config.watch.server
    watching.client_timeout = config.watch.client
    watching.connect_timeout = config.watch.connect
    watching.inactivity_timeout = config.watch.inactivity
    watching.reconnect_backoff = 1.0
    # Children and engine pods are filtered by the API server, not after the fact: the
    # operator never receives (or holds in memory) pods and Deployments that are not ours.
    owned = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    for kind in (*CHILD_KINDS,):
        watching.label_selectors[kind.group or "v1", kind.plural] = owned
    watching.label_selectors["v1", "pods"] = owned

    networking = settings.networking
    networking.request_timeout = config.request_timeout
    networking.connect_timeout = config.watch.connect
    networking.error_backoffs = API_BACKOFFS
    networking.enforce_retry_after = True

    # Only the Events we post on purpose (condition transitions, drift repairs); handler
    # log lines stay in the log.
    posting = settings.posting
    posting.enabled = True
    posting.loggers = False
    posting.level = logging.INFO
    posting.reporting_component = EVENT_COMPONENT
    posting.reporting_instance = socket.gethostname()
    posting.event_name_prefix = f"{EVENT_COMPONENT}-"
    posting.default_backoffs = API_BACKOFFS

    settings.queueing.worker_limit = config.worker_limit
    settings.queueing.error_delays = ERROR_DELAYS
    settings.execution.default_backoff = 15
    # The CRDs come with the chart; watching every CRD and namespace would need cluster-wide
    # RBAC on both for nothing.
    settings.scanning.disabled = True
    settings.peering.standalone = True


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same identity as our own client: the given kubeconfig, else the pod's
        service account (re-read on every login, so rotated tokens are picked up)."""
        if config.kubeconfig is not None:
            os.environ["KUBECONFIG"] = str(config.kubeconfig)
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)
