"""Bounded concurrency with a bounded queue, and the drain on shutdown.

At most `max_running` requests hold a slot; up to `max_waiting` more wait for one in arrival
order; anything beyond is refused at once (`QueueFull`), because a request that would wait
behind a long queue is better retried on another replica. After `close()` new requests are
refused (`ShuttingDown`) while admitted ones, running or waiting, still finish.

The counts are what `/metrics` exposes as vLLM's running and waiting gauges.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Refused(Exception):
    """The request was not admitted."""


class QueueFull(Refused):
    pass


class ShuttingDown(Refused):
    pass


class AdmissionGate:
    """Admits requests into `max_running` slots behind a queue of `max_waiting`."""

    def __init__(self, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be at least 1 and max_waiting at least 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self._closed = False
        # asyncio.Semaphore wakes waiters first-in, first-out.
        self._slots = asyncio.Semaphore(max_running)
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Refuse new requests from now on; admitted ones carry on."""
        self._closed = True

    async def wait_idle(self) -> None:
        """Return once no request runs or waits (bound it with `asyncio.timeout`)."""
        await self._idle.wait()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body of the `async with`; raises Refused when not admitted."""
        if self._closed:
            raise ShuttingDown("the server is shutting down")
        # `locked()` is true when no slot is free or others already wait for one.
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise QueueFull(
                f"{self.running} requests are running and {self.waiting} waiting, the most "
                "this replica admits; retry later or on another replica"
            )
        self._idle.clear()
        self.waiting += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self.waiting -= 1
            self._settle()
            raise
        self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._settle()

    def _settle(self) -> None:
        if self.running == 0 and self.waiting == 0:
            self._idle.set()
