"""Concurrent `/metrics` scrapes of many engine pods, each bounded in time and size.

One aiohttp session is kept across ticks so the connections to engine pods are reused
(1,000 pods every few seconds would otherwise pay 1,000 TCP handshakes per tick). A
semaphore bounds how many scrapes are in flight; each request has its own total timeout;
a failure is reported per pod and never fails the round. Proxy variables are ignored
(`trust_env=False`): engine pods are reached directly, never through an egress proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import aiohttp

from sovereign_operator.autoscaling.evidence import EngineLoad
from sovereign_operator.autoscaling.exposition import ExpositionError, parse_engine_load

# A real vLLM page is ~50 KB; many LoRA adapters or engines make it larger, but a page
# of megabytes is a misbehaving endpoint and must not cost the operator its memory.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# Ask for the classic text format: prometheus-client's parser reads it, not OpenMetrics.
ACCEPT: Final = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One replica's metrics endpoint."""

    replica: str
    url: str
    model_name: str | None = None
    """Count only samples of this served model (vLLM's `model_name` label)."""


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """A target's load, or why there is none."""

    target: ScrapeTarget
    load: EngineLoad | None
    error: str | None
    seconds: float


class Scraper:
    """Scrapes many targets at once; use as an async context manager, or close() it."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 2.0,
        concurrency: int = 64,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if timeout_seconds <= 0 or concurrency < 1:
            raise ValueError("timeout_seconds must be positive and concurrency at least 1")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._concurrency = concurrency
        self._max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def scrape(self, targets: Sequence[ScrapeTarget]) -> list[ScrapeResult]:
        """One result per target, in the targets' order."""
        if not targets:
            return []
        return list(await asyncio.gather(*(self._scrape_one(t) for t in targets)))

    def _ensure_session(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        # Created lazily so the session and semaphore belong to the running event loop.
        if self._session is None or self._semaphore is None:
            connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, trust_env=False
            )
            self._semaphore = asyncio.Semaphore(self._concurrency)
        return self._session, self._semaphore

    async def _scrape_one(self, target: ScrapeTarget) -> ScrapeResult:
        session, semaphore = self._ensure_session()
        async with semaphore:
            started = time.perf_counter()
            try:
                text = await self._fetch(session, target.url)
                load = parse_engine_load(text, model_name=target.model_name)
            except TimeoutError:
                error = f"timed out after {self._timeout.total:g} s"
            except aiohttp.ClientError as failure:
                error = f"{type(failure).__name__}: {failure}"
            except (ExpositionError, UnicodeDecodeError) as failure:
                error = str(failure)
            else:
                return ScrapeResult(target, load, None, time.perf_counter() - started)
            return ScrapeResult(target, None, error, time.perf_counter() - started)

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> str:
        async with session.get(url, headers={"Accept": ACCEPT}, allow_redirects=False) as response:
            if response.status != 200:
                raise ExpositionError(f"HTTP {response.status} from {url}")
            if (response.content_length or 0) > self._max_body_bytes:
                raise ExpositionError(f"exposition larger than {self._max_body_bytes} bytes")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self._max_body_bytes:
                    raise ExpositionError(f"exposition larger than {self._max_body_bytes} bytes")
            return body.decode("utf-8")  # the text format is UTF-8 by definition
