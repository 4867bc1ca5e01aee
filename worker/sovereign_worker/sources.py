"""Model source URIs: parsing and the safety rules every scheme must meet.

Shared by the operator (admission, planning) and the worker (fetch), so both sides agree
on exactly which sources exist and what they mean. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Scheme(StrEnum):
    """The source schemes the API accepts."""

    PVC = "pvc"
    S3 = "s3"
    HF = "hf"
    OCI = "oci"
    FILE = "file"


SUPPORTED_SCHEMES: Final = tuple(s.value for s in Scheme)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_HF_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HF_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_OCI_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")
_OCI_REPO = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._+@=,-]+$")
MAX_SOURCE_LENGTH: Final = 512


class SourceError(ValueError):
    """A source URI that is malformed or unsafe; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSource:
    """A parsed source URI.

    `authority` is the claim (pvc), bucket (s3), registry (oci) or "" (file, hf);
    `path` is relative for pvc/s3/oci/hf and absolute for file.
    """

    scheme: Scheme
    authority: str
    path: str
    revision: str | None = None
    digest: str | None = None

    @property
    def uri(self) -> str:
        """The canonical URI form of this source."""
        match self.scheme:
            case Scheme.FILE:
                return f"file://{self.path}"
            case Scheme.HF:
                return f"hf://{self.path}@{self.revision}"
            case Scheme.OCI:
                return f"oci://{self.authority}/{self.path}@{self.digest}"
            case _:
                suffix = f"/{self.path}" if self.path else ""
                return f"{self.scheme.value}://{self.authority}{suffix}"


def parse_model_source(uri: str) -> ModelSource:
    """Parse and check a source URI, or raise SourceError naming the problem and the fix."""
    if len(uri) > MAX_SOURCE_LENGTH:
        raise SourceError(f"source is {len(uri)} characters; at most {MAX_SOURCE_LENGTH} allowed")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in uri):
        raise SourceError("source must not contain whitespace or control characters")
    scheme_text, sep, rest = uri.partition("://")
    if not sep:
        raise SourceError(
            f"source {uri!r} has no scheme; use one of "
            + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        )
    try:
        scheme = Scheme(scheme_text)
    except ValueError:
        raise SourceError(
            f"unsupported scheme {scheme_text!r}; use one of "
            + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        ) from None
    if "?" in rest or "#" in rest:
        raise SourceError("source must not contain a query (?) or fragment (#)")
    parsers = {
        Scheme.PVC: _parse_pvc,
        Scheme.S3: _parse_s3,
        Scheme.HF: _parse_hf,
        Scheme.OCI: _parse_oci,
        Scheme.FILE: _parse_file,
    }
    return parsers[scheme](rest)


def _check_relative_path(path: str, *, what: str) -> str:
    """Refuse traversal, absolute paths and odd segments; return the normalised path."""
    if path in {"", "/"}:
        return ""
    segments = path.strip("/").split("/")
    for segment in segments:
        if segment in {"", ".", ".."}:
            raise SourceError(
                f"{what} {path!r} must not contain empty, '.' or '..' segments "
                "(path traversal outside the volume is refused)"
            )
        if not _PATH_SEGMENT.match(segment):
            raise SourceError(
                f"{what} segment {segment!r} has characters outside [A-Za-z0-9._+@=,-]"
            )
    return "/".join(segments)


def _parse_pvc(rest: str) -> ModelSource:
    claim, _, path = rest.partition("/")
    if not _DNS_LABEL.match(claim):
        raise SourceError(
            f"pvc claim name {claim!r} is not a DNS-1123 label; "
            "write pvc://CLAIM/path/inside/volume"
        )
    return ModelSource(Scheme.PVC, claim, _check_relative_path(path, what="pvc path"))


def _parse_s3(rest: str) -> ModelSource:
    bucket, _, key = rest.partition("/")
    if not _S3_BUCKET.match(bucket) or ".." in bucket:
        raise SourceError(
            f"s3 bucket {bucket!r} is not a valid bucket name (3-63 lowercase letters, "
            "digits, dots, hyphens); write s3://BUCKET/prefix"
        )
    return ModelSource(Scheme.S3, bucket, _check_relative_path(key, what="s3 key prefix"))


def _parse_hf(rest: str) -> ModelSource:
    repo, at, revision = rest.partition("@")
    if not at or not revision:
        raise SourceError(
            "hf:// sources must pin a revision: write hf://ORG/NAME@REVISION "
            "(a commit sha is best; branches can move under you)"
        )
    parts = repo.split("/")
    if len(parts) != 2 or not all(_HF_REPO_PART.match(p) for p in parts):
        raise SourceError(f"hf repository {repo!r} must be ORG/NAME")
    if not _HF_REVISION.match(revision):
        raise SourceError(f"hf revision {revision!r} has characters outside [A-Za-z0-9._-]")
    if ".." in repo:
        raise SourceError(f"hf repository {repo!r} must not contain '..'")
    return ModelSource(Scheme.HF, "", repo, revision=revision)


def _parse_oci(rest: str) -> ModelSource:
    reference, at, digest = rest.partition("@")
    if not at or not _DIGEST.match(digest):
        raise SourceError(
            "oci:// sources must be pinned by digest: write "
            "oci://REGISTRY/REPOSITORY@sha256:<64 hex digits> (tags can move)"
        )
    registry, _, repository = reference.partition("/")
    if not _OCI_REGISTRY.match(registry) or not repository:
        raise SourceError(f"oci reference {reference!r} must be REGISTRY/REPOSITORY")
    if ":" in repository:
        raise SourceError("oci:// sources take a digest, not a tag: drop ':TAG'")
    if not _OCI_REPO.match(repository):
        raise SourceError(f"oci repository {repository!r} is not a valid repository name")
    return ModelSource(Scheme.OCI, registry, repository, digest=digest)


def _parse_file(rest: str) -> ModelSource:
    if not rest.startswith("/"):
        raise SourceError("file:// sources need an absolute path: write file:///abs/path")
    normalised = _check_relative_path(rest, what="file path")
    if not normalised:
        raise SourceError("file:// source must name a folder, not the filesystem root")
    return ModelSource(Scheme.FILE, "", "/" + normalised)
