"""A native multi-node group for real: vLLM's CPU build, two processes as two nodes,
pipeline parallel 2, each started through `sovereign-worker group-node` exactly as the
rendered pods start it (see group_pods for the two one-host differences).

The served group is shared by the module (it takes two to three minutes to come up on two
cores) and the test that kills its member comes last. The failure paths that need no vLLM
(a lonely leader or member, a pod without a verified model, SIGTERM while starting) run first.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sovereign_worker.engine_args import EngineLaunch, build_vllm_flags
from sovereign_worker.multinode.contract import GroupCommand
from tests.engine.group_pods import GroupPod, start_pod, stop_pods, wait_until
from tests.engine.pods import SharedEngine
from tests.engine.support import free_port, tail

pytestmark = pytest.mark.engine

SERVED_NAME = "tiny-group"
MAX_MODEL_LEN = 256
PROMPT = "the quick brown fox"
COMPLETION_TOKENS = 16
STARTUP_SECONDS = 600
# Generous bounds that tell "fails fast" from "hangs"; not performance assertions.
FAIL_FAST_SECONDS = 120
LONELY_TIMEOUT = 5


def flags(port: int, pipeline: int) -> list[str]:
    """The vLLM flags as the renderer writes them for the plan, with this pod's port."""
    launch = EngineLaunch(
        served_name=SERVED_NAME,
        tensor_parallel_size=1,
        pipeline_parallel_size=pipeline,
        port=port,
        max_model_len=MAX_MODEL_LEN,
        dtype="bfloat16",
        shutdown_timeout_seconds=5,
    )
    return build_vllm_flags(launch)


def group_command(join_timeout: int = 300) -> GroupCommand:
    return GroupCommand(
        backend="native",
        nnodes=2,
        leader_address="127.0.0.1",
        gpus_per_node=1,
        join_timeout_seconds=join_timeout,
        master_port=free_port(),
        link_port=free_port(),
    )


def bind(rank: int) -> dict[str, str]:
    """One core per "node" (../shared/notes/vllm-multinode-on-cpu.md)."""
    return {"VLLM_CPU_OMP_THREADS_BIND": str(rank)}


@pytest.fixture(scope="module")
def model_dir(llama_dir: Path) -> Path:
    """The verified model, where the fetch init container leaves it."""
    return llama_dir


@pytest.fixture
def short_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return dict(json.load(response))


def completion_token_ids(port: int, served_name: str = SERVED_NAME) -> list[int]:
    result = post(
        port,
        "/v1/completions",
        {
            "model": served_name,
            "prompt": PROMPT,
            "max_tokens": COMPLETION_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        },
    )
    ids = [int(token) for token in result["choices"][0]["token_ids"]]
    assert len(ids) == COMPLETION_TOKENS, result
    return ids


# --- failure paths that start no vLLM -------------------------------------------------


def test_a_leader_whose_members_never_come_fails_clearly(model_dir: Path, short_root: Path) -> None:
    port = free_port()
    command = group_command(LONELY_TIMEOUT)
    leader = start_pod(0, command, model_dir, flags(port, 2), short_root, port=port)
    try:
        assert leader.wait(FAIL_FAST_SECONDS) == 1
    finally:
        stop_pods([leader])
    assert leader.last_line == (
        f"error: only 0 of 1 members joined the group within {LONELY_TIMEOUT} s (missing "
        "ranks: 1); every member must reach this leader on TCP port "
        f"{command.link_port}: check that all of the group's pods are scheduled and "
        "running (kubectl get pods -l sovereign.dev/group=GROUP) and what the missing ones log"
    )
    assert "starting vLLM" not in leader.log_text()


def test_a_member_whose_leader_never_comes_fails_clearly(model_dir: Path, short_root: Path) -> None:
    command = group_command(LONELY_TIMEOUT)
    port = free_port()
    member = start_pod(1, command, model_dir, flags(port, 2), short_root, port=port)
    try:
        assert member.wait(FAIL_FAST_SECONDS) == 1
    finally:
        stop_pods([member])
    assert member.last_line.startswith(
        f"error: could not join the group leader at 127.0.0.1:{command.link_port} within "
        f"{LONELY_TIMEOUT} s (last error: "
    )
    assert "check that the leader pod (rank 0) is running" in member.last_line


def test_a_pod_without_a_verified_model_refuses_to_start(short_root: Path) -> None:
    empty = short_root / "model"
    empty.mkdir()
    port = free_port()
    pods = [start_pod(rank, group_command(), empty, flags(port + rank, 2), short_root,
                      port=port + rank) for rank in (0, 1)]  # fmt: skip
    try:
        for pod in pods:
            assert pod.wait(60) == 1
            assert "holds no config.json: run `sovereign-worker fetch` into it first" in (
                pod.last_line
            )
    finally:
        stop_pods(pods)


