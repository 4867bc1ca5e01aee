"""Real aiohttp servers on 127.0.0.1 that answer like vLLM's /metrics, or misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm"


def fixture(name: str) -> str:
    return (FIXTURES / f"vllm-metrics-{name}.txt").read_text()


def vllm_page(running: float, waiting: float, kv: float = 0.1) -> str:
    """vLLM 0.32's real page (the busy capture) with these gauge values."""
    values = {
        "vllm:num_requests_running{": running,
        "vllm:num_requests_waiting{": waiting,
        "vllm:kv_cache_usage_perc{": kv,
    }
    lines = []
    for line in fixture("busy").splitlines():
        prefix = next((p for p in values if line.startswith(p)), None)
        lines.append(
            line if prefix is None else f"{line.rsplit(' ', 1)[0]} {float(values[prefix])}"
        )
    return "\n".join(lines) + "\n"


@dataclass
class FakeEngines:
    """Serves /metrics/{name} from the fixtures (or `pages`), and a few broken endpoints."""

    pages: dict[str, str] = field(default_factory=dict)
    slow_seconds: float = 5.0
    in_flight: int = 0
    most_in_flight: int = 0
    hits: int = 0

    async def metrics(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)  # long enough for concurrent scrapes to overlap
            name = request.match_info["name"]
            text = self.pages.get(name) or fixture(name)
            return web.Response(text=text, content_type="text/plain")
        finally:
            self.in_flight -= 1

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_seconds)
        return web.Response(text=fixture("busy"))

    async def error(self, _: web.Request) -> web.Response:
        return web.Response(status=500, text="engine dead")

    async def huge(self, _: web.Request) -> web.Response:
        return web.Response(text=fixture("busy") * 100)

    async def garbage(self, _: web.Request) -> web.Response:
        return web.Response(text="<html>not metrics</html>")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics/{name}", self.metrics)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/error", self.error)
        app.router.add_get("/huge", self.huge)
        app.router.add_get("/garbage", self.garbage)
        return app


@asynccontextmanager
async def serving(engines: FakeEngines) -> AsyncIterator[str]:
    """Run the fake engines on a free loopback port; yields the base URL."""
    runner = web.AppRunner(engines.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
