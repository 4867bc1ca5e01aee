"""The operator's Kubernetes writes, with kubernetes_asyncio: apply, delete, status, usage.

Children are written with server-side apply (`application/apply-patch+yaml`, field manager
`sovereign-operator`, force): the API server merges our fields with everyone else's, and
`force` takes back any field we own that someone changed by hand (drift repair). Every
request is retried with jittered exponential backoff on 409, 429 (honouring Retry-After)
and 5xx, and on connection errors; other refusals (403, 422) surface at once because
retrying cannot fix them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from sovereign_operator.api.base import GROUP, VERSION
from sovereign_operator.hooks import DeploymentKey
from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.observe import (
    ChildRef,
    child_kind,
    gpus_in_use,
)
from sovereign_operator.reconcile import ApiError
from sovereign_operator.render.meta import Manifest

logger = logging.getLogger(__name__)

FIELD_MANAGER: Final = "sovereign-operator"
MD_PLURAL: Final = "modeldeployments"
POLICY_PLURAL: Final = "modelpolicies"
RETRYABLE: Final = frozenset({409, 429, 500, 502, 503, 504})
ATTEMPTS: Final = 6
# How long one cluster-wide pod listing serves shortage messages: they are computed only
# while some engine pod is unschedulable, and a few seconds of staleness changes nothing.
USAGE_TTL_SECONDS: Final = 10.0
REQUEST_TIMEOUT: Final = 30


async def load_client(kubeconfig: Path | None, connections: int = 32) -> client.ApiClient:
    """A client from a kubeconfig file, or from the pod's service account when None.

    `connections` caps open connections; the client's default (5 per CPU) is too few for
    the reconcile concurrency on a small node, and a request waiting for a free
    connection eats into its own timeout.
    """
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = connections
    if kubeconfig is not None:
        await config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ApiException):
        return error.status in RETRYABLE
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError)


_backoff = wait_exponential_jitter(multiplier=0.2, max=8.0, jitter=0.5)


def _wait(state: RetryCallState) -> float:
    """Exponential backoff, but never sooner than the server's Retry-After."""
    delay = _backoff(state)
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ApiException) and error.status == 429 and error.headers:
        with contextlib.suppress(TypeError, ValueError):
            delay = max(delay, float(error.headers.get("Retry-After", 0)))
    return delay


def audit_id_of(headers: Any) -> str | None:
    """The `Audit-ID` response header (every API server answer carries one): the key of
    the request in the API server's own audit log."""
    value = headers.get("Audit-Id") if headers is not None else None
    return str(value) if value else None


def _message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return str(error.reason)
    return str(body.get("message") or error.reason)


def _path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


