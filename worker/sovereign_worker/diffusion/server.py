"""The diffusers engine's HTTP server (aiohttp) and its life cycle.

Start: check the folder, load the pipeline, then listen, so `/health` answers only once the
engine can serve (the pod's startup probe waits for exactly that). Stop, on SIGTERM or
SIGINT: refuse new generation requests with 503 and fail `/health` (the pod leaves the
Service), let every admitted request finish within `--shutdown-timeout` seconds, then close
and exit 0; a drain cut short by the timeout exits 1.

Generation runs in a thread pool of `--max-concurrency` threads, so the event loop keeps
answering health checks, scrapes and refusals while images are being made. Prompts are
never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from sovereign_worker.diffusion.admission import AdmissionGate, QueueFull, ShuttingDown
from sovereign_worker.diffusion.image_request import ImageRequest, RequestError, parse_image_request
from sovereign_worker.diffusion.launch import DiffusersLaunch
from sovereign_worker.diffusion.metrics import CONTENT_TYPE, EngineMetrics
from sovereign_worker.diffusion.pipeline import b64_png
from sovereign_worker.engine_args import LISTEN_HOST

log = logging.getLogger(__name__)
# Prompts are short; anything larger is not an image request.
MAX_BODY_BYTES: Final = 64 * 1024
# After the drain, time for the last responses to be written before connections are closed.
_CLOSE_SECONDS: Final = 5.0


class Generator(Protocol):
    """What the server needs from a pipeline: blocking generation of PNG images."""

    def generate(self, request: ImageRequest) -> list[bytes]: ...


@dataclass
class Engine:
    launch: DiffusersLaunch
    model_dir: Path
    pipeline: Generator
    gate: AdmissionGate
    metrics: EngineMetrics
    pool: ThreadPoolExecutor
    created: int


ENGINE_KEY: Final = web.AppKey("engine", Engine)


def build_app(launch: DiffusersLaunch, model_dir: Path, pipeline: Generator) -> web.Application:
    """The application with its routes; the caller owns the life cycle (see `serve`)."""
    gate = AdmissionGate(launch.max_concurrency, launch.max_queue)
    engine = Engine(
        launch=launch,
        model_dir=model_dir,
        pipeline=pipeline,
        gate=gate,
        metrics=EngineMetrics(gate, launch.served_name),
        pool=ThreadPoolExecutor(launch.max_concurrency, thread_name_prefix="generate"),
        created=int(time.time()),
    )
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ENGINE_KEY] = engine
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/images/generations", _generations)
    return app


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    """vLLM's error body, so clients and the gateway read both engines alike."""
    kind = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}.get(
        status, "ServiceUnavailableError" if status == 503 else "InternalServerError"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)


async def _health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    if engine.gate.closed:
        return web.Response(status=503, text="shutting down")
    return web.Response(status=200)


async def _metrics(request: web.Request) -> web.Response:
    exposition = request.app[ENGINE_KEY].metrics.exposition()
    return web.Response(body=exposition, headers={"Content-Type": CONTENT_TYPE})


async def _models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    model = {
        "id": engine.launch.served_name,
        "object": "model",
        "created": engine.created,
        "owned_by": "sovereign",
        "root": str(engine.model_dir),
        "parent": None,
    }
    return web.json_response({"object": "list", "data": [model]})


async def _generations(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    response = await _generate(request, engine)
    engine.metrics.count(response.status)
    return response


async def _generate(request: web.Request, engine: Engine) -> web.Response:
    try:
        body: Any = await request.json()
    except ValueError:
        return _error(400, "the body must be JSON")
    try:
        image_request = parse_image_request(body, engine.launch)
    except RequestError as error:
        return _error(error.status, error.message, error.param)
    try:
        async with engine.gate.slot():
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            images = await loop.run_in_executor(
                engine.pool, engine.pipeline.generate, image_request
            )
            elapsed = time.monotonic() - started
            engine.metrics.observe_generation(elapsed)
    except QueueFull as error:
        return _error(429, str(error))
    except ShuttingDown as error:
        return _error(503, str(error))
    except Exception:
        log.exception("image generation failed")
        return _error(500, "image generation failed; the engine log has the details")
    log.info(
        "generated %d image(s) of %dx%d in %d steps in %.2f s",
        image_request.n,
        image_request.width,
        image_request.height,
        image_request.steps,
        elapsed,
    )
    return web.json_response(
        {"created": int(time.time()), "data": [{"b64_json": b64_png(png)} for png in images]}
    )


async def serve(app: web.Application, port: int) -> bool:
    """Listen until SIGTERM or SIGINT, then drain; True when every request finished."""
    engine = app[ENGINE_KEY]
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LISTEN_HOST, port, shutdown_timeout=_CLOSE_SECONDS)
    await site.start()
    log.info("serving %s on port %d", engine.launch.served_name, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    engine.gate.close()
    timeout = engine.launch.shutdown_timeout_seconds
    log.info(
        "shutting down: refusing new requests, draining %d running and %d waiting for up to %d s",
        engine.gate.running,
        engine.gate.waiting,
        timeout,
    )
    try:
        async with asyncio.timeout(timeout):
            await engine.gate.wait_idle()
        drained = True
    except TimeoutError:
        drained = False
    if not drained:
        log.warning("the drain timed out after %d s; closing with requests in flight", timeout)
    await runner.cleanup()
    engine.pool.shutdown(wait=drained, cancel_futures=True)
    return drained


def run(launch: DiffusersLaunch, model_dir: Path) -> int:
    """Load the pipeline from the verified folder, serve, drain; returns the exit code."""
    # Imported here: torch and diffusers take seconds to import and exist only in engine images.
    from sovereign_worker.diffusion.pipeline import ImagePipeline  # noqa: PLC0415

    pipeline = ImagePipeline(model_dir, launch.dtype)
    log.info("engine limits: %s", json.dumps(launch.model_dump()))
    app = build_app(launch, model_dir, pipeline)
    if asyncio.run(serve(app, launch.port)):
        return 0
    # A generation thread is still running, and the interpreter would wait for it at exit,
    # past the pod's grace period; leave now, as a kill would, but with the logs flushed.
    logging.shutdown()
    os._exit(1)
