"""`s3://BUCKET/PREFIX` sources on an S3-compatible store inside the organisation.

The endpoint, region and credentials come from the standard AWS variables the renderer sets
on the fetch container (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY` from a Secret), or from a mounted Secret folder holding files of those
names. boto3 does the rest: ranged multipart downloads run in parallel, and every request is
retried with backoff, each part separately, so a 140 GB model survives a flaky link.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sovereign_worker.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, path_problem
from sovereign_worker.sources import ModelSource, Scheme
from sovereign_worker.verify import VerificationError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB: Final = 1 << 20
CREDENTIAL_FILES: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_MISSING_KEY_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Error(Exception):
    """The store could not be read (endpoint, credentials, bucket); the message says which."""


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to talk to the store; defaults suit large model shards on an in-house network."""

    part_bytes: int = 16 * MIB
    """Objects at least this large are fetched in ranged parts of this size, in parallel."""
    concurrency: int = 16
    """Parallel requests across all files and parts."""
    attempts: int = 10
    """Tries per request (and per streamed part) before the fetch fails."""
    credentials_dir: Path | None = None
    """A mounted Secret with files named like CREDENTIAL_FILES; else the AWS environment."""


def s3_client(settings: S3Settings) -> S3Client:
    """A client for the store named by the environment (AWS_ENDPOINT_URL and friends)."""
    config = Config(
        retries={"max_attempts": settings.attempts, "mode": "standard"},
        # In-house stores rarely have wildcard DNS for virtual-hosted bucket names.
        s3={"addressing_style": "path"},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=settings.concurrency + 4,
        # Integrity is the sha256 manifest's job; optional CRC checksums are left off because
        # several S3-compatible stores reject or mangle them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    keys = _credentials(settings.credentials_dir)
    session = boto3.session.Session(
        aws_access_key_id=keys.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=keys.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=keys.get("AWS_SESSION_TOKEN"),
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return session.client("s3", region_name=region, config=config)


def _credentials(folder: Path | None) -> dict[str, str]:
    if folder is None:
        return {}
    values = {}
    for name in CREDENTIAL_FILES:
        path = folder / name
        if path.is_file():
            values[name] = path.read_text("utf-8").strip()
    if "AWS_ACCESS_KEY_ID" not in values or "AWS_SECRET_ACCESS_KEY" not in values:
        raise S3Error(
            f"{folder} must hold files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(mount the credentials Secret there)"
        )
    return values


class S3Folder:
    """The objects under `s3://BUCKET/PREFIX/`, read as a model folder."""

    def __init__(self, source: ModelSource, client: S3Client, settings: S3Settings) -> None:
        if source.scheme is not Scheme.S3:
            raise ValueError(f"not an s3:// source: {source.uri}")
        self.bucket = source.authority
        self.prefix = f"{source.path}/" if source.path else ""
        self.client = client
        self.settings = settings
        self._sizes: dict[str, int] | None = None

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def read_manifest(self) -> bytes | None:
        key = self.prefix + MANIFEST_NAME
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                return None
            raise self._error(error, f"reading {key}") from error
        except BotoCoreError as error:
            raise self._error(error, f"reading {key}") from error
        if response["ContentLength"] > MAX_MANIFEST_BYTES:
            raise VerificationError(
                f"s3://{self.bucket}/{key} is larger than {MAX_MANIFEST_BYTES} bytes"
            )
        with response["Body"] as body:
            return body.read()

    def list_files(self) -> dict[str, int]:
        if self._sizes is None:
            self._sizes = self._list()
        return dict(self._sizes)

    def _list(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    relative = item["Key"].removeprefix(self.prefix)
                    # Keys ending in '/' are folder markers some tools create; they hold no bytes.
                    if relative == MANIFEST_NAME or not relative or relative.endswith("/"):
                        continue
                    if problem := path_problem(relative):
                        raise VerificationError(
                            f"object s3://{self.bucket}/{item['Key']} cannot be a model file: "
                            f"its path {problem}"
                        )
                    sizes[relative] = item["Size"]
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, f"listing {self.description}") from error
        if not sizes:
            raise S3Error(f"{self.description} holds no objects; check the bucket and prefix")
        return sizes

    def download(self, paths: Sequence[str], into: Path) -> None:
        transfer = TransferConfig(
            multipart_threshold=self.settings.part_bytes,
            multipart_chunksize=self.settings.part_bytes,
            max_concurrency=self.settings.concurrency,
            num_download_attempts=self.settings.attempts,
        )
        for path in paths:
            (into / path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with create_transfer_manager(self.client, transfer) as manager:
                futures = [
                    manager.download(self.bucket, self.prefix + path, str(into / path))
                    for path in paths
                ]
                for future in futures:
                    future.result()
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, f"downloading from {self.description}") from error

    def _error(self, error: Exception, doing: str) -> S3Error:
        endpoint = self.client.meta.endpoint_url
        hint = ""
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            hint = {
                "NoSuchBucket": f"; bucket {self.bucket!r} does not exist at {endpoint}",
                "AccessDenied": "; the credentials may not read this bucket",
                "InvalidAccessKeyId": "; check AWS_ACCESS_KEY_ID",
                "SignatureDoesNotMatch": "; check AWS_SECRET_ACCESS_KEY",
            }.get(code, "")
        return S3Error(f"{doing} at {endpoint} failed: {error}{hint}")
