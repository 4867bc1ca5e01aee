"""The environment every engine process runs with, and the rules for `engine.env`.

Engine pods have a read-only root filesystem and no egress. These constants say where
the writable emptyDirs are mounted (the renderer mounts one at each `WritableDir.path`)
and which variables point vLLM, Hugging Face, Triton, Numba and Ray at them, so nothing
tries to write into the image or phone home.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple


class EnvVar(NamedTuple):
    """A name and a literal value; a plain tuple, so `validate_env` takes either."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class WritableDir:
    """A path the engine writes to, backed by an emptyDir volume of that name."""

    volume: str
    path: str


CACHE_ROOT: Final = "/var/cache/sovereign"
MODEL_DIR: Final = f"{CACHE_ROOT}/model"
"""Where `sovereign-worker fetch` leaves the verified model and `serve` reads it."""
SHM_DIR: Final = "/dev/shm"  # noqa: S108 - a per-pod memory emptyDir, not a shared /dev/shm
"""A memory-backed emptyDir: NCCL and vLLM's multiprocessing exchange tensors here."""

# The S108 warnings below are about shared temp dirs; these are per-pod emptyDirs.
TMP: Final = WritableDir("tmp", "/tmp")  # noqa: S108
HOME: Final = WritableDir("home", f"{CACHE_ROOT}/home")
HF_HOME: Final = WritableDir("hf-home", f"{CACHE_ROOT}/huggingface")
XDG_CACHE: Final = WritableDir("xdg-cache", f"{CACHE_ROOT}/xdg-cache")
VLLM_CACHE: Final = WritableDir("vllm-cache", f"{CACHE_ROOT}/vllm")
TRITON_CACHE: Final = WritableDir("triton-cache", f"{CACHE_ROOT}/triton")
NUMBA_CACHE: Final = WritableDir("numba-cache", f"{CACHE_ROOT}/numba")
WRITABLE_DIRS: Final = (TMP, HOME, HF_HOME, XDG_CACHE, VLLM_CACHE, TRITON_CACHE, NUMBA_CACHE)
# Ray puts its session and socket files here; it lives inside the /tmp emptyDir, and stays
# short because Ray's Unix socket paths must fit in 107 bytes.
RAY_TMP_DIR: Final = f"{TMP.path}/ray"

OFFLINE_ENV: Final = (
    # Never reach the Hugging Face Hub: the model is already local and verified.
    EnvVar("HF_HUB_OFFLINE", "1"),
    EnvVar("TRANSFORMERS_OFFLINE", "1"),
    EnvVar("HF_HUB_DISABLE_TELEMETRY", "1"),
    # vLLM's usage reporting; it honours any of these three.
    EnvVar("VLLM_NO_USAGE_STATS", "1"),
    EnvVar("VLLM_DO_NOT_TRACK", "1"),
    EnvVar("DO_NOT_TRACK", "1"),
    # Ray reports cluster usage to its vendor unless told not to (multi-node groups).
    EnvVar("RAY_USAGE_STATS_ENABLED", "0"),
)
CACHE_ENV: Final = (
    EnvVar("HOME", HOME.path),
    EnvVar("HF_HOME", HF_HOME.path),
    EnvVar("XDG_CACHE_HOME", XDG_CACHE.path),
    EnvVar("VLLM_CACHE_ROOT", VLLM_CACHE.path),
    EnvVar("TRITON_CACHE_DIR", TRITON_CACHE.path),
    EnvVar("NUMBA_CACHE_DIR", NUMBA_CACHE.path),
    EnvVar("RAY_TMPDIR", RAY_TMP_DIR),
)
SOVEREIGNTY_ENV: Final = OFFLINE_ENV + CACHE_ENV


def sovereignty_env() -> dict[str, str]:
    """The variables above as a mapping, in a fixed order."""
    return dict(SOVEREIGNTY_ENV)


