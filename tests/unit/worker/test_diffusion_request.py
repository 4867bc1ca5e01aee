"""Image request validation: defaults, limits, and a 400 (or 404) that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_worker.diffusion.image_request import ImageRequest, RequestError, parse_image_request
from sovereign_worker.diffusion.launch import DiffusersLaunch

pytestmark = pytest.mark.unit

LAUNCH = DiffusersLaunch(
    served_name="sd", max_steps=20, default_steps=4, max_size=256, default_size=128, max_images=2
)


def test_defaults_come_from_the_launch() -> None:
    assert parse_image_request({"prompt": "a fox"}, LAUNCH) == ImageRequest(
        prompt="a fox",
        n=1,
        width=128,
        height=128,
        steps=4,
        guidance_scale=None,
        negative_prompt=None,
        seed=None,
    )


def test_every_field_within_the_limits() -> None:
    body = {
        "prompt": "a fox",
        "model": "sd",
        "n": 2,
        "size": "256x64",
        "response_format": "b64_json",
        "output_format": "png",
        "num_inference_steps": 20,
        "guidance_scale": 7.5,
        "negative_prompt": "blurry",
        "seed": 42,
        "user": "clinician-17",
    }
    assert parse_image_request(body, LAUNCH) == ImageRequest(
        prompt="a fox",
        n=2,
        width=256,
        height=64,
        steps=20,
        guidance_scale=7.5,
        negative_prompt="blurry",
        seed=42,
    )


@pytest.mark.parametrize(
    ("body", "param", "status", "message"),
    [
        ([], None, 400, "JSON object"),
        ({}, "prompt", 400, "prompt is required"),
        ({"prompt": "  "}, "prompt", 400, "must not be empty"),
        ({"prompt": 7}, "prompt", 400, "must be a string"),
        ({"prompt": "x" * 4001}, "prompt", 400, "at most 4000"),
        ({"prompt": "x", "size": "2048x2048"}, "size", 400, "between 64 and 256 pixels"),
        ({"prompt": "x", "size": "32x64"}, "size", 400, "between 64 and 256 pixels"),
        ({"prompt": "x", "size": "100x64"}, "size", 400, "multiples of 8"),
        ({"prompt": "x", "size": "large"}, "size", 400, "WIDTHxHEIGHT"),
        ({"prompt": "x", "size": 512}, "size", 400, "WIDTHxHEIGHT"),
        (
            {"prompt": "x", "num_inference_steps": 21},
            "num_inference_steps",
            400,
            "between 1 and 20",
        ),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", 400, "between 1 and 20"),
        ({"prompt": "x", "num_inference_steps": 4.0}, "num_inference_steps", 400, "integer"),
        ({"prompt": "x", "n": 3}, "n", 400, "between 1 and 2"),
        ({"prompt": "x", "n": True}, "n", 400, "integer"),
        ({"prompt": "x", "seed": -1}, "seed", 400, "between 0 and"),
        ({"prompt": "x", "guidance_scale": "high"}, "guidance_scale", 400, "number"),
        (
            {"prompt": "x", "guidance_scale": float("nan")},
            "guidance_scale",
            400,
            "between 0 and 50",
        ),
        ({"prompt": "x", "response_format": "url"}, "response_format", 400, "b64_json"),
        ({"prompt": "x", "output_format": "jpeg"}, "output_format", 400, "use png"),
        ({"prompt": "x", "steps": 4}, "steps", 400, "unknown field 'steps'"),
        ({"prompt": "x", "model": "dall-e-3"}, "model", 404, "does not exist"),
    ],
)
def test_refusals_name_the_field(body: Any, param: str | None, status: int, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_image_request(body, LAUNCH)
    assert (caught.value.param, caught.value.status) == (param, status)
    assert message in caught.value.message
