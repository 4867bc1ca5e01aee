"""`sovereign render` and `sovereign crds` as a user runs them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sovereign_operator.cli import main

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BASE: dict[str, Any] = {
    "apiVersion": "sovereign.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "m", "namespace": "ns"},
    "spec": {
        "model": {"source": "pvc://models/llama", "digest": "sha256:" + "1" * 64},
        "resources": {"gpus": 1},
    },
}


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def write(tmp_path: Path, document: dict[str, Any]) -> str:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def with_spec(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = document["spec"]
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return document


def kinds(output: str) -> list[str]:
    return [doc["kind"] for doc in yaml.safe_load_all(output) if doc]


def test_the_8b_example_renders_one_gpu_and_tensor_parallel_1() -> None:
    result = run("render", "-f", str(EXAMPLES / "llama3-8b-single-gpu.yaml"))
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    engine = deployment["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    args = engine["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
    assert {
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
    } <= set(kinds(result.output))


def test_the_70b_example_renders_tensor_parallel_8() -> None:
    result = run("render", "-f", str(EXAMPLES / "llama3-70b-tp8.yaml"))
    assert result.exit_code == 0, result.output
    assert "--tensor-parallel-size\n      - '8'" in result.output or "- '8'" in result.output


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"resources__gpus": 0}, "spec.resources.gpus: Input should be greater than or equal to 1"),
        (
            {"resources__gpus": -4},
            "spec.resources.gpus: Input should be greater than or equal to 1",
        ),
        (
            {"resources__gpus": 12},
            "spec.resources.gpus: 12 GPUs span nodes of 8 GPUs but are not a multiple of 8; use 8 or 16",
        ),
        (
            {"resources__gpus": 100_000},
            "spec.resources.gpus: Input should be less than or equal to 512",
        ),
        (
            {"model__source": "pvc://models/../../etc"},
            "spec.model.source: pvc path '../../etc' must not contain",
        ),
        ({"model__source": "file:///srv/../etc/shadow"}, "spec.model.source: file path"),
        ({"engine__extraArgs": ["--max-num-seqs", "8; rm -rf /"]}, "spec.engine.extraArgs"),
        ({"engine__extraArgs": ["--max-num-seqs", "$(curl evil)"]}, "spec.engine.extraArgs"),
        ({"engine__extraArgs": ["--port", "9000"]}, "spec.engine.extraArgs"),
        ({"engine__env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]}, "spec.engine.env: env[0]"),
        (
            {"engine__env": [{"name": "https_proxy", "value": "http://proxy:3128"}]},
            "spec.engine.env: env[0]",
        ),
        ({"resources__gpuz": 1}, "spec.resources.gpuz: unknown field"),
        (
            {"resources__memory": "99999999999999999999Ei"},
            "spec.resources.memory: 99999999999999999999Ei is more than any node offers; at most 64Ti",
        ),
        ({"resources__cpu": 100000}, "spec.resources.cpu: 100000 is more than any node offers"),
        ({"engine__maxModelLen": 10**12}, "spec.engine.maxModelLen"),
        (
            {"scaling": {"minReplicas": 3, "maxReplicas": 2}},
            "minReplicas (3) must not exceed maxReplicas (2)",
        ),
    ],
)
def test_bad_input_exits_non_zero_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    result = run("render", "-f", write(tmp_path, with_spec(**changes)))
    assert result.exit_code == 1
    assert expected in result.output, result.output
    assert "apiVersion" not in result.output  # nothing half-rendered on stdout


def test_every_problem_is_listed(tmp_path: Path) -> None:
    document = with_spec(resources__gpus=0, model__digest="nope", engine__dtype="int3")
    result = run("render", "-f", write(tmp_path, document))
    assert result.exit_code == 1
    for path in ("spec.resources.gpus", "spec.model.digest", "spec.engine.dtype"):
        assert path in result.output


def test_gpus_per_node_option_changes_the_layout(tmp_path: Path) -> None:
    path = write(tmp_path, with_spec(resources__gpus=8))
    assert run("render", "-f", path, "--gpus-per-node", "8").exit_code == 0
    result = run("render", "-f", path, "--gpus-per-node", "6")
    assert result.exit_code == 1
    assert "not a multiple of 6" in result.output


def test_not_yaml_and_no_deployments_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    result = run("render", "-f", str(bad))
    assert result.exit_code == 2
    assert "not valid YAML" in result.output
    policy = str(EXAMPLES / "modelpolicy-regulated.yaml")
    assert "no ModelDeployment" in run("render", "-f", policy).output


def test_crds_check_passes_on_the_committed_files_and_fails_on_drift(tmp_path: Path) -> None:
    assert run("crds", "--check", "--out-dir", str(REPO / "crds")).exit_code == 0
    assert run("crds", "--out-dir", str(tmp_path)).exit_code == 0
    stale = tmp_path / "sovereign.dev_modelpolicies.yaml"
    stale.write_text(stale.read_text().replace("Cluster", "Namespaced"))
    result = run("crds", "--check", "--out-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "differs from the models" in result.output
