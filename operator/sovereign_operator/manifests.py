"""Reading and writing YAML manifests the way users and GitOps tools expect."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block style, long lines kept whole, and no YAML anchors for repeated objects."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 - signature fixed by PyYAML
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_documents(documents: Iterable[dict[str, Any]]) -> str:
    """Objects as a multi-document YAML stream."""
    return "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1_000_000)
        for doc in documents
    )


def load_documents(text: str) -> Iterator[Any]:
    """Every non-empty document of a YAML stream."""
    for document in yaml.safe_load_all(text):
        if document is not None:
            yield document


def load_file(path: Path) -> list[Any]:
    """Every non-empty document of a YAML file."""
    return list(load_documents(path.read_text(encoding="utf-8")))
