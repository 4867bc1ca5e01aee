"""`sovereign audit keygen` and `sovereign audit verify` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sovereign_operator.audit.checkpoint import CheckpointPolicy, Signer
from sovereign_operator.audit.record import Action, Actor, ActorKind, ObjectRef
from sovereign_operator.audit.sinks import FileSink
from sovereign_operator.audit.trail import AuditTrail
from sovereign_operator.commands.audit import audit_group

pytestmark = pytest.mark.unit


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    result = CliRunner().invoke(
        audit_group, ["keygen", "--private-key", str(private), "--public-key", str(public)]
    )
    assert result.exit_code == 0, result.output
    assert "key id ed25519:" in result.output
    return private, public


@pytest.fixture
def log(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    path = tmp_path / "logs" / "audit.log"
    trail = AuditTrail(
        file_sink=FileSink(path),
        signer=Signer.from_file(keys[0]),
        checkpoints=CheckpointPolicy(every_records=3),
        rotate_bytes=1500,
    )
    with trail:
        for index in range(12):
            trail.record(
                Actor(ActorKind.ADMISSION, "alice"),
                Action.UPDATE,
                ObjectRef("ModelDeployment", "llama", "ns"),
                reason=f"edit {index}",
            )
    return path


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(audit_group, ["verify", *args])
    return result.exit_code, result.output


def all_files(log: Path) -> list[str]:
    return sorted(str(p) for p in log.parent.glob("audit.log*"))


def test_an_intact_log_exits_0_with_a_summary(log: Path, keys: tuple[Path, Path]) -> None:
    files = all_files(log)
    assert len(files) > 2
    code, output = verify(*reversed(files), "--public-key", str(keys[1]), "--require-sealed")
    assert code == 0, output
    assert output.startswith("OK")
    assert "PROVEN: records 0.." in output


def test_a_modified_record_exits_1_naming_file_line_and_seq(
    log: Path, keys: tuple[Path, Path]
) -> None:
    first = log.with_name("audit.log.000000000000")
    lines = first.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"edit", b"EDIT")
    first.write_bytes(b"".join(lines))
    code, output = verify(*all_files(log), "--public-key", str(keys[1]))
    assert code == 1
    assert output.startswith(f"FAILED {first}:2 (seq 1)")
    assert "hash-mismatch" in output


def test_json_output_for_machines(log: Path, keys: tuple[Path, Path]) -> None:
    code, output = verify(*all_files(log), "--public-key", str(keys[1]), "--json")
    report = json.loads(output)
    assert code == 0
    assert report["ok"] is True
    assert report["sealed"] is True
    assert report["unsignedTail"] == 0
    assert report["lastSeq"] == report["records"] - 1


def test_an_anchor_from_the_configmap_is_checked(
    log: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    anchor = tmp_path / "latest-checkpoint.json"
    anchor.write_bytes(log.read_bytes().splitlines()[-1])
    code, _ = verify(*all_files(log), "--public-key", str(keys[1]), "--anchor", str(anchor))
    assert code == 0
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-2]))
    code, output = verify(*all_files(log), "--public-key", str(keys[1]), "--anchor", str(anchor))
    assert code == 1
    assert "truncated" in output


def test_unusable_keys_exit_2(log: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    code, output = verify(str(log), "--public-key", str(bad))
    assert code == 2
    assert "no PEM public key" in output


def test_keygen_refuses_to_overwrite(keys: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(
        audit_group, ["keygen", "--private-key", str(keys[0]), "--public-key", str(keys[1])]
    )
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.output
