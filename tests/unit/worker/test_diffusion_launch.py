"""The diffusers engine's flag contract: the builder the renderer uses and its inverse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovereign_worker.diffusion.launch import (
    FLAG_NAMES,
    DiffusersLaunch,
    LaunchError,
    build_diffusers_flags,
    diffusers_serve_args,
    launch_from_flags,
)
from sovereign_worker.engine_args import LISTEN_HOST

pytestmark = pytest.mark.unit

EVERY_FIELD = DiffusersLaunch(
    served_name="stable-diffusion-v1-5",
    port=8123,
    dtype="float16",
    max_concurrency=2,
    max_queue=3,
    max_steps=40,
    default_steps=20,
    max_size=768,
    default_size=256,
    max_images=2,
    shutdown_timeout_seconds=90,
)


def test_every_flag_is_written_with_its_value_in_a_fixed_order() -> None:
    flags = build_diffusers_flags(EVERY_FIELD)
    assert flags[0::2] == list(FLAG_NAMES)
    assert dict(zip(flags[0::2], flags[1::2], strict=True)) == {
        "--served-model-name": "stable-diffusion-v1-5",
        "--host": LISTEN_HOST,
        "--port": "8123",
        "--dtype": "float16",
        "--max-concurrency": "2",
        "--max-queue": "3",
        "--max-steps": "40",
        "--default-steps": "20",
        "--max-size": "768",
        "--default-size": "256",
        "--max-images": "2",
        "--shutdown-timeout": "90",
    }


def test_serve_args_name_the_engine_and_the_model_dir() -> None:
    args = diffusers_serve_args("/var/cache/sovereign/model", EVERY_FIELD)
    assert args[:6] == [
        "serve",
        "--engine",
        "diffusers",
        "--model-dir",
        "/var/cache/sovereign/model",
        "--",
    ]
    assert args[6:] == build_diffusers_flags(EVERY_FIELD)
    with pytest.raises(ValueError, match="absolute"):
        diffusers_serve_args("model", EVERY_FIELD)


def test_flags_read_back_into_the_same_launch_in_any_order_and_spelling() -> None:
    flags = build_diffusers_flags(EVERY_FIELD)
    pairs = list(zip(flags[0::2], flags[1::2], strict=True))
    shuffled = [f"{name}={value}" for name, value in reversed(pairs)]
    assert launch_from_flags(flags) == EVERY_FIELD
    assert launch_from_flags(shuffled) == EVERY_FIELD


@given(
    concurrency=st.integers(1, 64),
    queue=st.integers(0, 4096),
    steps=st.integers(1, 1000),
    size=st.integers(8, 512).map(lambda n: n * 8),
)
def test_round_trip(concurrency: int, queue: int, steps: int, size: int) -> None:
    launch = DiffusersLaunch(
        served_name="sd",
        max_concurrency=concurrency,
        max_queue=queue,
        max_steps=steps,
        default_steps=min(steps, 30),
        max_size=size,
        default_size=min(size, 512),
    )
    assert launch_from_flags(build_diffusers_flags(launch)) == launch


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "8000"], "--served-model-name is required"),
        (["--served-model-name", "sd", "--enable-safety-checker"], "unknown diffusers engine flag"),
        (["--served-model-name", "sd", "--port"], "--port needs a value"),
        (["--served-model-name", "sd", "--port", "eighty"], "--port 'eighty' is not a valid value"),
        (["--served-model-name", "sd", "--served-model-name=x"], "given twice"),
        (["--served-model-name", "sd", "--host", "127.0.0.1"], "--host must be 0.0.0.0"),
        (["--served-model-name", "sd", "--max-concurrency", "0"], "--max-concurrency:"),
        (["--served-model-name", "sd", "--dtype", "int8"], "--dtype:"),
        (
            ["--served-model-name", "sd", "--max-steps", "10"],
            "--default-steps 30 is above --max-steps 10",
        ),
        (
            ["--served-model-name", "sd", "--max-size", "1004"],
            "--max-size 1004 must be a multiple of 8",
        ),
        (
            ["--served-model-name", "sd", "--max-size", "256"],
            "--default-size 512 is above --max-size 256",
        ),
    ],
)
def test_refusals_name_the_flag(flags: list[str], message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        launch_from_flags(flags)
    assert message in str(caught.value)
