"""Start, watch and stop the component processes, touching only processes we started.

Each started process gets a pid record in the state folder holding its pid, the program it
runs and its kernel start time. `stop` signals a pid only when all three still match, so a
reused pid (the component died, something else got the number) is never killed.
"""

import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

from .components import Component
from .state import StateDir

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Popen objects of children started by this interpreter, kept so that stopping them also
# reaps them (a long-lived parent such as a pytest session must not collect zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


class ComponentError(RuntimeError):
    """A component exited or did not become healthy; the message carries its log tail."""


@dataclass(frozen=True)
class PidRecord:
    name: str
    pid: int
    program: str
    start_time: str | None

    def matches_live_process(self) -> bool:
        if not is_running(self.pid) or _start_time(self.pid) != self.start_time:
            return False
        program = _program(self.pid)
        return program is None or program == self.program


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay open until every port is picked."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def start(component: Component, state: StateDir, *, die_with_parent: bool = False) -> PidRecord:
    """Start a component detached from our terminal, output appended to its log file.

    die_with_parent: have the kernel SIGKILL it when this process dies, for owners such as
    a test session that must not leave a cluster behind even when killed itself. SIGKILL,
    not SIGTERM: all components get the signal at once, and an apiserver whose etcd is
    already gone hangs in its graceful shutdown.
    """
    log = state.log_file(component.name).open("ab")
    with log:
        process = subprocess.Popen(
            component.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **component.env},
            # Its own session: a Ctrl-C meant for `sovereign cluster up` must not reach the
            # cluster, which outlives the command that started it.
            start_new_session=True,
            preexec_fn=_request_parent_death_signal if die_with_parent else None,  # noqa: PLW1509
        )
    _children[process.pid] = process
    record = PidRecord(component.name, process.pid, component.argv[0], _start_time(process.pid))
    _pid_file(state, component.name).write_text(json.dumps(record.__dict__) + "\n")
    return record


def _request_parent_death_signal() -> None:
    # Runs in the child between fork and exec. PR_SET_PDEATHSIG is Linux-only; elsewhere the
    # owner's teardown (`down`) is the only cleanup.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def records(state: StateDir) -> list[PidRecord]:
    if not state.pids.is_dir():
        return []
    found = []
    for path in sorted(state.pids.glob("*.pid")):
        raw = json.loads(path.read_text())
        found.append(PidRecord(**raw))
    return found


def stop(state: StateDir, order: Sequence[str], grace_seconds: float = 10.0) -> list[str]:
    """SIGTERM every recorded, still-matching process, then SIGKILL what outlives the grace.

    Returns the names it signalled. Components are signalled in `order` (reverse start
    order), then any other records, so clients go before the apiserver and etcd goes last.
    """
    by_name = {record.name: record for record in records(state)}
    ordered = [by_name.pop(name) for name in order if name in by_name] + list(by_name.values())
    signalled = []
    for record in ordered:
        if record.matches_live_process():
            _signal(record.pid, signal.SIGTERM)
            signalled.append(record.name)
            _wait_gone(record, grace_seconds)
        _pid_file(state, record.name).unlink(missing_ok=True)
    return signalled


def _wait_gone(record: PidRecord, grace_seconds: float) -> None:
    deadline = time.monotonic() + grace_seconds
    while record.matches_live_process():
        if time.monotonic() > deadline:
            _signal(record.pid, signal.SIGKILL)
            deadline = time.monotonic() + grace_seconds
        time.sleep(0.05)
    _children.pop(record.pid, None)


def _signal(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signum)


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie; reaps it if it is our child."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first); None off Linux."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    # Field 22 of stat is the start time in clock ticks since boot; index 19 after "comm".
    return stat[19] if stat is not None and len(stat) > 19 else None


def _program(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None


def _pid_file(state: StateDir, name: str) -> Path:
    return state.pids / f"{name}.pid"


def wait_healthy(
    component: Component,
    record: PidRecord,
    state: StateDir,
    tls: ssl.SSLContext,
    timeout_seconds: float = 90.0,
) -> None:
    """Poll the component's health URL; fail fast, with its log, if the process exits."""
    deadline = time.monotonic() + timeout_seconds
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not is_running(record.pid):
            raise ComponentError(
                f"{component.name} exited during start-up; "
                f"log {state.log_file(component.name)}:\n{log_tail(state, component.name)}"
            )
        try:
            context = tls if component.health_url.startswith("https") else None
            url = component.health_url  # built by components.py: http(s) on loopback only
            with urllib.request.urlopen(url, timeout=5, context=context) as rsp:  # noqa: S310
                if rsp.status == 200:
                    return
                last_error = f"HTTP {rsp.status}"
        except urllib.error.HTTPError as error:
            last_error = f"HTTP {error.code}: {error.read().decode(errors='replace')[-500:]}"
        except (OSError, ssl.SSLError) as error:
            last_error = str(error)
        time.sleep(0.25)
    raise ComponentError(
        f"{component.name} not healthy at {component.health_url} after {timeout_seconds:.0f} s "
        f"({last_error}); log {state.log_file(component.name)}:\n"
        f"{log_tail(state, component.name)}"
    )


def log_tail(state: StateDir, name: str, lines: int = 30) -> str:
    path = state.log_file(name)
    if not path.is_file():
        return "(no log)"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
