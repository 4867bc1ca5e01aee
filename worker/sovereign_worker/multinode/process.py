"""Children of a group command: started in their own session, stopped as a whole tree.

vLLM and `ray start --block` each spawn further processes (vLLM's engine core and workers,
Ray's raylet and agents). Each child gets its own session, so stopping it signals its whole
process group and nothing is left behind holding GPUs or ports, and a signal sent to the
group command itself is never delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger(__name__)

# After SIGKILL the kernel reaps promptly; this only bounds a wait that cannot hang.
KILL_WAIT_SECONDS: Final = 10.0
# Exception lines kept from a child's stderr: a failed vLLM start prints long tracebacks
# after its root cause, so whole lines would push the cause out of any short tail.
KEPT_ERRORS: Final = 20
# A Python exception line ("ValueError: ..."), after whatever prefix the logger added.
_EXCEPTION_LINE: Final = re.compile(r"\b([A-Z]\w*(?:Error|Exception)): (.+)$")
# Wrappers that point back at the real cause, which an earlier line names.
_WRAPPER_HINTS: Final = ("root cause above", "See the original error above")


@dataclass
class Child:
    """A running child process (and its process group), with the exceptions it printed."""

    name: str
    process: asyncio.subprocess.Process
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_ERRORS))
    _relay: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        code = await self.process.wait()
        if self._relay is not None:
            # The pipe closes when the last process holding it exits; do not wait on
            # grandchildren that outlive the child, they are killed in stop().
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._relay), 2)
        return code

    def last_error(self) -> str | None:
        """The child's root-cause exception line, to repeat in our own last line.

        vLLM reports a failed start as a RuntimeError that says "see root cause above";
        the useful line is the exception before it.
        """
        for text in reversed(self.errors):
            if not any(hint in text for hint in _WRAPPER_HINTS):
                return text
        return self.errors[-1] if self.errors else None

    async def stop(self, grace_seconds: float) -> int:
        """SIGTERM the child, SIGKILL its process group after `grace_seconds`; the exit code.

        Only the child itself gets SIGTERM, as a container's main process would: vLLM and
        `ray start --block` then stop their own processes in order (vLLM drains first).
        """
        if self.process.returncode is None:
            log.info(
                "stopping %s (pid %d), up to %.0f s", self.name, self.process.pid, grace_seconds
            )
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_seconds)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", self.name, grace_seconds)
        # Also after a clean exit: helpers the child started may still hold the group.
        self._signal_group(signal.SIGKILL)
        return await asyncio.wait_for(self.wait(), KILL_WAIT_SECONDS)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def relay_stderr(self) -> None:
        """Relay the child's stderr line by line into ours, keeping its exception lines."""
        self._relay = asyncio.create_task(self._relay_lines())

    async def _relay_lines(self) -> None:
        stream = self.process.stderr
        if stream is None:
            return
        while line := await stream.readline():
            text = line.decode(errors="replace")
            if match := _EXCEPTION_LINE.search(text.strip()):
                self.errors.append(f"{match.group(1)}: {match.group(2)}")
            sys.stderr.write(text)
            sys.stderr.flush()


async def start_child(name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
    """Start `argv` in a new session; its stdout is ours, its stderr is relayed line by line
    (and the last lines kept, so a failure can be named in our own last line)."""
    log.info("starting %s: %s", name, " ".join(argv))
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    child = Child(name, process)
    child.relay_stderr()
    return child
