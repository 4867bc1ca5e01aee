"""`sovereign-worker`: the commands serving pods run (and model publishers run once).

    sovereign-worker digest DIR                                   # prints sha256:...
    sovereign-worker fetch --source URI --digest D --dest DIR     # init container
    sovereign-worker serve --model-dir DIR -- VLLM_FLAGS...       # engine container
    sovereign-worker serve --engine diffusers --model-dir DIR -- DIFFUSERS_FLAGS...

Exit codes: 0 success; 1 the source or engine could not be reached or started (retrying may
help); 2 a usage error; 3 the model bytes are not the ones the digest names (retrying will
not help: the operator reports ModelVerified=False). The last line on stderr is the reason,
which Kubernetes shows as the container's termination message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Final, NoReturn

import click

from sovereign_worker import __version__
from sovereign_worker.fetch import FetchError, S3Settings, VerificationError, fetch_model
from sovereign_worker.manifest import (
    MANIFEST_NAME,
    ManifestError,
    build_manifest,
    is_digest,
    write_manifest,
)
from sovereign_worker.paths import VOLUMES_ROOT
from sovereign_worker.serve import ServeError, engine_environment, exec_vllm, vllm_argv

EXIT_FAILED: Final = 1
EXIT_MODEL_REFUSED: Final = 3

_JOBS = click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Files hashed (and copied) at once; default: one per usable core.",
)


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sovereign-worker")
def main() -> None:
    """Fetch, verify and serve models inside sovereign serving pods."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )


@main.command()
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path)
)
@_JOBS
@click.option(
    "--write/--no-write",
    default=True,
    show_default=True,
    help=f"Write the manifest to DIRECTORY/{MANIFEST_NAME}, where fetch and verify look for it.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the manifest to this file instead.",
)
def digest(directory: Path, jobs: int | None, write: bool, output: Path | None) -> None:
    """Print the digest of the model in DIRECTORY, the value for spec.model.digest.

    The digest is the sha256 of a canonical JSON manifest of every file (path, size, sha256).
    Ship the manifest with the model, so a failed verification can name the file that differs.
    """
    try:
        manifest = build_manifest(directory, jobs=jobs)
    except ManifestError as error:
        _fail(str(error))
    target = output or (directory / MANIFEST_NAME if write else None)
    if target is not None:
        write_manifest(manifest, target)
        logging.getLogger(__name__).info(
            "%d files, %d bytes; manifest written to %s",
            len(manifest.files),
            manifest.total_bytes,
            target,
        )
    click.echo(manifest.digest)


def _check_digest(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not is_digest(value):
        raise click.BadParameter("write sha256: and 64 lower-case hex digits")
    return value


@main.command()
@click.option(
    "--source", required=True, help="pvc://CLAIM/PATH, file:///PATH or s3://BUCKET/PREFIX."
)
@click.option(
    "--digest",
    "expected_digest",
    required=True,
    callback=_check_digest,
    help="The model digest (spec.model.digest).",
)
@click.option(
    "--dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The cache folder for copied sources; pvc:// sources are verified in place instead.",
)
@_JOBS
@click.option(
    "--volumes-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=VOLUMES_ROOT,
    show_default=True,
    help="Where claims of pvc:// sources are mounted, one folder per claim.",
)
@click.option(
    "--s3-credentials-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    envvar="SOVEREIGN_S3_CREDENTIALS_DIR",
    help="A mounted Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY files; "
    "default: the AWS_* environment.",
)
def fetch(
    *,
    source: str,
    expected_digest: str,
    dest: Path,
    jobs: int | None,
    volumes_root: Path,
    s3_credentials_dir: Path | None,
) -> None:
    """Fetch the model from SOURCE and verify every byte against DIGEST.

    Prints the folder that holds the verified model. On a mismatch nothing is left in DEST
    and the error names each file that is missing, unexpected or different.
    """
    try:
        folder = fetch_model(
            source,
            expected_digest,
            dest,
            volumes_root=volumes_root,
            jobs=jobs,
            s3=S3Settings(credentials_dir=s3_credentials_dir),
        )
    except VerificationError as error:
        _fail(f"model refused: {error}", EXIT_MODEL_REFUSED)
    except (FetchError, ValueError) as error:
        _fail(str(error))
    click.echo(folder)


@main.command()
@click.option(
    "--model-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The verified model folder (where fetch left it).",
)
@click.option(
    "--engine",
    type=click.Choice(["vllm", "diffusers"]),
    default="vllm",
    show_default=True,
    help="vllm (text, speech) or diffusers (Stable Diffusion images).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the command as a JSON list instead of running it."
)
@click.argument("vllm_flags", nargs=-1, type=click.UNPROCESSED)
def serve(model_dir: Path, engine: str, dry_run: bool, vllm_flags: tuple[str, ...]) -> None:
    """Validate the vLLM flags given after `--` and exec `vllm serve MODEL_DIR FLAGS...`.

    vLLM replaces this process, so it receives SIGTERM itself and drains in-flight requests
    for --shutdown-timeout seconds before exiting. With `--engine diffusers` the flags are
    the diffusers engine's, and this process serves images itself (same drain on SIGTERM).
    """
    if engine == "diffusers":
        _serve_diffusers(model_dir, dry_run, vllm_flags)
        return
    try:
        argv = vllm_argv(model_dir, vllm_flags)
    except ServeError as error:
        _fail(str(error))
    if dry_run:
        click.echo(json.dumps(argv))
        return
    logging.getLogger(__name__).info("exec %s", json.dumps(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        exec_vllm(argv, engine_environment(os.environ))
    except (ServeError, OSError) as error:
        _fail(str(error))


def _serve_diffusers(model_dir: Path, dry_run: bool, flags: tuple[str, ...]) -> None:
    # Imported here so that `digest` and `fetch` never load the image server's modules.
    from sovereign_worker.diffusion.launch import LaunchError, launch_from_flags  # noqa: PLC0415
    from sovereign_worker.diffusion.model_dir import ModelDirError, check_model_dir  # noqa: PLC0415

    try:
        launch = launch_from_flags(flags)
        check_model_dir(model_dir)
    except (LaunchError, ModelDirError) as error:
        _fail(str(error))
    if dry_run:
        click.echo(json.dumps(launch.model_dump()))
        return
    # Before torch, diffusers or huggingface_hub are imported: they read it once, at import.
    environment = engine_environment(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    from sovereign_worker.diffusion.server import run  # noqa: PLC0415

    sys.exit(run(launch, model_dir))


def _register_group_commands() -> None:
    # The multi-node group commands live in their own package; registered here so one
    # console script serves every role a pod can have.
    from sovereign_worker.multinode.commands import register_commands  # noqa: PLC0415

    register_commands(main)


_register_group_commands()
