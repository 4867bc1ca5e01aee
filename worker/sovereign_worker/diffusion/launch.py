"""The diffusers engine's flags, as one builder and its inverse.

The renderer writes `build_diffusers_flags(launch)` into the pod; `sovereign-worker serve
--engine diffusers` reads them back with `launch_from_flags`, which validates every value
again, so what runs is always something the builder could have produced. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sovereign_worker.engine_args import LISTEN_HOST, SERVED_NAME_PATTERN
from sovereign_worker.extra_args import UNPRINTABLE

ENGINE: Final = "diffusers"
# Images are multiples of this many pixels on each side: Stable Diffusion's VAE halves the
# size three times, so the latent grid is 1/8 of the image.
SIZE_MULTIPLE: Final = 8
MIN_SIZE: Final = 64

DiffusersDtype = Literal["auto", "bfloat16", "float16", "float32"]


class DiffusersLaunch(BaseModel):
    """How to start the diffusers engine; `build_diffusers_flags` turns it into argv."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    served_name: str = Field(pattern=SERVED_NAME_PATTERN)
    port: int = Field(default=8000, ge=1, le=65535)
    dtype: DiffusersDtype = "auto"
    """auto: float16 on a GPU, float32 on a CPU (half precision is slow or missing there)."""
    max_concurrency: int = Field(default=1, ge=1, le=64)
    """Images generated at once. One saturates a GPU for Stable Diffusion; more only helps
    small images on large GPUs, and each costs activation memory."""
    max_queue: int = Field(default=16, ge=0, le=4096)
    """Requests admitted to wait for a slot; beyond that the server answers 429 at once, so
    clients and the gateway retry elsewhere instead of timing out in a long queue."""
    max_steps: int = Field(default=50, ge=1, le=1000)
    default_steps: int = Field(default=30, ge=1, le=1000)
    max_size: int = Field(default=1024, ge=MIN_SIZE, le=4096)
    """The largest width and height in pixels; cost grows with the pixel count."""
    default_size: int = Field(default=512, ge=MIN_SIZE, le=4096)
    max_images: int = Field(default=4, ge=1, le=16)
    """The largest `n` of one request."""
    shutdown_timeout_seconds: int = Field(default=30, ge=0, le=3600)

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Self:
        if self.default_steps > self.max_steps:
            raise ValueError(
                f"--default-steps {self.default_steps} is above --max-steps {self.max_steps}"
            )
        if self.default_size > self.max_size:
            raise ValueError(
                f"--default-size {self.default_size} is above --max-size {self.max_size}"
            )
        for flag, value in (("--max-size", self.max_size), ("--default-size", self.default_size)):
            if value % SIZE_MULTIPLE:
                raise ValueError(f"{flag} {value} must be a multiple of {SIZE_MULTIPLE}")
        return self


@dataclass(frozen=True, slots=True)
class _Flag:
    field: str
    parse: Callable[[str], Any]


# In the order build_diffusers_flags writes them.
_FLAGS: Final[Mapping[str, _Flag]] = {
    "--served-model-name": _Flag("served_name", str),
    "--host": _Flag("host", str),
    "--port": _Flag("port", int),
    "--dtype": _Flag("dtype", str),
    "--max-concurrency": _Flag("max_concurrency", int),
    "--max-queue": _Flag("max_queue", int),
    "--max-steps": _Flag("max_steps", int),
    "--default-steps": _Flag("default_steps", int),
    "--max-size": _Flag("max_size", int),
    "--default-size": _Flag("default_size", int),
    "--max-images": _Flag("max_images", int),
    "--shutdown-timeout": _Flag("shutdown_timeout_seconds", int),
}
FLAG_NAMES: Final = tuple(_FLAGS)


class LaunchError(ValueError):
    """The flags cannot start the diffusers engine; the message names the flag."""


def build_diffusers_flags(launch: DiffusersLaunch) -> list[str]:
    """Every flag, in a fixed order, each with its value: the pod spec shows all limits."""
    values = {**launch.model_dump(), "host": LISTEN_HOST}
    flags: list[str] = []
    for name, flag in _FLAGS.items():
        flags += [name, str(values[flag.field])]
    return flags


def diffusers_serve_args(model_dir: str, launch: DiffusersLaunch) -> list[str]:
    """`sovereign-worker`'s args for the engine container: `serve --engine diffusers ...`."""
    if not model_dir.startswith("/") or any(c in model_dir for c in UNPRINTABLE):
        raise ValueError(f"model directory must be an absolute single-line path, got {model_dir!r}")
    return [
        "serve",
        "--engine",
        ENGINE,
        "--model-dir",
        model_dir,
        "--",
        *build_diffusers_flags(launch),
    ]


def launch_from_flags(flags: Sequence[str]) -> DiffusersLaunch:
    """Read flags written by `build_diffusers_flags` (in any order) back into a launch.

    Unknown flags are refused by name: this engine has no pass-through arguments.
    """
    fields: dict[str, Any] = {}
    tokens = iter(flags)
    for token in tokens:
        name, has_inline, inline = token.partition("=")
        flag = _FLAGS.get(name)
        if flag is None:
            known = ", ".join(FLAG_NAMES)
            raise LaunchError(f"unknown diffusers engine flag {token!r}; the flags are {known}")
        if flag.field in fields:
            raise LaunchError(f"{name} is given twice; give it once")
        value = inline if has_inline else next(tokens, None)
        if value is None:
            raise LaunchError(f"{name} needs a value")
        try:
            fields[flag.field] = flag.parse(value)
        except ValueError:
            raise LaunchError(f"{name} {value!r} is not a valid value") from None
    host = fields.pop("host", LISTEN_HOST)
    if host != LISTEN_HOST:
        raise LaunchError(f"--host must be {LISTEN_HOST}: probes and the gateway reach the pod IP")
    if "served_name" not in fields:
        raise LaunchError("--served-model-name is required")
    try:
        return DiffusersLaunch(**fields)
    except ValidationError as error:
        raise LaunchError(f"invalid diffusers engine flags: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    by_field = {flag.field: name for name, flag in _FLAGS.items()}
    parts = []
    for problem in error.errors():
        where = problem["loc"][0] if problem["loc"] else None
        message = str(problem["msg"]).removeprefix("Value error, ")
        flag = by_field.get(str(where))
        parts.append(f"{flag}: {message}" if flag else message)
    return "; ".join(parts)
