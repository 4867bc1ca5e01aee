"""`sovereign run`'s --webhook-* options, kept here so run.py stays about running.

@webhook_options
def run_command(..., webhook: WebhookSettings | None) -> None: ...

The webhook is on when the API server can reach it: --webhook-service in a cluster (the
chart sets it), --webhook-host for an operator run on the API server's machine.
"""

from __future__ import annotations

from pathlib import Path

import click

from sovereign_operator.commands.options import option_group
from sovereign_operator.settings import WebhookSettings

_DEFAULTS = WebhookSettings()

_OPTIONS = (
    click.option(
        "--webhook-service",
        default=None,
        help="Serve the admission webhook behind this Service of the operator's namespace.",
    ),
    click.option(
        "--webhook-host",
        default=None,
        help="Or: register the webhook by URL https://HOST:PORT (an operator outside the cluster).",
    ),
    click.option(
        "--webhook-port",
        type=click.IntRange(1, 65535),
        default=_DEFAULTS.port,
        show_default=True,
        help="Port the webhook listens on (on --bind-address).",
    ),
    click.option(
        "--webhook-cert-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SOVEREIGN_WEBHOOK_CERT_DIR",
        default=_DEFAULTS.cert_dir,
        show_default=True,
        help="Where the operator keeps the webhook CA and serving certificate it rotates.",
    ),
    click.option(
        "--webhook-configuration",
        default=_DEFAULTS.configuration_name,
        show_default=True,
        help="The ValidatingWebhookConfiguration to keep up to date (the chart creates it).",
    ),
    click.option(
        "--webhook-exempt-user",
        "webhook_exempt_users",
        multiple=True,
        help="A user the webhook skips (repeatable); the operator's own identity always is.",
    ),
)


def webhook_settings(
    *,
    webhook_service: str | None,
    webhook_host: str | None,
    webhook_port: int,
    webhook_cert_dir: Path,
    webhook_configuration: str,
    webhook_exempt_users: tuple[str, ...],
) -> WebhookSettings | None:
    if webhook_service is None and webhook_host is None:
        return None
    return WebhookSettings(
        port=webhook_port,
        cert_dir=webhook_cert_dir,
        host=webhook_host,
        service=webhook_service,
        configuration_name=webhook_configuration,
        exempt_users=tuple(webhook_exempt_users),
    )


webhook_options = option_group("webhook_", "webhook", _OPTIONS, webhook_settings)
"""Add the --webhook-* options; the command receives them as one `webhook` keyword argument."""
