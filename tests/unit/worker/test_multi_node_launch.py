"""The multi-node part of the engine contract: the flags that join a pod to its group."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sovereign_worker.engine_args import (
    EngineLaunch,
    MultiNodeLaunch,
    build_vllm_flags,
    validate_extra_args,
)

pytestmark = pytest.mark.unit

LEADER = "llama-g0-1a2b3c-0.llama-g0-1a2b3c.clinical-ai.svc"


def launch(node: MultiNodeLaunch | None, **fields: object) -> EngineLaunch:
    values: dict[str, object] = {
        "served_name": "llama3-405b",
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 2,
        "multi_node": node,
    }
    values.update(fields)
    return EngineLaunch.model_validate(values)


def native(rank: int, nnodes: int = 2) -> MultiNodeLaunch:
    return MultiNodeLaunch(backend="native", nnodes=nnodes, node_rank=rank, master_addr=LEADER)


def after(flags: list[str], flag: str) -> list[str]:
    """The tokens from `flag` on."""
    return flags[flags.index(flag) :]


def test_single_node_launches_have_no_group_flags() -> None:
    flags = build_vllm_flags(launch(None))
    for flag in ("--distributed-executor-backend", "--nnodes", "--headless", "--master-addr"):
        assert flag not in flags


def test_native_leader_flags_follow_the_parallel_flags() -> None:
    flags = build_vllm_flags(launch(native(0)))
    start = flags.index("--distributed-executor-backend")
    assert flags[start - 2 : start] == ["--pipeline-parallel-size", "2"]
    assert flags[start : start + 10] == [
        "--distributed-executor-backend",
        "mp",
        "--nnodes",
        "2",
        "--node-rank",
        "0",
        "--master-addr",
        LEADER,
        "--master-port",
        "29500",
    ]
    assert "--headless" not in flags


def test_native_members_run_headless() -> None:
    flags = build_vllm_flags(launch(native(1)))
    assert after(flags, "--node-rank")[:2] == ["--node-rank", "1"]
    assert flags.count("--headless") == 1
    assert flags.index("--headless") < flags.index("--dtype")


def test_ray_leader_names_only_the_executor() -> None:
    flags = build_vllm_flags(launch(MultiNodeLaunch(backend="ray", nnodes=4)))
    assert after(flags, "--distributed-executor-backend")[:2] == [
        "--distributed-executor-backend",
        "ray",
    ]
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--headless"):
        assert flag not in flags


def test_group_flags_are_real_vllm_flags_users_cannot_pass() -> None:
    # Every group flag is a known vLLM 0.32 flag that extraArgs refuses by name, so these
    # can only ever come from the group commands, never from a user's spec.
    flags = build_vllm_flags(launch(native(1)))
    group = after(flags, "--distributed-executor-backend")[:11]
    names = [token for token in group if token.startswith("--")]
    problems = validate_extra_args(group, allow_trust_remote_code=False)
    assert [p.token for p in problems] == names
    assert all("is refused: the operator forms multi-node groups" in p.message for p in problems)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"backend": "native", "nnodes": 2, "node_rank": 2, "master_addr": "a"}, "below nnodes"),
        ({"backend": "native", "nnodes": 2, "node_rank": 1}, "master_addr"),
        ({"backend": "ray", "nnodes": 2, "node_rank": 1}, "only the leader"),
        ({"backend": "native", "nnodes": 1, "master_addr": "a"}, "greater than or equal"),
        ({"backend": "native", "nnodes": 2, "master_addr": "-bad"}, "pattern"),
        ({"backend": "native", "nnodes": 2, "master_addr": "a b"}, "pattern"),
        ({"backend": "native", "nnodes": 2, "master_addr": "a", "master_port": 0}, "greater"),
        ({"backend": "gloo", "nnodes": 2}, "backend"),
    ],
)
def test_impossible_group_places_are_refused(node: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MultiNodeLaunch.model_validate(node)


def test_native_world_must_split_evenly_over_the_nodes() -> None:
    with pytest.raises(ValidationError, match=r"tensor x pipeline \(6\).*nnodes \(4\)"):
        launch(native(0, nnodes=4), tensor_parallel_size=3)
    # Ray places workers itself, so it has no such rule.
    launch(MultiNodeLaunch(backend="ray", nnodes=4), tensor_parallel_size=3)


def test_the_launch_round_trips_through_json() -> None:
    original = launch(native(1))
    assert EngineLaunch.model_validate(original.model_dump()) == original
    assert original.multi_node is not None
    assert original.multi_node.headless
