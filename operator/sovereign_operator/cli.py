"""`sovereign`: the operator's command line. Each subcommand lives in `commands/`."""

from __future__ import annotations

import click

from sovereign_operator import __version__
from sovereign_operator.commands.audit import audit_group
from sovereign_operator.commands.crds import crds_command
from sovereign_operator.commands.render import render_command
from sovereign_operator.commands.report import report_command
from sovereign_operator.commands.run import run_command
from sovereign_operator.devcluster.cli import cluster


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sovereign")
def main() -> None:
    """Sovereign model operator: serve open-weight models under your own controls."""


main.add_command(audit_group)
main.add_command(crds_command)
main.add_command(render_command)
main.add_command(report_command)
main.add_command(run_command)
main.add_command(cluster)
