"""The validating admission webhook for ModelDeployments, and the server that carries it.

The handler is thin: it reads the request, asks `admission.decide` (pure) against the
policy indexes, hands the decision to the audit hook (never for a dry run: the webhook
declares sideEffects NoneOnDryRun), and refuses with the decision's message.

The server is kopf's `WebhookServer` with certificates the operator issues and rotates
(`webhook_certs`); each client config kopf reports (at start, and after the certificate
files change) is written into the ValidatingWebhookConfiguration (`webhook_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import click
import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential_jitter

from sovereign_operator import webhook_config
from sovereign_operator.admission import decide
from sovereign_operator.handlers.model_deployment import MD
from sovereign_operator.hooks import AdmissionAuditHook, AdmissionRecord, AdmissionUser
from sovereign_operator.policy_hook import IndexedPolicies
from sovereign_operator.settings import OperatorConfig, WebhookSettings
from sovereign_operator.webhook_certs import CertStore, Lifetimes, next_check

logger = logging.getLogger(__name__)

# Returned as an audit annotation; the API server prefixes it with the webhook's name.
REQUEST_UID_KEY: Final = "request-uid"
# A refused request, as the API server reports it to the caller.
FORBIDDEN: Final = 403
# How often the certificates are looked at and the webhook configuration re-applied, so
# an edited or deleted webhook is repaired (a no-op apply changes nothing on the server).
REPAIR_INTERVAL: Final = timedelta(minutes=5)


class WebhookStartError(click.ClickException):
    """The webhook cannot be served as configured; `sovereign run` prints it and exits 1."""


class _RefusalIsNotAnError(logging.Filter):
    """kopf logs every refused admission as an ERROR ("failed permanently"); a policy
    refusal is the webhook working, and is logged once at INFO with the caller."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.ERROR
            and record.getMessage().startswith(
                f"Webhook {webhook_config.HANDLER_PATH!r} failed permanently"
            )
        )


_REFUSAL_FILTER: Final = _RefusalIsNotAnError()
# The AdmissionReview's request uid: kopf does not hand it to handlers, so the server sets
# it around each request (handlers run in the request's task, which sees the value).
_REQUEST_UID: ContextVar[str] = ContextVar("admission_request_uid", default="")


