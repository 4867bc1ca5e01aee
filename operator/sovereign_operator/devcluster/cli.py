"""`sovereign cluster up|down|status|env`: the local control plane from a terminal.

Progress and tables go to stderr, so `eval "$(sovereign cluster env)"` sees only the
export lines on stdout.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import cluster as local
from . import status as report
from .binaries import BinariesError, repo_root
from .processes import ComponentError

STATE_ENV = "SOVEREIGN_CLUSTER_STATE"
F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)


def _state_option(command: F) -> F:
    return click.option(
        "--state",
        "state",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=STATE_ENV,
        default=None,
        show_envvar=True,
        help="Folder holding this cluster's processes, logs, PKI and kubeconfigs "
        "[default: .state/cluster in the repository]. One folder, one cluster.",
    )(command)


def _resolve(state: Path | None) -> Path:
    return state if state is not None else repo_root() / ".state" / "cluster"


def _failures(action: Callable[[], None]) -> None:
    """Turn the expected failures into a one-paragraph message and exit status 1."""
    try:
        action()
    except (
        local.ClusterError,
        report.NoClusterError,
        BinariesError,
        ComponentError,
        ValueError,
    ) as error:
        raise click.ClickException(str(error)) from error


@click.group(name="cluster")
def cluster() -> None:
    """A local Kubernetes control plane with fake GPU nodes (no Docker needed)."""


@cluster.command()
@_state_option
@click.option(
    "--nodes",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Node pool file [default: e2e/cluster/nodes.yaml].",
)
def up(state: Path | None, nodes: Path | None) -> None:
    """Start etcd, the apiserver, controller-manager, scheduler and kwok; create the nodes."""
    folder = _resolve(state)

    def run() -> None:
        started = time.monotonic()
        info = local.up(folder, nodes_file=nodes, progress=_progress(started))
        _print_status(report.status(Path(info.state_dir)))
        console.print("\nUse it:")
        for line in report.env_lines(folder):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        console.print(
            f"  kubectl get nodes    # stop with: sovereign cluster down --state {folder}"
        )

    _failures(run)


@cluster.command()
@_state_option
def down(state: Path | None) -> None:
    """Stop exactly the processes `up` started here, and delete the state folder."""
    folder = _resolve(state)

    def run() -> None:
        stopped = local.down(folder)
        console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}", soft_wrap=True)
        console.print(f"removed: {folder}", soft_wrap=True)

    _failures(run)


@cluster.command()
@_state_option
def status(state: Path | None) -> None:
    """Show components and nodes; exit 1 unless everything is up and Ready."""
    folder = _resolve(state)

    def run() -> None:
        current = report.status(folder)
        _print_status(current)
        if not current.healthy:
            raise click.ClickException("cluster is not healthy")

    _failures(run)


@cluster.command()
@_state_option
def env(state: Path | None) -> None:
    """Print export lines for KUBECONFIG and PATH: eval "$(sovereign cluster env)"."""
    folder = _resolve(state)
    _failures(lambda: click.echo("\n".join(report.env_lines(folder))))


def _progress(started: float) -> Callable[[str], None]:
    def report(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {message}", highlight=False)

    return report


def _print_status(current: report.ClusterStatus) -> None:
    components = Table(title=f"control plane in {current.info.state_dir}")
    components.add_column("component")
    components.add_column("state")
    for name, running in current.components.items():
        components.add_row(name, "[green]running[/]" if running else "[red]stopped[/]")
    api = "[green]ready[/]" if current.apiserver_ready else "[red]not ready[/]"
    components.add_row(f"apiserver {current.info.server}", api)
    console.print(components)

    nodes = Table(title="nodes")
    for column in ("name", "ready", "nvidia.com/gpu", "gpu product"):
        nodes.add_column(column)
    for node in current.nodes:
        ready = "[green]Ready[/]" if node.ready else "[red]NotReady[/]"
        nodes.add_row(node.name, ready, node.gpus, node.gpu_product)
    console.print(nodes)