class KubeWriter:
    """`reconcile.ChildWriter` on a real API server, plus the reads deletion needs."""

    def __init__(self, api: client.ApiClient, metrics: OperatorMetrics) -> None:
        self.api = api
        self.metrics = metrics
        self._usage: tuple[float, Mapping[str, int]] | None = None
        self._usage_lock = asyncio.Lock()
        # Audit-IDs of writes not yet taken for their audit record (see take_audit_id).
        self._audit_ids: dict[ChildRef, str | None] = {}

    async def _call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        ref: ChildRef | None = None,
    ) -> Any:
        """The response body; with `ref`, the API server's Audit-ID of the request that
        succeeded is kept for `take_audit_id(ref)`, so the audit record can name it."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=_wait,
            stop=stop_after_attempt(ATTEMPTS),
            reraise=True,
        ):
            with attempt:
                try:
                    data, _status, answer_headers = await self.api.call_api(
                        path,
                        method,
                        query_params=query or [],
                        header_params=dict(headers),
                        body=body,
                        response_types_map={200: "object", 201: "object", 202: "object"},
                        auth_settings=["BearerToken"],
                        _return_http_data_only=False,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                except ApiException as error:
                    self.metrics.api_error(error.status, verb)
                    raise
                except (TimeoutError, aiohttp.ClientError):
                    self.metrics.api_error(None, verb)
                    raise
                if ref is not None:
                    self._audit_ids[ref] = audit_id_of(answer_headers)
                return data
        raise AssertionError("unreachable: tenacity reraises the last error")

    def take_audit_id(self, ref: ChildRef) -> str | None:
        """The Audit-ID the API server gave the last successful write of `ref`, once."""
        return self._audit_ids.pop(ref, None)

    async def _read(self, path: str, query: list[tuple[str, str]]) -> Any:
        try:
            return await self._call("list", "GET", path, query=query)
        except ApiException as error:
            raise ApiError(f"list {path}", error.status, _message(error)) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ApiError(f"list {path}", None, repr(error)) from error

    async def apply(self, manifest: Manifest) -> Mapping[str, Any]:
        ref = ChildRef.of(manifest)
        kind = child_kind(ref.api_version, ref.kind)
        try:
            response = await self._call(
                "apply",
                "PATCH",
                _path(kind.api_version, kind.plural, ref.namespace, ref.name),
                body=manifest,
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                content_type="application/apply-patch+yaml",
                ref=ref,
            )
        except ApiException as error:
            raise ApiError(str(ref), error.status, _message(error)) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ApiError(str(ref), None, repr(error)) from error
        self.metrics.api_write("apply", ref.kind)
        return dict(response or {})

    async def create(
        self, api_version: str, plural: str, namespace: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """POST one object (Events: the only kind the operator creates rather than applies)."""
        path = _path(api_version, plural, namespace)
        try:
            response = await self._call("create", "POST", path, body=dict(body))
        except ApiException as error:
            raise ApiError(path, error.status, _message(error)) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ApiError(path, None, repr(error)) from error
        self.metrics.api_write("create", plural)
        return dict(response or {})

    async def delete(self, ref: ChildRef, uid: str, *, foreground: bool = False) -> None:
        """Delete exactly the object we saw (uid precondition); gone already is fine.

        Foreground for workloads: the Deployment stays until its pods are gone, so deletion
        can wait for the engine to stop before removing its NetworkPolicy.
        """
        kind = child_kind(ref.api_version, ref.kind)
        body = {
            "propagationPolicy": "Foreground" if foreground else "Background",
            "preconditions": {"uid": uid},
        }
        try:
            await self._call(
                "delete",
                "DELETE",
                _path(kind.api_version, kind.plural, ref.namespace, ref.name),
                body=body,
                ref=ref,
            )
        except ApiException as error:
            # 404: already gone; 409: the uid differs, so the object we meant is gone.
            if error.status in (404, 409):
                return
            raise ApiError(str(ref), error.status, _message(error)) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ApiError(str(ref), None, repr(error)) from error
        self.metrics.api_write("delete", ref.kind)

    async def patch_status(self, key: DeploymentKey, patch: Mapping[str, Any]) -> None:
        path = _path(f"{GROUP}/{VERSION}", MD_PLURAL, key.namespace, key.name)
        await self._merge_status(path, f"ModelDeployment/{key.name}", patch)

    async def patch_policy_status(self, name: str, patch: Mapping[str, Any]) -> None:
        path = _path(f"{GROUP}/{VERSION}", POLICY_PLURAL, None, name)
        await self._merge_status(path, f"ModelPolicy/{name}", patch)

    async def _merge_status(self, path: str, what: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource; an object deleted meanwhile is fine."""
        try:
            await self._call(
                "patch",
                "PATCH",
                path + "/status",
                body={"status": dict(patch)},
                content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status == 404:  # deleted meanwhile: nothing left to describe
                return
            raise ApiError(f"{what} status", error.status, _message(error)) from error
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ApiError(f"{what} status", None, repr(error)) from error
        self.metrics.api_write("patch", f"{what.split('/', maxsplit=1)[0]}/status")

    async def gpu_usage(self) -> Mapping[str, int]:
        """GPUs requested per node, from one cluster-wide pod listing served by the API
        server's watch cache (resourceVersion=0), cached for a few seconds."""
        async with self._usage_lock:
            now = time.monotonic()
            if self._usage is not None and now - self._usage[0] < USAGE_TTL_SECONDS:
                return self._usage[1]
            listing = await self._read(
                "/api/v1/pods",
                [
                    ("fieldSelector", "status.phase!=Succeeded,status.phase!=Failed"),
                    ("resourceVersion", "0"),
                ],
            )
            usage = gpus_in_use((listing or {}).get("items") or [])
            self._usage = (now, usage)
            return usage


class EventRecorder:
    """Kubernetes Events about ModelDeployments (`runtime.EventPoster`), posted in the
    background so a pass never waits on them.

    Not `kopf.event`: kopf posts only from inside its resource handlers (its queue lives in
    context variables it sets around them), while the autoscaler loop and the passes that
    deadlines start run outside them.
    """

    def __init__(self, writer: KubeWriter, component: str = FIELD_MANAGER) -> None:
        self._writer = writer
        self._component = component
        self._instance = socket.gethostname()
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, md: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        body = event_body(
            md, kind, reason, message, component=self._component, instance=self._instance
        )
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._pending.add(task)  # keep a reference until done, or the task may be collected
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            await self._writer.create("v1", "events", namespace, body)
        except ApiError as error:  # an Event is a courtesy: log it, never fail a pass
            logger.warning("could not post Event %s: %s", body.get("reason"), error)

    async def aclose(self) -> None:
        """Wait for the Events already queued (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def event_body(
    md: Mapping[str, Any], kind: str, reason: str, message: str, *, component: str, instance: str
) -> dict[str, Any]:
    """A core/v1 Event about `md`, as `kubectl describe` and `kubectl get events` read it."""
    meta = md.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": md.get("apiVersion") or f"{GROUP}/{VERSION}",
            "kind": md.get("kind") or "ModelDeployment",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason[:128],
        "message": message[:1024],  # the API server's limit on Event messages
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
