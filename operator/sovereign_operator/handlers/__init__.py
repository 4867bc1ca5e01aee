"""kopf handlers, one module per custom resource kind, plus start-up settings.

This package and `commands/run.py` are the only places that import kopf. Handlers are
registered into an explicit `kopf.OperatorRegistry` by `register_all`, never into kopf's
global default, so an embedded operator and the tests build exactly the set they run.
"""

from __future__ import annotations

import kopf

from sovereign_operator.handlers import model_deployment, startup
from sovereign_operator.runtime import Runtime


def register_all(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    startup.register(registry, runtime.config)
    model_deployment.register(registry, runtime)
