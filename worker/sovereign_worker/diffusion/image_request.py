"""`POST /v1/images/generations` bodies -> a validated `ImageRequest`, or a 400 naming the field.

The body is OpenAI's image request (`prompt`, `model`, `n`, `size`, `response_format`,
`output_format`, `user`) plus the diffusers knobs clients of self-hosted Stable Diffusion
expect: `num_inference_steps`, `guidance_scale`, `negative_prompt` and `seed`. Unknown fields
are refused rather than ignored, so a misspelt limit never silently falls back to a default.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sovereign_worker.diffusion.launch import MIN_SIZE, SIZE_MULTIPLE, DiffusersLaunch

MAX_PROMPT_CHARS: Final = 4000
MAX_GUIDANCE_SCALE: Final = 50.0
MAX_SEED: Final = 2**63 - 1
_SIZE: Final = re.compile(r"(\d{1,5})x(\d{1,5})")
# Accepted and ignored: `user` is an end-user id for abuse tracking, which the gateway audits.
_IGNORED: Final = frozenset({"user"})
_FIELDS: Final = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "response_format",
        "output_format",
        "num_inference_steps",
        "guidance_scale",
        "negative_prompt",
        "seed",
    }
)


class RequestError(ValueError):
    """A request the server refuses; `param` names the field, `status` the HTTP status."""

    def __init__(self, param: str | None, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ImageRequest:
    prompt: str
    n: int
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    negative_prompt: str | None
    seed: int | None


def parse_image_request(body: object, launch: DiffusersLaunch) -> ImageRequest:
    """Validate one request body against the engine's limits."""
    if not isinstance(body, Mapping):
        raise RequestError(None, "the body must be a JSON object")
    unknown = sorted(str(key) for key in body if key not in _FIELDS | _IGNORED)
    if unknown:
        raise RequestError(
            unknown[0], f"unknown field {unknown[0]!r}; the fields are {', '.join(sorted(_FIELDS))}"
        )
    _check_model(body.get("model"), launch.served_name)
    _check_formats(body)
    width, height = _size(body.get("size"), launch)
    return ImageRequest(
        prompt=_text(body, "prompt", required=True) or "",
        n=_integer(body, "n", default=1, low=1, high=launch.max_images),
        width=width,
        height=height,
        steps=_integer(
            body, "num_inference_steps", default=launch.default_steps, low=1, high=launch.max_steps
        ),
        guidance_scale=_guidance(body.get("guidance_scale")),
        negative_prompt=_text(body, "negative_prompt", required=False),
        seed=_optional_integer(body, "seed", low=0, high=MAX_SEED),
    )


def _check_model(model: object, served_name: str) -> None:
    if model is None:
        return
    if model != served_name:
        # vLLM answers an unknown model with 404 too; clients handle both engines alike.
        raise RequestError("model", f"The model `{model}` does not exist.", status=404)


def _check_formats(body: Mapping[str, Any]) -> None:
    response_format = body.get("response_format", "b64_json")
    if response_format != "b64_json":
        raise RequestError(
            "response_format",
            f"{response_format!r} is not supported: images are returned inline as base64 PNG "
            "(b64_json); this server keeps no image store to link to",
        )
    output_format = body.get("output_format", "png")
    if output_format != "png":
        raise RequestError("output_format", f"{output_format!r} is not supported; use png")


def _size(value: object, launch: DiffusersLaunch) -> tuple[int, int]:
    if value is None:
        return launch.default_size, launch.default_size
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise RequestError("size", f"{value!r} must be WIDTHxHEIGHT in pixels, e.g. '512x512'")
    width, height = int(match[1]), int(match[2])
    for side in (width, height):
        if not MIN_SIZE <= side <= launch.max_size:
            raise RequestError(
                "size",
                f"{value} is outside the limits: width and height must be between {MIN_SIZE} "
                f"and {launch.max_size} pixels",
            )
        if side % SIZE_MULTIPLE:
            raise RequestError(
                "size", f"{value}: width and height must be multiples of {SIZE_MULTIPLE}"
            )
    return width, height


def _text(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(name, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise RequestError(name, f"{name} must be a string")
    if required and not value.strip():
        raise RequestError(name, f"{name} must not be empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(name, f"{name} is {len(value)} characters; at most {MAX_PROMPT_CHARS}")
    return value


def _integer(body: Mapping[str, Any], name: str, *, default: int, low: int, high: int) -> int:
    value = _optional_integer(body, name, low=low, high=high)
    return default if value is None else value


def _optional_integer(body: Mapping[str, Any], name: str, *, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python; JSON true is not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(name, f"{name} must be an integer")
    if not low <= value <= high:
        raise RequestError(name, f"{name} is {value}; it must be between {low} and {high}")
    return value


def _guidance(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestError("guidance_scale", "guidance_scale must be a number")
    if not 0 <= value <= MAX_GUIDANCE_SCALE:
        raise RequestError(
            "guidance_scale",
            f"guidance_scale is {value}; it must be between 0 and {MAX_GUIDANCE_SCALE}",
        )
    return float(value)
