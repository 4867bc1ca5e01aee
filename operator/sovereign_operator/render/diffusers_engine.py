"""The engine container's args for `engine.kind: diffusers` (Stable Diffusion images).

The pod is the vLLM engine pod in every other respect (fetch init container, security,
volumes, probes on /health, grace period); only `serve`'s args differ, and they come from
the worker's own builder, so the pod spec shows exactly the flags the engine validates.
The spec has no fields for the image limits yet, so the builder's defaults apply.
"""

from __future__ import annotations

from sovereign_operator.planning import ServingPlan
from sovereign_worker.diffusion.launch import DiffusersLaunch, diffusers_serve_args
from sovereign_worker.sovereignty import MODEL_DIR


def diffusers_launch(plan: ServingPlan) -> DiffusersLaunch:
    """The diffusers engine's launch: name, port and drain time as planned for any engine."""
    return DiffusersLaunch(
        served_name=plan.engine.served_name,
        port=plan.engine.port,
        dtype=plan.spec.engine.dtype,
        shutdown_timeout_seconds=plan.engine.shutdown_timeout_seconds,
    )


def diffusers_args(plan: ServingPlan) -> list[str]:
    """`serve --engine diffusers --model-dir MODEL_DIR -- FLAGS...`."""
    return diffusers_serve_args(MODEL_DIR, diffusers_launch(plan))
