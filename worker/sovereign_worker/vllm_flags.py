"""vLLM 0.32's command-line flags, vendored as package data.

The table is generated from `vllm serve --help=all` by `scripts/gen_vllm_flags.py` and
shipped inside the package, so validating `engine.extraArgs` needs neither vLLM nor the
captured help text at run time (the operator image does not contain vLLM).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

TABLE_RESOURCE: Final = "vllm_0_32_flags.json"


@dataclass(frozen=True, slots=True)
class VllmFlag:
    """One long option of `vllm serve`, named without its leading dashes."""

    name: str
    group: str
    takes_value: bool
    value_optional: bool
    """nargs='?': the value may be left out (`--hf-token` alone means "use the stored token")."""
    multiple: bool
    """nargs='+': one occurrence takes every following value (`--served-model-name A B`)."""
    repeatable: bool
    """action='append': the flag may appear more than once."""
    choices: tuple[str, ...] | None
    negatable: bool
    """A `--no-NAME` spelling turns a boolean off."""
    long_aliases: tuple[str, ...]
    short_aliases: tuple[str, ...]
    json: bool
    """Takes a JSON object, or its keys one by one as `--NAME.key value`."""

    @property
    def option(self) -> str:
        return f"--{self.name}"

    @property
    def negation(self) -> str | None:
        return f"--no-{self.name}" if self.negatable else None


@dataclass(frozen=True, slots=True)
class FlagMatch:
    """How a written long option resolved to a flag of the table."""

    flag: VllmFlag
    spelled: str
    negated: bool


@dataclass(frozen=True, slots=True)
class FlagTable:
    vllm_version: str
    flags: Mapping[str, VllmFlag]
    _by_spelling: Mapping[str, FlagMatch]
    _by_short: Mapping[str, VllmFlag]

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FlagTable:
        flags = {entry["name"]: _flag_from_json(entry) for entry in document["flags"]}
        by_spelling: dict[str, FlagMatch] = {}
        by_short: dict[str, VllmFlag] = {}
        for flag in flags.values():
            by_spelling[flag.option] = FlagMatch(flag, flag.option, negated=False)
            for alias in flag.long_aliases:
                by_spelling[f"--{alias}"] = FlagMatch(flag, f"--{alias}", negated=False)
            if flag.negation is not None:
                by_spelling[flag.negation] = FlagMatch(flag, flag.negation, negated=True)
            for short in flag.short_aliases:
                by_short[short] = flag
        return cls(str(document["vllm_version"]), flags, by_spelling, by_short)

    def lookup(self, option: str) -> FlagMatch | None:
        """Resolve an exact long spelling (`--name`, `--no-name` or a long alias)."""
        return self._by_spelling.get(option)

    def short_alias_owner(self, option: str) -> VllmFlag | None:
        """The flag a short spelling such as `-tp` stands for, if any."""
        return self._by_short.get(option)

    def spellings(self) -> list[str]:
        """Every accepted long spelling, sorted; used to suggest the closest name."""
        return sorted(self._by_spelling)


def _flag_from_json(entry: Mapping[str, Any]) -> VllmFlag:
    choices = entry["choices"]
    return VllmFlag(
        name=str(entry["name"]),
        group=str(entry["group"]),
        takes_value=bool(entry["takes_value"]),
        value_optional=bool(entry["value_optional"]),
        multiple=bool(entry["multiple"]),
        repeatable=bool(entry["repeatable"]),
        choices=None if choices is None else tuple(str(choice) for choice in choices),
        negatable=bool(entry["negatable"]),
        long_aliases=tuple(str(alias) for alias in entry["long_aliases"]),
        short_aliases=tuple(str(alias) for alias in entry["short_aliases"]),
        json=bool(entry["json"]),
    )


@cache
def flag_table() -> FlagTable:
    """The vendored vLLM 0.32 table, read once from package data."""
    text = (resources.files("sovereign_worker") / "data" / TABLE_RESOURCE).read_text("utf-8")
    return FlagTable.from_json(json.loads(text))


def get_flag(name: str) -> VllmFlag:
    """A flag by canonical name (`max-model-len` or `--max-model-len`); KeyError if unknown."""
    return flag_table().flags[name.removeprefix("--")]
