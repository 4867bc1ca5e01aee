"""Health probes and the termination grace period of the engine container.

vLLM answers GET /health once the model is loaded and the engine loop runs. Loading a
large model (reading hundreds of GB, compiling CUDA graphs) takes many minutes, so the
startup probe alone carries that wait; readiness and liveness only start after it passes.
"""

from __future__ import annotations

from typing import Any, Final

from sovereign_worker.engine_args import EngineLaunch

HEALTH_PATH: Final = "/health"
# Up to an hour to load weights and warm up: 8B loads in about a minute, a 405B-class model
# from network storage can take half an hour. The model fetch runs before this, in the init
# container, and does not count against it.
STARTUP_PERIOD_SECONDS: Final = 10
STARTUP_FAILURE_THRESHOLD: Final = 360
# Time after vLLM's own drain for the process tree to exit and CUDA contexts to be freed.
EXIT_MARGIN_SECONDS: Final = 30


def _http_get() -> dict[str, Any]:
    return {"httpGet": {"path": HEALTH_PATH, "port": "http", "scheme": "HTTP"}}


def engine_probes() -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe for the engine container."""
    return {
        "startupProbe": {
            **_http_get(),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": STARTUP_FAILURE_THRESHOLD,
        },
        # Out of the Service within ~15 s of trouble, back as soon as /health answers.
        "readinessProbe": {
            **_http_get(),
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
            "successThreshold": 1,
        },
        # Restarts only a wedged engine: a busy one can answer slowly, and restarting it
        # costs a full model load, so allow about two minutes of silence.
        "livenessProbe": {
            **_http_get(),
            "periodSeconds": 20,
            "timeoutSeconds": 10,
            "failureThreshold": 6,
        },
    }


def termination_grace_seconds(launch: EngineLaunch) -> int:
    """Longer than vLLM's --shutdown-timeout, so the kubelet never kills a draining engine."""
    return launch.shutdown_timeout_seconds + EXIT_MARGIN_SECONDS
