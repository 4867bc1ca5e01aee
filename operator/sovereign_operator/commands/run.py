"""`sovereign run`: the operator, its metrics endpoint and its health endpoints.

kopf runs embedded (`kopf.operator()`) in our own event loop, next to two small aiohttp
servers: /metrics on --metrics-port, /healthz and /readyz on --health-port. The operator
logs in with exactly one identity, the --kubeconfig given (for example the chart's
ServiceAccount token on a developer machine) or the pod's own service account.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

import click
import kopf

from sovereign_operator.audit_hooks import AuditSettings
from sovereign_operator.audit_wiring import AuditStartError, RunningAudit, start_audit
from sovereign_operator.commands.audit_options import audit_options
from sovereign_operator.commands.options import kubeconfig_option, tuning
from sovereign_operator.commands.webhook_options import webhook_options
from sovereign_operator.handlers import autoscaler as autoscaling
from sovereign_operator.handlers import register_all, watch_probe
from sovereign_operator.handlers.admission import start_webhook, stop_webhook
from sovereign_operator.handlers.model_deployment import MD
from sovereign_operator.handlers.policies import StatusWriter, follow_policy_statuses
from sovereign_operator.handlers.startup import configure
from sovereign_operator.health import Health, WatchActivity, health_app, metrics_app, serve
from sovereign_operator.hooks import Hooks
from sovereign_operator.kube import EventRecorder, KubeWriter, load_client
from sovereign_operator.metrics import OperatorMetrics
from sovereign_operator.observe import CHILD_KINDS
from sovereign_operator.planning import DEFAULT_ENGINE_IMAGE
from sovereign_operator.policy_hook import IndexedPolicies
from sovereign_operator.render.options import DEFAULT_OPERATOR_NAMESPACE
from sovereign_operator.runtime import Runtime
from sovereign_operator.settings import OperatorConfig, WebhookSettings

logger = logging.getLogger("sovereign_operator")
AUDIT_HEALTH_POLL = 2.0


def watched_streams() -> frozenset[str]:
    """Stream names (see watch_probe.stream_name) readiness waits for."""
    kinds = [f"{k.plural}.{k.group}" if k.group else k.plural for k in CHILD_KINDS]
    return frozenset({f"{MD[2]}.{MD[0]}", "pods", "nodes", *kinds})


async def _follow_audit_health(runtime: Runtime, every: float = AUDIT_HEALTH_POLL) -> None:
    """Re-reconcile every ModelDeployment when the audit trail's health changes, so
    AuditSinkHealthy (and a pause under `audit.failurePolicy: pause`) shows at once and
    held changes go out as soon as the sinks recover, not at the next resync."""
    last = runtime.hooks.audit_health()
    while True:
        await asyncio.sleep(every)
        now = runtime.hooks.audit_health()
        if now != last:
            runtime.wake_all()
            last = now


def _start_companions(
    ready: asyncio.Event,
    health: Health,
    runtime: Runtime,
    indexed: IndexedPolicies,
    write_policy_status: StatusWriter,
) -> list[asyncio.Task[None]]:
    """The small tasks that run beside kopf: readiness, audit health, policy statuses."""

    async def mark_started() -> None:
        await ready.wait()
        health.started = True
        where = ", ".join(runtime.config.namespaces) or "all namespaces"
        logger.info("operator started; serving %s", where)

    async def keep_policy_statuses() -> None:
        await ready.wait()  # kopf has started and is filling the indexes
        await follow_policy_statuses(indexed, write_policy_status)

    return [
        asyncio.create_task(mark_started(), name="mark started"),
        asyncio.create_task(_follow_audit_health(runtime), name="audit health"),
        asyncio.create_task(keep_policy_statuses(), name="policy statuses"),
    ]


async def run_operator(config: OperatorConfig, hooks: Hooks | None = None) -> None:
    """Run until SIGINT/SIGTERM (kopf installs the handlers) or a fatal error."""
    metrics = OperatorMetrics()
    activity = WatchActivity()
    health = Health(activity, config.liveness_window, watched_streams())
    # Ports first: a port in use fails fast, before anything talks to the cluster.
    runners = [
        await serve(metrics_app(metrics), config.bind_address, config.metrics_port),
        await serve(health_app(health), config.bind_address, config.health_port),
    ]
    api = await load_client(config.kubeconfig, connections=2 * config.reconcile_concurrency)
    audit: RunningAudit | None = None
    webhook: asyncio.Task[None] | None = None
    try:
        if config.audit is not None:
            audit = await start_audit(config.audit, api, config.operator_namespace)
            hooks = audit.hooks(hooks or Hooks())
        # ModelPolicies are evaluated from the operator's indexes, in reconcile and admission.
        indexed = IndexedPolicies(config.engine_image)
        hooks = dataclasses.replace(hooks or Hooks(), policy=indexed)
        writer = KubeWriter(api, metrics)
        events = EventRecorder(writer)
        runtime = Runtime(
            config=config, writer=writer, metrics=metrics, hooks=hooks, post_event=events
        )
        health.stalled_for = runtime.stalled_for
        registry = kopf.OperatorRegistry()
        register_all(registry, runtime, indexed)
        settings = kopf.OperatorSettings()
        configure(settings, config)
        webhook = await start_webhook(settings, config, api)
        watch_probe.install(activity)
        ready = asyncio.Event()
        autoscaler = autoscaling.start(
            registry, runtime, api=api, metrics=metrics, post_event=events
        )
        companions = _start_companions(ready, health, runtime, indexed, writer.patch_policy_status)
        try:
            await kopf.operator(
                registry=registry,
                settings=settings,
                clusterwide=config.clusterwide,
                namespaces=list(config.namespaces),
                standalone=True,
                ready_flag=ready,
            )
        finally:
            for task in companions:
                task.cancel()
            await autoscaling.stop(autoscaler)
            await events.aclose()
    finally:
        await stop_webhook(webhook)
        if audit is not None:
            await audit.aclose()  # seals the log with a signed checkpoint
        await api.close()
        for runner in runners:
            await runner.cleanup()


@click.command("run")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Serve only this namespace (repeatable). Default: all namespaces.",
)
@click.option("-A", "--all-namespaces", is_flag=True, help="Serve every namespace (the default).")
@kubeconfig_option(
    "Log in with this kubeconfig; without it, the pod's service account (in-cluster)."
)
@tuning("--metrics-port", click.IntRange(1, 65535), 8080, "Serve Prometheus /metrics here.")
@tuning("--health-port", click.IntRange(1, 65535), 8081, "Serve /healthz and /readyz here.")
@click.option(
    "--bind-address",
    default="0.0.0.0",  # noqa: S104 - in a pod, probes and scrapes come from outside
    show_default=True,
    help="Address the metrics, health and webhook servers listen on.",
)
@click.option(
    "--operator-namespace",
    envvar="POD_NAMESPACE",
    default=DEFAULT_OPERATOR_NAMESPACE,
    show_default=True,
    help="The operator's namespace; engine NetworkPolicies admit metrics scrapes from it.",
)
@click.option(
    "--engine-image",
    envvar="SOVEREIGN_ENGINE_IMAGE",
    default=DEFAULT_ENGINE_IMAGE,
    show_default=True,
    help="Engine image for specs that do not name one.",
)
@tuning(
    "--resync-seconds",
    click.FloatRange(1, 86_400),
    300.0,
    "Full reconcile of every ModelDeployment this often (watch events act at once).",
)
@tuning(
    "--worker-limit",
    click.IntRange(1, 1_000_000),
    5000,
    "kopf workers per resource kind; keep it above the objects of any watched kind.",
)
@tuning(
    "--reconcile-concurrency",
    click.IntRange(1, 1000),
    16,
    "Reconcile passes at once; the rest wait their turn.",
)
@audit_options
@webhook_options
@tuning(
    "--autoscaler-interval",
    click.FloatRange(0.1, 3600),
    5.0,
    "Seconds between the autoscaler's scrape-and-decide rounds.",
)
@tuning(
    "--autoscaler-startup-grace",
    click.FloatRange(0, 3600),
    60.0,
    "Seconds a replica must have been Ready before its metrics count.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (kopf's too).")
def run_command(
    *,
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    kubeconfig: Path | None,
    metrics_port: int,
    health_port: int,
    bind_address: str,
    operator_namespace: str,
    engine_image: str,
    resync_seconds: float,
    worker_limit: int,
    reconcile_concurrency: int,
    autoscaler_interval: float,
    autoscaler_startup_grace: float,
    verbose: bool,
    webhook: WebhookSettings | None,
    audit: AuditSettings | None,
) -> None:
    """Run the operator (until SIGINT or SIGTERM)."""
    if all_namespaces and namespaces:
        raise click.UsageError("--all-namespaces and --namespace exclude each other")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = OperatorConfig(
        namespaces=tuple(namespaces),
        kubeconfig=kubeconfig,
        operator_namespace=operator_namespace,
        engine_image=engine_image,
        resync_seconds=resync_seconds,
        worker_limit=worker_limit,
        reconcile_concurrency=reconcile_concurrency,
        autoscaler_interval=autoscaler_interval,
        autoscaler_startup_grace=autoscaler_startup_grace,
        metrics_port=metrics_port,
        health_port=health_port,
        bind_address=bind_address,
        audit=audit,
        webhook=webhook,
    )
    try:
        asyncio.run(run_operator(config))
    except AuditStartError as error:
        raise click.ClickException(str(error)) from None


if (
    __name__ == "__main__"
):  # `python -m sovereign_operator.commands.run` before `sovereign run` is wired
    run_command()
