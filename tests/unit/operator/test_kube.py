"""The write client's pure parts: URLs, what is retried, and how long it waits."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import RetryCallState

from sovereign_operator.kube import _path, _retryable, _wait

pytestmark = pytest.mark.unit


def test_paths_for_core_and_group_kinds() -> None:
    assert _path("v1", "services", "ns", "x") == "/api/v1/namespaces/ns/services/x"
    assert _path("apps/v1", "deployments", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert _path("v1", "pods", None) == "/api/v1/pods"


@pytest.mark.parametrize(
    ("status", "retried"),
    [(409, True), (429, True), (500, True), (503, True), (403, False), (404, False), (422, False)],
)
def test_conflicts_throttling_and_server_errors_are_retried(status: int, retried: bool) -> None:
    assert _retryable(ApiException(status=status)) is retried


def test_connection_errors_are_retried() -> None:
    assert _retryable(aiohttp.ClientConnectionError())
    assert _retryable(TimeoutError())
    assert not _retryable(ValueError())


def state_after(error: BaseException, attempt: int = 1) -> Any:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_backoff_grows_and_honours_retry_after() -> None:
    throttled = ApiException(status=429)
    throttled.headers = {"Retry-After": "7"}
    assert _wait(state_after(throttled)) >= 7
    assert _wait(state_after(ApiException(status=503), attempt=1)) < 1.0
    assert _wait(state_after(ApiException(status=503), attempt=10)) <= 8.5
