"""vLLM's Prometheus text exposition -> one replica's `EngineLoad`.

Pure. Parsing is prometheus-client's (`text_string_to_metric_families`), but only of the
three families the policy reads: a vLLM 0.32 `/metrics` page is ~50 KB of about a hundred
families (histograms mostly), and parsing all of it costs ~20 ms of CPU per pod, 20 s per
tick at 1,000 pods. The text format keeps each family's lines together, so the families
we need are cut out with `str.find` first (~0.2 ms per pod in all).

Labels: vLLM labels every gauge with `model_name` and `engine` (one engine per
data-parallel rank). Requests are summed across engines; KV-cache usage is a fraction of
each engine's own cache, so it is averaged. `vllm:gpu_cache_usage_perc` is the name older
vLLM releases used for KV-cache usage and is read when the new name is absent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from sovereign_operator.autoscaling.evidence import EngineLoad

RUNNING: Final = "vllm:num_requests_running"
WAITING: Final = "vllm:num_requests_waiting"
KV_CACHE_USAGE: Final = "vllm:kv_cache_usage_perc"
LEGACY_KV_CACHE_USAGE: Final = "vllm:gpu_cache_usage_perc"
FAMILIES: Final = (RUNNING, WAITING, KV_CACHE_USAGE, LEGACY_KV_CACHE_USAGE)


class ExpositionError(ValueError):
    """The text is not a vLLM exposition the autoscaler can read."""


def parse_engine_load(text: str, *, model_name: str | None = None) -> EngineLoad:
    """The load gauges in one `/metrics` page.

    With `model_name`, only samples labelled with that served model count. Raises
    ExpositionError when a gauge is missing, unparsable, negative or not finite, so a
    broken page is never read as "no load".
    """
    try:
        selected = _select_families(text, (RUNNING, WAITING, KV_CACHE_USAGE))
        if KV_CACHE_USAGE not in selected:
            selected += _select_families(text, (LEGACY_KV_CACHE_USAGE,))
        families = list(text_string_to_metric_families(selected))
    except ValueError as error:  # the parser raises ValueError for malformed lines
        raise ExpositionError(f"unparsable exposition: {error}") from None
    values: dict[str, list[float]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name not in FAMILIES:
                continue
            if model_name is not None and sample.labels.get("model_name") != model_name:
                continue
            if not math.isfinite(sample.value) or sample.value < 0:
                raise ExpositionError(f"{sample.name} is {sample.value}")
            values.setdefault(sample.name, []).append(sample.value)

    kv = values.get(KV_CACHE_USAGE) or values.get(LEGACY_KV_CACHE_USAGE)
    if kv is None or RUNNING not in values or WAITING not in values:
        missing = [name for name in (RUNNING, WAITING) if name not in values]
        missing += [KV_CACHE_USAGE] if kv is None else []
        whose = f" for model {model_name!r}" if model_name is not None else ""
        raise ExpositionError(f"no {', '.join(missing)}{whose} in the exposition")
    return EngineLoad(
        waiting=sum(values[WAITING]),
        running=sum(values[RUNNING]),
        kv_cache_usage=sum(kv) / len(kv),
    )


def _select_families(text: str, names: Iterable[str]) -> str:
    """The lines of the named families (HELP, TYPE and samples), in the text's own order."""
    picked: list[tuple[int, str]] = []
    for name in names:
        start = _first_line_of(text, name)
        if start < 0:
            continue
        lines: list[str] = []
        position = start
        while position < len(text):
            end = text.find("\n", position)
            end = len(text) if end < 0 else end
            line = text[position:end]
            if _family_of(line) != name:
                break
            lines.append(line)
            position = end + 1
        picked.append((start, "\n".join(lines)))
    picked.sort()
    return "".join(block + "\n" for _, block in picked)


def _first_line_of(text: str, name: str) -> int:
    """Where the first line of family `name` starts, or -1."""
    markers = (f"# HELP {name} ", f"# TYPE {name} ", f"{name}{{", f"{name} ")
    if text.startswith(markers):
        return 0
    for marker in markers:
        index = text.find("\n" + marker)
        if index >= 0:
            start = index + 1
            break
    else:
        return -1
    # The format lets HELP and TYPE come in either order: back up over the family's lines.
    while start > 0:
        previous = text.rfind("\n", 0, start - 1) + 1
        if _family_of(text[previous : start - 1]) != name:
            break
        start = previous
    return start


def _family_of(line: str) -> str | None:
    """The metric family a text-format line belongs to (None for other comments and blanks)."""
    if line.startswith(("# HELP ", "# TYPE ")):
        return line[7:].split(" ", 1)[0]
    if not line or line.startswith("#"):
        return None
    cut = len(line)
    for separator in ("{", " "):
        index = line.find(separator)
        if 0 <= index < cut:
            cut = index
    return line[:cut]
