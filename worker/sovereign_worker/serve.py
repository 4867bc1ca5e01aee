"""`sovereign-worker serve`: check the engine flags once more, then become vLLM.

The renderer builds the flags with `engine_args.build_vllm_flags`; this reads them back into
an `EngineLaunch`, which validates every field and the extra args again, and execs the argv
that `engine_args.build_vllm_argv` builds from it. What runs is therefore always an argv the
builder produced, whatever the pod spec says (someone may have edited it by hand).

`serve` execs rather than supervises (DESIGN.md, "The engine contract"): vLLM becomes the
container's main process and gets SIGTERM itself, and `--shutdown-timeout` makes it finish
in-flight requests before it exits, within the pod's termination grace period.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from pydantic import ValidationError

from sovereign_worker.engine_args import (
    LISTEN_HOST,
    EngineLaunch,
    build_vllm_argv,
    validate_extra_args,
)
from sovereign_worker.sovereignty import CACHE_ENV, OFFLINE_ENV


class ServeError(ValueError):
    """The flags or the model folder cannot be served; the message says what to change."""


@dataclass(frozen=True, slots=True)
class _Owned:
    """A flag `build_vllm_flags` writes from an EngineLaunch field."""

    field: str
    parse: Callable[[str], Any] | None
    """Turns the value into the field's value; None for switches, which take no value."""
    switch_value: Any = True


# Every flag build_vllm_flags writes for a single-node engine; tests check that this covers
# every EngineLaunch field but `multi_node`, which is never rendered (the multi-node group
# commands set it from the pod's identity), so its flags reach here only as refused extras.
_OWNED: Final[Mapping[str, _Owned]] = {
    "--served-model-name": _Owned("served_name", str),
    "--host": _Owned("host", str),
    "--port": _Owned("port", int),
    "--tensor-parallel-size": _Owned("tensor_parallel_size", int),
    "--pipeline-parallel-size": _Owned("pipeline_parallel_size", int),
    "--max-model-len": _Owned("max_model_len", int),
    "--dtype": _Owned("dtype", str),
    "--quantization": _Owned("quantization", str),
    "--gpu-memory-utilization": _Owned("gpu_memory_utilization", float),
    "--enable-expert-parallel": _Owned("enable_expert_parallel", None),
    "--trust-remote-code": _Owned("trust_remote_code", None),
    "--no-trust-remote-code": _Owned("trust_remote_code", None, switch_value=False),
    "--shutdown-timeout": _Owned("shutdown_timeout_seconds", int),
}
OWNED_FIELDS: Final = frozenset(owned.field for owned in _OWNED.values()) - {"host"}
# Dropped in any case: engine pods have no egress, so a proxy could only leak requests.
_PROXY_VARIABLES: Final = frozenset(
    {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "grpc_proxy", "no_proxy"}
)


def launch_from_flags(flags: Sequence[str]) -> EngineLaunch:
    """Read the flags `build_vllm_flags` wrote back into the EngineLaunch they came from.

    Flags the operator owns may come in any order and as `--flag value` or `--flag=value`;
    everything else is an extra arg and is validated as one.
    """
    fields, extra = _split_owned(flags)
    host = fields.pop("host", LISTEN_HOST)
    if host != LISTEN_HOST:
        raise ServeError(f"--host must be {LISTEN_HOST}: probes and the gateway reach the pod IP")
    if "served_name" not in fields or "tensor_parallel_size" not in fields:
        raise ServeError("--served-model-name and --tensor-parallel-size are required")
    try:
        launch = EngineLaunch(**fields, extra_args=tuple(extra))
    except ValidationError as error:
        raise ServeError(f"invalid engine flags: {error}") from None
    problems = validate_extra_args(
        launch.extra_args, allow_trust_remote_code=launch.trust_remote_code
    )
    if problems:
        raise ServeError("refused engine extra args: " + "; ".join(map(str, problems)))
    return launch


def _split_owned(flags: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """EngineLaunch fields from the owned flags, and every other token in order."""
    fields: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    extra: list[str] = []
    tokens = iter(flags)
    for token in tokens:
        name, has_inline, inline = token.partition("=")
        owned = _OWNED.get(name)
        if owned is None:
            extra.append(token)
            continue
        if owned.field in spelled:
            raise ServeError(
                f"{name} is given twice (also as {spelled[owned.field]}); give it once"
            )
        spelled[owned.field] = name
        if owned.parse is None:
            if has_inline:
                raise ServeError(f"{name} takes no value")
            fields[owned.field] = owned.switch_value
            continue
        value = inline if has_inline else next(tokens, None)
        if value is None:
            raise ServeError(f"{name} needs a value")
        try:
            fields[owned.field] = owned.parse(value)
        except ValueError:
            raise ServeError(f"{name} {value!r} is not a valid value") from None
    return fields, extra


def vllm_argv(model_dir: Path, flags: Sequence[str]) -> list[str]:
    """The exact command `serve` execs for these flags: `vllm serve MODEL_DIR ...`."""
    launch = launch_from_flags(flags)
    if not model_dir.is_absolute():
        raise ServeError(f"--model-dir must be an absolute path, got {model_dir}")
    if not (model_dir / "config.json").is_file():
        raise ServeError(
            f"{model_dir} holds no config.json: run `sovereign-worker fetch` into it first "
            "(the pod's init container does)"
        )
    try:
        return build_vllm_argv(str(model_dir), launch)
    except ValueError as error:
        raise ServeError(str(error)) from None


def engine_environment(current: Mapping[str, str]) -> dict[str, str]:
    """The environment vLLM runs with: the offline settings always win.

    The writable cache locations are defaults only: the pod sets the same values, and a
    developer's machine may point them at its own folders.
    """
    env = {name: value for name, value in current.items() if name.lower() not in _PROXY_VARIABLES}
    for name, value in CACHE_ENV:
        env.setdefault(name, value)
    env.update(dict(OFFLINE_ENV))
    return env


def exec_vllm(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with vLLM, so vLLM receives the container's signals itself."""
    executable = shutil.which(argv[0], path=env.get("PATH"))
    if executable is None:
        raise ServeError(f"{argv[0]!r} is not on PATH; the engine image must provide vLLM")
    # exec, not spawn: no shell, and vLLM takes over this PID and its signals.
    os.execve(executable, list(argv), dict(env))  # noqa: S606