# VLLM_* variables a user may set. Everything else under VLLM_ is refused because vLLM's
# environment also controls hosts, ports, caches, downloads, plugins and telemetry.
VLLM_ENV_ALLOWLIST: Final = {
    # KV cache size (GiB) on the CPU backend; there is no flag for it.
    "VLLM_CPU_KVCACHE_SPACE",
    # CPU backend core pinning, and the cores it leaves to the API server; env-only settings.
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_CPU_NUM_OF_RESERVED_CPU",
    # Log verbosity; request contents are not logged because --enable-log-requests is refused.
    "VLLM_LOGGING_LEVEL",
}
# Refused VLLM_ variables that have a flag doing the same job, so the message can say so.
_VLLM_ENV_FLAG_HINTS: Final = {"VLLM_ATTENTION_BACKEND": "--attention-backend"}

_REFUSED_PREFIXES: Final = (
    ("HF_", "Hugging Face settings are fixed offline by the operator"),
    ("HUGGINGFACE_", "Hugging Face settings are fixed offline by the operator"),
    ("HUGGING_FACE_", "Hugging Face settings are fixed offline by the operator"),
    ("TRANSFORMERS_", "Transformers settings are fixed offline by the operator"),
    ("LD_", "dynamic loader variables can inject code into the engine"),
    ("PYTHON", "Python interpreter variables can inject code or change imports"),
    ("XDG_", "cache and config paths point at the pod's writable volumes"),
    ("RAY_", "Ray's address, temp dir and usage reporting are set by the operator"),
    ("SOVEREIGN_", "the SOVEREIGN_ prefix is reserved for the operator"),
)
_REFUSED_NAMES: Final = {
    "DO_NOT_TRACK": "telemetry is always off",
    "HOME": "HOME points at a writable emptyDir",
    "PATH": "PATH decides which vllm binary runs",
    "TMPDIR": "temporary files go to the /tmp emptyDir",
    "TRITON_CACHE_DIR": "Triton's cache is a writable emptyDir",
    "TRITON_HOME": "Triton's cache is a writable emptyDir",
    "NUMBA_CACHE_DIR": "Numba's cache is a writable emptyDir",
    "CUDA_VISIBLE_DEVICES": "the GPU device plugin chooses the GPUs",
    "NVIDIA_VISIBLE_DEVICES": "the GPU device plugin chooses the GPUs",
    "MASTER_ADDR": "multi-node rendezvous is set by the operator (spec.multiNode)",
    "MASTER_PORT": "multi-node rendezvous is set by the operator (spec.multiNode)",
}
# curl, requests, aiohttp and gRPC read these in either case.
_PROXY_NAMES: Final = {
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "ftp_proxy",
    "grpc_proxy",
}
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_env(entries: Iterable[tuple[str, str]]) -> list[str]:
    """Problems with user-supplied engine environment variables; empty when all are fine."""
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for index, (name, value) in enumerate(entries):
        where = f"env[{index}] {name!r}"
        if name in first_seen:
            problems.append(f"{where} is set twice (first at env[{first_seen[name]}]); keep one")
            continue
        first_seen[name] = index
        if "\x00" in value:
            problems.append(f"{where}: the value contains a NUL byte, which no process can receive")
        if not _ENV_NAME.fullmatch(name):
            problems.append(
                f"{where} is not a valid variable name: use letters, digits and underscores, "
                "not starting with a digit"
            )
            continue
        if reason := _refusal(name):
            problems.append(f"{where} is refused: {reason}")
    return problems


def _refusal(name: str) -> str | None:
    # Matching ignores case: a lower-case twin is harmless to most programs but never needed.
    upper = name.upper()
    if name.lower() in _PROXY_NAMES:
        return "engine pods have no egress, so a proxy could only leak traffic"
    if upper in _REFUSED_NAMES:
        return _REFUSED_NAMES[upper]
    if upper.startswith("VLLM_"):
        return _vllm_refusal(name)
    for prefix, reason in _REFUSED_PREFIXES:
        if upper.startswith(prefix):
            return f"{prefix}* variables are not allowed: {reason}"
    return None


def _vllm_refusal(name: str) -> str | None:
    if name in VLLM_ENV_ALLOWLIST:
        return None
    hint = _VLLM_ENV_FLAG_HINTS.get(name)
    instead = f"; use {hint} in engine.extraArgs instead" if hint else ""
    allowed = ", ".join(sorted(VLLM_ENV_ALLOWLIST))
    return (
        "VLLM_* variables control networking, caches, downloads, plugins and telemetry; "
        f"only {allowed} may be set{instead}"
    )
