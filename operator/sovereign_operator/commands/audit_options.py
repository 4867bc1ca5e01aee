"""`sovereign run`'s --audit-* options, kept here so run.py stays about running.

@audit_options
def run_command(..., audit: AuditSettings | None) -> None: ...   # None without --audit-dir
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sovereign_operator.audit.health import FailurePolicy
from sovereign_operator.audit_hooks import DEFAULT_CONFIGMAP, AuditSettings, parse_syslog
from sovereign_operator.commands.options import option_group, tuning

_OPTIONS = (
    click.option(
        "--audit-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SOVEREIGN_AUDIT_DIR",
        default=None,
        help="Record the audit trail here (audit.log, rotated files, spools). Unset: no audit.",
    ),
    click.option(
        "--audit-signing-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="PEM ed25519 key that signs checkpoints (e.g. the key Secret mounted as a file).",
    ),
    click.option(
        "--audit-signing-key-secret",
        default=None,
        help="Or: a Secret in the operator's namespace holding key.pem.",
    ),
    tuning(
        "--audit-checkpoint-records",
        click.IntRange(1, 10_000_000),
        1000,
        "Sign a checkpoint after this many records...",
    ),
    tuning(
        "--audit-checkpoint-seconds",
        click.FloatRange(0.1, 86_400),
        60.0,
        "...or this many seconds, whichever comes first.",
    ),
    click.option("--audit-stdout", is_flag=True, help="Also write records to stdout."),
    click.option("--audit-syslog", default=None, help="Also send records to syslog at HOST:PORT."),
    click.option("--audit-http", default=None, help="Also POST records to this http(s) URL."),
    click.option(
        "--audit-failure-policy",
        type=click.Choice([p.value for p in FailurePolicy]),
        default=FailurePolicy.PAUSE.value,
        show_default=True,
        help="While a sink fails: pause changes, or continue and deliver later.",
    ),
    click.option(
        "--audit-public-key-configmap",
        default=DEFAULT_CONFIGMAP,
        show_default=True,
        help="ConfigMap in the operator's namespace where the public key is published.",
    ),
)


def audit_settings(**options: Any) -> AuditSettings | None:
    """The settings the --audit-* options describe; None without --audit-dir."""
    log_dir: Path | None = options["audit_dir"]
    syslog: str | None = options["audit_syslog"]
    key: Path | None = options["audit_signing_key"]
    secret: str | None = options["audit_signing_key_secret"]
    if log_dir is None:
        sinks = ("audit_signing_key", "audit_signing_key_secret", "audit_stdout", "audit_syslog")
        if any(options[name] for name in (*sinks, "audit_http")):
            raise click.UsageError("the --audit-* options need --audit-dir")
        return None
    if key is not None and secret is not None:
        raise click.UsageError(
            "--audit-signing-key and --audit-signing-key-secret exclude each other"
        )
    if syslog is not None:
        try:
            parse_syslog(syslog)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--audit-syslog") from None
    return AuditSettings(
        log_dir=log_dir,
        signing_key=key,
        signing_key_secret=secret,
        checkpoint_records=options["audit_checkpoint_records"],
        checkpoint_seconds=options["audit_checkpoint_seconds"],
        stdout=options["audit_stdout"],
        syslog=syslog,
        http_url=options["audit_http"],
        failure_policy=FailurePolicy(options["audit_failure_policy"]),
        public_key_configmap=options["audit_public_key_configmap"],
    )


audit_options = option_group("audit_", "audit", _OPTIONS, audit_settings)
"""Add the --audit-* options; the command receives them as one `audit` keyword argument."""
