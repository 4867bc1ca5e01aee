"""`sovereign audit verify|keygen`: prove an audit log untouched, or say where it was changed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sovereign_operator.audit.checkpoint import (
    AuditKeyError,
    generate_key_files,
    load_public_keys,
)
from sovereign_operator.audit.findings import AnchorError, VerifyResult
from sovereign_operator.audit.verify import load_anchor, verify_files

EXIT_TAMPERED = 1
EXIT_UNUSABLE_INPUT = 2


@click.group("audit")
def audit_group() -> None:
    """Work with the operator's tamper-evident audit log."""


@audit_group.command("verify")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key the checkpoints are signed with (repeat for rotated keys).",
)
@click.option(
    "--anchor",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint line kept outside the log (the ConfigMap's latest-checkpoint.json); "
    "the log must reach it unchanged, which detects a log cut off before it.",
)
@click.option(
    "--require-sealed",
    is_flag=True,
    help="Fail unless the log ends with the seal of a clean shutdown (for archived logs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_command(
    files: tuple[Path, ...],
    public_keys: tuple[Path, ...],
    anchor: Path | None,
    require_sealed: bool,
    as_json: bool,
) -> None:
    """Verify audit log FILES (rotated files too, in any order: `audit.log*`) as one chain.

    Exit 0 with a summary of what is proven when the log is intact; exit 1 naming the
    file, line and seq of the first modified, deleted, inserted or reordered record, a
    forged checkpoint, or a truncation that can be shown; exit 2 for unusable input.
    """
    try:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in public_keys:
            keys.update(load_public_keys(path.read_bytes(), source=str(path)))
        anchor_point = load_anchor(anchor.read_bytes(), keys) if anchor else None
    except (AuditKeyError, AnchorError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)
    result = verify_files(
        list(files),
        keys,
        anchor=anchor_point,
        require_sealed=require_sealed,
    )
    click.echo(_as_json(result) if as_json else _as_text(result))
    sys.exit(0 if result.ok else EXIT_TAMPERED)


def _as_text(result: VerifyResult) -> str:
    if result.failure is not None:
        lines = [f"FAILED {result.failure}"]
        verified = result.summary.records
        if verified:
            lines.append(f"({verified} records before it verified)")
        return "\n".join(lines)
    return "\n".join(["OK", *(f"  {line}" for line in result.summary.describe())])


def _as_json(result: VerifyResult) -> str:
    summary = result.summary
    failure = result.failure
    return json.dumps(
        {
            "ok": result.ok,
            "failure": None
            if failure is None
            else {
                "problem": failure.problem.value,
                "file": failure.location.file,
                "line": failure.location.line,
                "seq": failure.location.seq,
                "message": failure.message,
            },
            "files": list(summary.files),
            "records": summary.records,
            "checkpoints": summary.checkpoints,
            "firstSeq": summary.first_seq,
            "lastSeq": summary.last.seq if summary.last else None,
            "lastCheckpointSeq": summary.last_checkpoint.seq if summary.last_checkpoint else None,
            "unsignedTail": summary.unsigned_tail,
            "sealed": summary.sealed,
            "keyIds": list(summary.key_ids),
            "statements": summary.describe() if result.ok else [],
        },
        indent=2,
    )


@audit_group.command("keygen")
@click.option(
    "--private-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the PEM private key (mode 0600); put it in the operator's Secret.",
)
@click.option(
    "--public-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the PEM public key; publish it for auditors.",
)
def keygen_command(private_key: Path, public_key: Path) -> None:
    """Create an ed25519 key pair for signing audit checkpoints. Never overwrites a file."""
    try:
        key_id = generate_key_files(private_key, public_key)
    except FileExistsError as error:
        click.echo(f"error: {error.filename} exists; refusing to overwrite a key", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)
    click.echo(f"wrote {private_key} and {public_key} (key id {key_id})")
    click.echo(
        "kubectl -n sovereign-system create secret generic sovereign-audit-key "
        f"--from-file=key.pem={private_key}"
    )
