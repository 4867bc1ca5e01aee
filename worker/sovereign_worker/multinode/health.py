"""`/health` for pods that run no API server (group members), on the engine's port.

The pod template is shared by every pod of a group, so the members get the same startup,
readiness and liveness probes as the leader. A member answers them itself: 200 while its
part of the engine runs and the group is serving, 503 otherwise. A group then counts as
ready only when every member is (see the operator's `groups`).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from sovereign_worker.engine_args import LISTEN_HOST
from sovereign_worker.serve import ServeError


class HealthServer:
    """A tiny aiohttp app; `healthy()` is asked on every probe."""

    def __init__(self, port: int, healthy: Callable[[], str | None]) -> None:
        """`healthy` returns None when all is well, else why not (sent with the 503)."""
        self._port = port
        self._healthy = healthy
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, LISTEN_HOST, self._port).start()
        except OSError as error:
            raise ServeError(f"cannot serve /health on port {self._port}: {error}") from None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, _request: web.Request) -> web.Response:
        problem = self._healthy()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=problem + "\n")
