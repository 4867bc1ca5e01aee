"""The diffusers engine's HTTP surface, in-process on loopback, with a stand-in pipeline.

The real pipeline is exercised by tests/engine/test_diffusers_serve.py; here a generator
that blocks until told makes queueing, refusals, gauges and the drain deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.autoscaling.exposition import parse_engine_load
from sovereign_worker.diffusion.image_request import ImageRequest
from sovereign_worker.diffusion.launch import DiffusersLaunch
from sovereign_worker.diffusion.server import ENGINE_KEY, build_app

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n-stand-in"
LAUNCH = DiffusersLaunch(
    served_name="sd",
    max_concurrency=1,
    max_queue=1,
    max_steps=8,
    default_steps=2,
    max_size=128,
    default_size=64,
)


class BlockingGenerator:
    """Returns one stand-in PNG per image once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests: list[ImageRequest] = []

    def generate(self, request: ImageRequest) -> list[bytes]:
        self.requests.append(request)
        if not self.release.wait(10):
            raise TimeoutError("the test never released the generator")
        return [PNG] * request.n


@asynccontextmanager
async def client(generator: BlockingGenerator) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(LAUNCH, Path("/models/sd"), generator)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    app[ENGINE_KEY].pool.shutdown(wait=False)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def gauges(test_client: TestClient[Any, Any]) -> dict[str, float]:
    text = await (await test_client.get("/metrics")).text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("vllm:")
    }


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never reached the expected state")


def test_a_generation_returns_base64_pngs_and_counts_nothing_running_after() -> None:
    async def scenario() -> None:
        generator = BlockingGenerator()
        generator.release.set()
        async with client(generator) as test_client:
            response = await test_client.post(
                "/v1/images/generations", json={"prompt": "a fox", "n": 2, "size": "64x64"}
            )
            assert response.status == 200
            body = await response.json()
            assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == [PNG, PNG]
            assert generator.requests[0].steps == LAUNCH.default_steps
            assert await gauges(test_client) == {
                "vllm:num_requests_running": 0,
                "vllm:num_requests_waiting": 0,
                "vllm:kv_cache_usage_perc": 0,
            }

    run(scenario)


def test_invalid_requests_get_400_naming_the_field_and_never_reach_the_pipeline() -> None:
    async def scenario() -> None:
        generator = BlockingGenerator()
        async with client(generator) as test_client:
            for body, param in (
                ({"prompt": "x", "size": "256x256"}, "size"),
                ({"prompt": "x", "num_inference_steps": 9}, "num_inference_steps"),
            ):
                response = await test_client.post("/v1/images/generations", json=body)
                assert response.status == 400
                error = (await response.json())["error"]
                assert (error["param"], error["code"], error["type"]) == (
                    param,
                    400,
                    "BadRequestError",
                )
            not_json = await test_client.post("/v1/images/generations", data=b"{")
            assert not_json.status == 400
            assert generator.requests == []

    run(scenario)


def test_a_full_queue_answers_429_and_the_gauges_show_the_load() -> None:
    async def scenario() -> None:
        generator = BlockingGenerator()
        async with client(generator) as test_client:

            async def post() -> int:
                response = await test_client.post("/v1/images/generations", json={"prompt": "x"})
                return response.status

            first, second = asyncio.create_task(post()), asyncio.create_task(post())

            async def loaded() -> bool:
                return (await gauges(test_client))["vllm:num_requests_waiting"] == 1

            await until(loaded)
            text = await (await test_client.get("/metrics")).text()
            load = parse_engine_load(text, model_name="sd")  # as the autoscaler reads it
            assert (load.running, load.waiting) == (1, 1)
            assert await post() == 429
            generator.release.set()
            assert await asyncio.gather(first, second) == [200, 200]

    run(scenario)


def test_after_close_health_fails_new_requests_get_503_and_admitted_ones_finish() -> None:
    async def scenario() -> None:
        generator = BlockingGenerator()
        async with client(generator) as test_client:
            assert (await test_client.get("/health")).status == 200
            admitted = asyncio.create_task(
                test_client.post("/v1/images/generations", json={"prompt": "x"})
            )

            async def running() -> bool:
                return (await gauges(test_client))["vllm:num_requests_running"] == 1

            await until(running)
            gate = test_client.server.app[ENGINE_KEY].gate
            gate.close()
            assert (await test_client.get("/health")).status == 503
            refused = await test_client.post("/v1/images/generations", json={"prompt": "x"})
            assert refused.status == 503
            generator.release.set()
            assert (await admitted).status == 200
            await asyncio.wait_for(gate.wait_idle(), 5)

    run(scenario)


def test_models_lists_the_served_name_at_the_model_dir() -> None:
    async def scenario() -> None:
        async with client(BlockingGenerator()) as test_client:
            models = await (await test_client.get("/v1/models")).json()
            assert [(m["id"], m["root"]) for m in models["data"]] == [("sd", "/models/sd")]

    run(scenario)