def test_sigterm_stops_a_starting_group_cleanly(model_dir: Path, short_root: Path) -> None:
    port = free_port()
    command = group_command()
    pods = [start_pod(rank, command, model_dir, flags(port + rank, 2), short_root,
                      port=port + rank) for rank in (0, 1)]  # fmt: skip
    try:
        # The member reports not ready until the group serves; vLLM is starting by then.
        wait_until(lambda: pods[1].health() == 503, 60, "the member's /health", pods)
        for pod in reversed(pods):  # as the kubelet does when the group is deleted
            pod.terminate()
        codes = [pod.wait(60) for pod in pods]
    finally:
        stop_pods(pods)
    assert codes == [0, 0], [tail(pod.log) for pod in pods]


# --- the served group -----------------------------------------------------------------


@dataclass
class Group:
    leader: GroupPod
    member: GroupPod
    member_waited: bool


@pytest.fixture(scope="module")
def reference_token_ids(llama_engine: SharedEngine) -> list[int]:
    """The same model and prompt in one process: the single-node pod's engine, which
    test_vllm_serve.py tests (its settings differ only in what greedy decoding ignores:
    served name, context length, --max-num-seqs)."""
    engine = llama_engine.get()
    return completion_token_ids(engine.port, engine.served_name)


@pytest.fixture(scope="module")
def group(
    model_dir: Path, reference_token_ids: list[int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Group]:
    # Only orders the fixtures: the reference is read before the group starts, so the two
    # never compute at once on two cores (the reference's engine idles until test_vllm_serve).
    del reference_token_ids
    root = tmp_path_factory.mktemp("native-group")
    command = group_command()
    leader_port, member_port = free_port(), free_port()
    # The member starts first and waits for a leader that does not exist yet.
    member = start_pod(1, command, model_dir, flags(member_port, 2), root, port=member_port,
                       env=bind(1))  # fmt: skip
    pods = [member]
    try:
        time.sleep(5)
        waited = member.process.poll() is None and "joined" not in member.log_text()
        leader = start_pod(0, command, model_dir, flags(leader_port, 2), root, port=leader_port,
                           env=bind(0))  # fmt: skip
        pods.append(leader)
        wait_until(lambda: leader.health() == 200, STARTUP_SECONDS, "the leader's /health", pods)
        yield Group(leader, member, waited)
    finally:
        stop_pods(pods)


def test_the_group_serves_the_tokens_of_one_process(
    group: Group, reference_token_ids: list[int]
) -> None:
    assert group.member_waited, tail(group.member.log)
    assert "member rank 1 joined from 127.0.0.1 (1 of 1)" in group.leader.log_text()
    assert completion_token_ids(group.leader.port) == reference_token_ids


def vllm_command(pod: GroupPod) -> str:
    """The command line of the pod's `vllm serve` process."""
    for process in pod.tree():
        argv = process.cmdline()
        if "serve" in argv and any(Path(arg).name == "vllm" for arg in argv[:2]):
            return " ".join(argv)
    raise AssertionError(f"rank {pod.rank} runs no vllm serve:\n{tail(pod.log)}")


def test_the_pods_run_vllm_in_their_group_roles(group: Group) -> None:
    leader, member = vllm_command(group.leader), vllm_command(group.member)
    for text in (leader, member):
        assert "--pipeline-parallel-size 2 --distributed-executor-backend mp --nnodes 2" in text
        assert "--master-addr 127.0.0.1" in text
    assert "--node-rank 0" in leader
    assert "--headless" not in leader
    assert "--node-rank 1" in member
    assert "--headless" in member


def test_the_member_is_ready_once_the_group_serves(group: Group) -> None:
    wait_until(lambda: group.member.health() == 200, 30, "the member's /health", [group.member])


def test_killing_the_member_stops_the_leader_fast(group: Group) -> None:
    completion_token_ids(group.leader.port)  # serving right up to the kill
    leader_processes = group.leader.tree()
    killed_at = time.monotonic()
    group.member.kill()
    code = group.leader.wait(FAIL_FAST_SECONDS)
    elapsed = time.monotonic() - killed_at
    assert code == 1, tail(group.leader.log)
    assert group.leader.last_line.startswith(
        "error: member rank 1 (127.0.0.1) left the group: connection closed; the group stops"
    ), tail(group.leader.log)
    # vLLM's API server, engine core and workers went with it (nothing holds the GPUs).
    assert not [p for p in leader_processes if p.is_running() and p.status() != "zombie"]
    print(f"the leader exited {elapsed:.1f} s after its member was killed")
