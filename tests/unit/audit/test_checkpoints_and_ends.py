"""Signing keys and checkpoints, file order, and what can be proven about a log's end."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sovereign_operator.audit.chain import ChainHead
from sovereign_operator.audit.checkpoint import (
    CONFIGMAP_LATEST_CHECKPOINT,
    CONFIGMAP_PUBLIC_KEY,
    AuditKeyError,
    CheckpointPolicy,
    Signer,
    generate_key_files,
    load_public_keys,
    public_key_configmap,
    signature_problem,
)
from sovereign_operator.audit.findings import AnchorError, Problem
from sovereign_operator.audit.record import Action, Actor, ActorKind, AuditEvent
from sovereign_operator.audit.segments import chain_order
from sovereign_operator.audit.verify import load_anchor, verify_logs
from tests.unit.audit.logs import ATTACKER, KEY, KEYS, build_log, failure_location, parse

pytestmark = pytest.mark.unit

EVENT = AuditEvent(Actor(ActorKind.ADMISSION, "alice"), Action.CREATE)


@pytest.mark.parametrize(
    ("records", "seconds", "due"),
    [(0, 999.0, False), (1, 0.0, False), (1, 60.0, True), (100, 0.0, True), (99, 59.9, False)],
)
def test_checkpoints_fall_due_after_n_records_or_t_seconds(
    records: int, seconds: float, due: bool
) -> None:
    assert CheckpointPolicy(every_records=100, every_seconds=60).due(records, seconds) is due


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    key_id = generate_key_files(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = Signer.from_file(private)
    assert signer.key_id == key_id
    assert set(load_public_keys(public.read_bytes())) == {key_id}
    with pytest.raises(FileExistsError):
        generate_key_files(private, tmp_path / "other.pub")
    assert not (tmp_path / "other.pub").exists()


def test_a_bundle_of_public_keys_verifies_checkpoints_of_every_key() -> None:
    bundle = KEY.public_pem() + ATTACKER.public_pem()
    assert set(load_public_keys(bundle)) == {KEY.key_id, ATTACKER.key_id}


@pytest.mark.parametrize("text", [b"", b"not a key", b"-----END PUBLIC KEY-----"])
def test_unusable_public_keys_are_refused(text: bytes) -> None:
    with pytest.raises(AuditKeyError):
        load_public_keys(text)


def test_a_non_ed25519_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(AuditKeyError, match="ed25519"):
        Signer.from_file(path)


def test_the_configmap_publishes_the_key_and_the_newest_checkpoint() -> None:
    checkpoint = build_log([EVENT], checkpoint_every=1, rotate_every=None).flat()[-1]
    configmap = public_key_configmap("sovereign-audit", "sovereign-system", KEY, checkpoint)
    data = configmap["data"]
    assert isinstance(data, dict)
    assert set(load_public_keys(data[CONFIGMAP_PUBLIC_KEY].encode())) == {KEY.key_id}
    assert data[CONFIGMAP_LATEST_CHECKPOINT].encode() == checkpoint


def test_a_checkpoint_claiming_the_wrong_count_is_refused() -> None:
    body = parse(build_log([EVENT], checkpoint_every=1, rotate_every=None).flat()[-1])
    body["checkpoint"]["records"] = 0
    problem = signature_problem(body, KEYS)
    assert problem is not None
    assert "cover" in problem


def test_another_key_cannot_verify_our_checkpoints() -> None:
    other = Signer(Ed25519PrivateKey.generate())
    log = build_log([EVENT, EVENT], checkpoint_every=1, rotate_every=None)
    result = verify_logs(
        [(name, iter(lines)) for name, lines in log.files], {other.key_id: other.public_key}
    )
    assert result.failure is not None
    assert result.failure.problem is Problem.BAD_CHECKPOINT
    assert "unknown key" in result.failure.message


# -- rotated files ---------------------------------------------------------------------


def test_rotated_files_are_put_in_chain_order_by_name() -> None:
    names = [
        "audit.log",
        "audit.log.000000000120",
        "audit.log.000000000000",
        "audit.log.000000000060",
    ]
    ordered = chain_order([Path("/var/log/x") / n for n in names])
    assert [p.name for p in ordered] == [
        "audit.log.000000000000",
        "audit.log.000000000060",
        "audit.log.000000000120",
        "audit.log",
    ]


def test_files_outside_the_convention_keep_the_order_given() -> None:
    paths = [Path("b.jsonl"), Path("a.jsonl")]
    assert chain_order(paths) == paths


def test_a_rotated_file_given_alone_is_missing_its_predecessors() -> None:
    log = build_log([EVENT] * 9, checkpoint_every=2, rotate_every=3)
    second = log.copy()
    second.files = second.files[1:]
    result = second.verify()
    assert result.failure is not None
    assert result.failure.problem is Problem.MISSING_HEAD


def test_a_missing_middle_file_is_found_where_the_chain_resumes() -> None:
    log = build_log([EVENT] * 9, checkpoint_every=2, rotate_every=3)
    assert len(log.files) >= 3
    damaged = log.copy()
    del damaged.files[1]
    assert failure_location(damaged) == (log.files[2][0], 1)


# -- what the end of a log proves ----------------------------------------------------


def _two_sessions() -> tuple[list[bytes], list[bytes]]:
    """A log written by two operator runs, each ended cleanly (sealed)."""
    first = build_log([EVENT] * 3, checkpoint_every=10, rotate_every=None).flat()
    last = parse(first[-1])
    second = build_log(
        [EVENT] * 3,
        checkpoint_every=10,
        rotate_every=None,
        head=ChainHead(last["seq"] + 1, last["hash"]),
    ).flat()
    return first, second


def test_without_an_anchor_a_log_cut_back_to_an_earlier_seal_cannot_be_told_apart() -> None:
    # The documented limit: a prefix of a valid log is a valid log.
    first, _ = _two_sessions()
    log = build_log([], checkpoint_every=1, rotate_every=None, sealed=False)
    log.files = [("audit.log", first)]
    result = log.verify(require_sealed=True)
    assert result.ok
    assert result.summary.sealed
    assert "Records written after a later restart and then cut off would not show here" in (
        "\n".join(result.summary.describe())
    )


def test_an_anchor_reveals_a_log_cut_back_to_an_earlier_seal() -> None:
    first, second = _two_sessions()
    anchor = load_anchor(second[-1], KEYS)
    log = build_log([], checkpoint_every=1, rotate_every=None, sealed=False)
    log.files = [("audit.log", first)]
    result = log.verify(anchor=anchor)
    assert result.failure is not None
    assert result.failure.problem is Problem.TRUNCATED
    assert (result.failure.location.file, result.failure.location.line) == ("audit.log", len(first))
    log.files = [("audit.log", first + second)]
    intact = log.verify(anchor=anchor)
    assert intact.ok
    assert intact.summary.anchor == anchor


def test_an_anchor_reveals_a_rewritten_log() -> None:
    first, _ = _two_sessions()
    anchor = load_anchor(first[-1], KEYS)
    rewritten = build_log([EVENT] * 4, checkpoint_every=10, rotate_every=None).flat()
    log = build_log([], checkpoint_every=1, rotate_every=None, sealed=False)
    log.files = [("audit.log", rewritten)]
    result = log.verify(anchor=anchor)
    assert result.failure is not None
    assert result.failure.problem is Problem.ANCHOR_MISMATCH
    assert result.failure.location.seq == anchor.seq


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "empty"),
        (b"{}", "not a valid record"),
        (None, "checkpoint record, not an event"),
    ],
)
def test_an_anchor_must_be_a_signed_checkpoint(text: bytes | None, message: str) -> None:
    event_line = build_log([EVENT], checkpoint_every=10, rotate_every=None).flat()[0]
    with pytest.raises(AnchorError, match=message):
        load_anchor(event_line if text is None else text, KEYS)


def test_an_unsealed_tail_is_reported_exactly() -> None:
    log = build_log([EVENT] * 5, checkpoint_every=2, rotate_every=None, sealed=False)
    result = log.verify(require_sealed=False)
    assert result.ok
    assert result.summary.unsigned_tail == 1
    assert not result.summary.sealed
    text = "\n".join(result.summary.describe())
    assert "PROVEN: records 0..5" in text  # seq 5 is the checkpoint after the fourth event
    assert "the 1 record(s) after it (seq 6..6)" in text
    strict = log.verify(require_sealed=True)
    assert strict.failure is not None
    assert strict.failure.problem is Problem.UNSEALED


def test_a_log_without_checkpoints_says_nothing_is_proven() -> None:
    log = build_log([EVENT] * 2, checkpoint_every=10, rotate_every=None, sealed=False)
    result = log.verify(require_sealed=False)
    assert result.ok
    assert "NOT PROVEN: no signed checkpoint" in "\n".join(result.summary.describe())
