"""Model source URIs: what parses, what is refused, and why."""

from __future__ import annotations

import pytest

from sovereign_worker.sources import Scheme, SourceError, parse_model_source

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "scheme", "authority", "path"),
    [
        (
            "pvc://model-store/meta-llama/Llama-3.1-8B",
            Scheme.PVC,
            "model-store",
            "meta-llama/Llama-3.1-8B",
        ),
        ("pvc://model-store", Scheme.PVC, "model-store", ""),
        ("s3://approved-models/llama/405b/", Scheme.S3, "approved-models", "llama/405b"),
        ("file:///srv/models/tiny", Scheme.FILE, "", "/srv/models/tiny"),
        (
            "hf://meta-llama/Llama-3.1-8B@0e9e39f249a16976918f6564b8830bc894c89659",
            Scheme.HF,
            "",
            "meta-llama/Llama-3.1-8B",
        ),
        (
            "oci://registry.internal:5000/models/llama@sha256:" + "a" * 64,
            Scheme.OCI,
            "registry.internal:5000",
            "models/llama",
        ),
    ],
)
def test_valid_sources_parse(uri: str, scheme: Scheme, authority: str, path: str) -> None:
    source = parse_model_source(uri)
    assert (source.scheme, source.authority, source.path) == (scheme, authority, path)


def test_canonical_uri_round_trips() -> None:
    for uri in [
        "pvc://store/a/b",
        "s3://bucket/x",
        "file:///srv/m",
        "hf://org/name@abc123",
        "oci://reg.io/repo@sha256:" + "b" * 64,
    ]:
        assert parse_model_source(uri).uri == uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pvc://store/../etc/passwd", "path traversal"),
        ("pvc://store/a/../../b", "path traversal"),
        ("pvc://store/a/./b", "path traversal"),
        ("file:///srv/../etc", "path traversal"),
        ("file://relative/path", "absolute path"),
        ("file:///", "filesystem root"),
        ("pvc://Bad_Claim/x", "DNS-1123"),
        ("s3://B/x", "bucket name"),
        ("hf://meta-llama/Llama-3.1-8B", "pin a revision"),
        ("hf://meta-llama/Llama-3.1-8B@", "pin a revision"),
        ("hf://just-a-name@main", "ORG/NAME"),
        ("oci://registry/models/llama:latest", "pinned by digest"),
        ("http://example.com/model", "unsupported scheme"),
        ("/srv/models", "no scheme"),
        ("pvc://store/a b", "whitespace"),
        ("pvc://store/a;rm", "characters outside"),
        ("pvc://store/$(id)", "characters outside"),
        ("s3://bucket/key?versionId=1", "query"),
        ("pvc://store/" + "a" * 600, "at most 512"),
    ],
)
def test_bad_sources_are_refused_with_a_reason(uri: str, expected: str) -> None:
    with pytest.raises(SourceError, match=expected):
        parse_model_source(uri)
