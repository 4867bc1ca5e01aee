"""Liveness and readiness that mean something, and the HTTP endpoints serving them.

A health endpoint that answers 200 as long as the process runs hides the failure operators
are known for: the watch loop stops, the operator sees no changes, and nothing restarts
it (kopf #585, #957, dask-kubernetes #620). Here every watch stream reports each event and
bookmark it receives; /healthz fails when any stream has been silent for longer than the
window (the API server sends bookmarks about every minute, and kopf reconnects a silent
stream well before the window ends), or when reconcile passes have been waiting that long
without any finishing, so the kubelet restarts a stuck operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sovereign_operator.metrics import OperatorMetrics


class WatchActivity:
    """When each watch stream last delivered anything (event, bookmark, or a new connection)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def touch(self, stream: str) -> None:
        self._last[stream] = self._clock()

    def silent(self, window: float) -> dict[str, float]:
        """Streams silent for longer than `window`, with their silence in seconds."""
        now = self._clock()
        return {s: now - t for s, t in sorted(self._last.items()) if now - t > window}

    def seen(self) -> set[str]:
        return set(self._last)


@dataclass
class Health:
    """The verdicts /healthz and /readyz serve."""

    activity: WatchActivity
    window: float
    expected: frozenset[str]
    """Resource plurals the operator watches; ready once each has a live stream."""
    started: bool = False
    """Set once kopf has run its start-up handlers and indexed what exists."""
    stalled_for: Callable[[], float] = lambda: 0.0
    """Seconds reconcile passes have waited while none finished (a stuck pipeline)."""

    def liveness(self) -> tuple[bool, str]:
        silent = self.activity.silent(self.window)
        if silent:
            worst = ", ".join(f"{s} ({age:.0f} s)" for s, age in silent.items())
            return False, f"watch streams silent for longer than {self.window:.0f} s: {worst}"
        stalled = self.stalled_for()
        if stalled > self.window:
            return False, f"reconcile passes waiting for {stalled:.0f} s while none finished"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        if not self.started:
            return False, "starting: kopf has not finished start-up and initial indexing"
        missing = sorted(p for p in self.expected if not _streaming(p, self.activity.seen()))
        if missing:
            return False, f"no watch stream yet for: {', '.join(missing)}"
        return self.liveness()


def _streaming(plural: str, streams: Iterable[str]) -> bool:
    return any(stream.split("@", 1)[0] == plural for stream in streams)


def health_app(health: Health) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        ok, text = health.liveness()
        return web.Response(status=200 if ok else 503, text=text + "\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, text = health.readiness()
        return web.Response(status=200 if ok else 503, text=text + "\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def metrics_app(metrics: OperatorMetrics) -> web.Application:
    async def scrape(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start `app` on host:port in the running loop; the caller cleans up the runner."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
