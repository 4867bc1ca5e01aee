"""kopf handlers, one module per custom resource kind, plus start-up settings.

This package and `commands/run.py` are the only places that import kopf. Handlers are
registered into an explicit `kopf.OperatorRegistry` by `register_all`, never into kopf's
global default, so an embedded operator and the tests build exactly the set they run.
"""

from __future__ import annotations

import kopf

from sovereign_operator.handlers import admission, model_deployment, policies, startup
from sovereign_operator.policy_hook import IndexedPolicies
from sovereign_operator.runtime import Runtime


def register_all(
    registry: kopf.OperatorRegistry, runtime: Runtime, indexed: IndexedPolicies | None = None
) -> None:
    """`indexed`: the policy indexes' reader, also the runtime's PolicyHook; the webhook
    handler is registered only when `runtime.config.webhook` is set (kopf refuses to start
    with admission handlers and no server)."""
    startup.register(registry, runtime.config)
    model_deployment.register(registry, runtime)
    if indexed is not None:
        policies.register(registry, runtime, indexed)
        if runtime.config.webhook is not None:
            admission.register(registry, indexed, runtime.hooks.admission_audit)