def _spec(body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if body is None:
        return None
    return dict(body.get("spec") or {})


def register(
    registry: kopf.OperatorRegistry,
    policies: IndexedPolicies,
    audit: AdmissionAuditHook,
) -> None:
    logging.getLogger("kopf.objects").addFilter(_REFUSAL_FILTER)  # idempotent: one instance

    @kopf.on.validate(
        *MD,
        id=webhook_config.HANDLER_PATH,
        operations=["CREATE", "UPDATE", "DELETE"],
        side_effects=True,
        registry=registry,
    )
    async def validate_model_deployment(
        *,
        body: kopf.Body,
        userinfo: kopf.UserInfo,
        dryrun: bool,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> None:
        operation = kwargs.get("operation")
        old: kopf.Body | None = kwargs.get("old")
        new: kopf.Body | None = kwargs.get("new")
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        name = str(meta.get("name") or meta.get("generateName") or "")
        old_spec, new_spec = _spec(old), _spec(new)
        decision = decide(
            str(operation),
            namespace=namespace,
            name=name,
            old_spec=old_spec,
            new_spec=new_spec,
            view=policies.view(namespace, name),
            default_image=policies.default_image,
        )
        request_uid, audit_id = _REQUEST_UID.get(), _header(headers, "Audit-Id")
        if not dryrun:
            generation = meta.get("generation")
            await audit(
                AdmissionRecord(
                    operation=str(operation),  # type: ignore[arg-type]
                    user=AdmissionUser(
                        username=str(userinfo.get("username", "")),
                        uid=str(userinfo.get("uid", "")),
                        groups=tuple(str(g) for g in userinfo.get("groups") or ()),
                    ),
                    namespace=namespace,
                    name=name,
                    uid=str(meta.get("uid") or ""),
                    generation=int(generation) if generation is not None else None,
                    allowed=decision.allowed,
                    reason=decision.reason,
                    message=decision.message,
                    policies=decision.policies,
                    old_spec=old_spec,
                    new_spec=new_spec,
                    time=datetime.now(UTC),
                    request_uid=request_uid,
                    audit_id=audit_id,
                )
            )
        if not decision.allowed:
            logger.info(
                "refused %s of %s/%s by %s (request %s): %s",
                operation,
                namespace,
                name,
                userinfo.get("username"),
                request_uid or "-",
                decision.message,
            )
            raise kopf.AdmissionError(decision.message, code=FORBIDDEN)


def _header(headers: Mapping[str, str], wanted: str) -> str:
    for key, value in headers.items():
        if key.lower() == wanted.lower():
            return str(value)
    return ""


ConfigSink = Callable[[Mapping[str, Any]], Awaitable[None]]


class ManagedWebhookServer(kopf.WebhookServer):
    """kopf's server, telling `on_config` every client config before kopf uses it."""

    def __init__(self, *, on_config: ConfigSink, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_config = on_config

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def traced(request: Mapping[str, Any], **kwargs: Any) -> Any:
            uid = str((request.get("request") or {}).get("uid") or "")
            token = _REQUEST_UID.set(uid)
            try:
                response = await fn(request, **kwargs)
            finally:
                _REQUEST_UID.reset(token)
            # The API server does not tell webhooks its Audit-ID; instead its audit event
            # for the request gets `<webhook name>/request-uid`, the uid our record carries.
            if uid and isinstance(response.get("response"), dict):
                response["response"].setdefault("auditAnnotations", {})[REQUEST_UID_KEY] = uid
            return response

        async for config in super().__call__(traced):
            await self._on_config(config)
            yield config


def serving_names(webhook: WebhookSettings, operator_namespace: str) -> list[str]:
    """The names the API server may use for us: the Service's DNS names, else the host."""
    if webhook.service:
        base = f"{webhook.service}.{operator_namespace}"
        return [f"{base}.svc", base, f"{base}.svc.cluster.local"]
    return [webhook.host or "127.0.0.1"]


def webhook_target(
    webhook: WebhookSettings, operator_namespace: str
) -> webhook_config.WebhookTarget:
    if webhook.service:
        return webhook_config.WebhookTarget(operator_namespace, webhook.service)
    return webhook_config.WebhookTarget()


async def start_webhook(
    settings: kopf.OperatorSettings,
    config: OperatorConfig,
    api: client.ApiClient,
    lifetimes: Lifetimes | None = None,
) -> asyncio.Task[None] | None:
    """Issue (or load) the certificates, configure kopf's server, and return the task that
    rotates them (cancel it when the operator stops); None when no webhook is configured."""
    webhook = config.webhook
    if webhook is None:
        return None
    names = serving_names(webhook, config.operator_namespace)
    store = CertStore(webhook.cert_dir)
    try:
        certs, _ = await asyncio.to_thread(store.refresh, names, lifetimes=lifetimes)
    except OSError as error:
        raise WebhookStartError(
            f"--webhook-cert-dir {webhook.cert_dir}: cannot keep the webhook certificates "
            f"there ({error.strerror}); give a writable folder"
        ) from error
    exempt = set(webhook.exempt_users)
    me = await webhook_config.whoami(api)
    if me:
        exempt.add(me)
    if not exempt:
        raise WebhookStartError(
            "cannot tell the operator's own username, so the webhook would check the "
            "operator's own writes; give it with --webhook-exempt-user"
        )
    target = webhook_target(webhook, config.operator_namespace)

    applied: dict[str, Any] = {}

    async def on_config(served: Mapping[str, Any]) -> None:
        body = webhook_config.build(
            webhook.configuration_name,
            webhook_config.client_config(target, served),
            exempt_users=sorted(exempt),
            namespaces=config.namespaces,
        )
        # A refused write stops the operator after about a minute: serving a webhook the
        # API server cannot reach (or trust) would block every ModelDeployment change.
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(60), wait=wait_exponential_jitter(0.5, 8), reraise=True
        ):
            with attempt:
                await webhook_config.apply(api, body)
        applied["body"] = body

    settings.admission.server = ManagedWebhookServer(
        on_config=on_config,
        addr=config.bind_address,
        port=webhook.port,
        host=webhook.host,
        cafile=store.ca_file,
        certfile=store.serving_file,
        pkeyfile=store.serving_file,
        # The files change only when rotate() writes them; kopf re-reads them this often.
        file_check_interval=10.0,
    )
    settings.admission.managed = None

    async def rotate_forever() -> None:
        current = certs
        while True:
            wait = next_check(current, datetime.now(UTC), REPAIR_INTERVAL)
            await asyncio.sleep(wait.total_seconds())
            try:
                current, changed = await asyncio.to_thread(
                    store.refresh, names, lifetimes=lifetimes
                )
            except OSError:
                logger.exception("renewing the webhook certificates failed; retrying")
                await asyncio.sleep(REPAIR_INTERVAL.total_seconds())
                continue
            # New files reach kopf's server, which reports the new CA bundle to on_config;
            # otherwise the last configuration is re-applied to undo any edit of it.
            if not changed and "body" in applied:
                try:
                    await webhook_config.apply(api, applied["body"])
                except (ApiException, OSError, TimeoutError) as error:
                    logger.warning("re-applying the webhook configuration failed: %s", error)
            if changed:
                logger.info(
                    "webhook certificates renewed; serving until %s",
                    current.serving_cert.not_valid_after_utc.isoformat(),
                )

    return asyncio.create_task(rotate_forever(), name="webhook-cert-rotation")


async def stop_webhook(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
