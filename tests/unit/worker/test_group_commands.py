"""Registering the group commands on `sovereign-worker`, and their refusals before anything
starts (a wrong role for the rank, flags or a model folder `serve` would refuse)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sovereign_worker.multinode.commands import register_commands
from sovereign_worker.multinode.contract import RANK_ENV

pytestmark = pytest.mark.unit

COMMANDS = ["group-node", "native-leader", "native-member", "ray-leader", "ray-member"]
FLAGS = ["--served-model-name", "m", "--tensor-parallel-size", "1", "--pipeline-parallel-size", "2"]


def cli() -> click.Group:
    @click.group()
    def main() -> None:
        """A stand-in for sovereign_worker.cli.main."""

    register_commands(main)
    return main


def invoke(*args: str, rank: str = "0") -> tuple[int, str]:
    result = CliRunner().invoke(cli(), list(args), env={RANK_ENV: rank})
    return result.exit_code, result.output


def common(model_dir: Path) -> list[str]:
    return ["--nnodes", "2", "--leader-address", "leader.example", "--gpus-per-node", "8",
            "--model-dir", str(model_dir)]  # fmt: skip


def test_every_group_command_is_registered() -> None:
    assert sorted(cli().commands) == sorted(COMMANDS)


@pytest.mark.parametrize(
    ("command", "rank", "message"),
    [
        ("native-leader", "1", "native-leader runs on rank 0; this pod is rank 1"),
        ("native-member", "0", "native-member runs on ranks 1 and up"),
        ("ray-leader", "1", "ray-leader runs on rank 0"),
        ("ray-member", "0", "ray-member runs on ranks 1 and up"),
    ],
)
def test_a_role_refuses_the_wrong_rank(
    command: str, rank: str, message: str, tmp_path: Path
) -> None:
    code, output = invoke(command, *common(tmp_path), "--", *FLAGS, rank=rank)
    assert code == 1
    assert f"error: {message}" in output


@pytest.mark.parametrize("backend", ["native", "ray"])
def test_a_pod_without_a_fetched_model_refuses_to_start(backend: str, tmp_path: Path) -> None:
    code, output = invoke("group-node", "--backend", backend, *common(tmp_path), "--", *FLAGS)
    assert code == 1
    assert "holds no config.json: run `sovereign-worker fetch` into it first" in output


def test_group_flags_cannot_be_smuggled_in_after_the_separator(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    code, output = invoke(
        "group-node", "--backend", "native", *common(tmp_path), "--", *FLAGS, "--node-rank", "1"
    )
    assert code == 1
    assert "--node-rank is refused: the operator forms multi-node groups" in output
