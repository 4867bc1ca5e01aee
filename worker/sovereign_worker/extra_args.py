"""Validation of `engine.extraArgs` against vLLM 0.32's flag table and the flag policy.

Tokens are argv items: they are never joined into a command line or given to a shell.
The scanner reads them the way vLLM's argparse would, so a value is checked as the value
of the flag vLLM would give it to.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sovereign_worker.engine_flag_policy import DENIED, JSON_KEY_ALLOWLIST, VALUE_ALLOWLIST, Denial
from sovereign_worker.vllm_flags import FlagMatch, FlagTable, VllmFlag, flag_table

MAX_EXTRA_ARGS: Final = 64
MAX_TOKEN_LENGTH: Final = 256

_FLAG_NAME: Final = re.compile(r"--[a-z0-9][a-z0-9-]*")
_JSON_KEY_PATH: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\+?")
# argparse reads a token like these as a value, not as an option.
_NEGATIVE_NUMBER: Final = re.compile(r"-\d+|-\d*\.\d+")
UNPRINTABLE: Final = ("\x00", "\n", "\r")
# Shell syntax. No value we accept needs it; its presence means the author expected a shell
# to expand or run something, which never happens: vLLM would receive the text literally.
_SUBSTITUTIONS: Final = ("$(", "${", "`")
_SHELL_OPERATORS: Final = frozenset(";&|<>")
_MAX_CHOICES_SHOWN: Final = 12


@dataclass(frozen=True, slots=True)
class ArgProblem:
    """Why one token of `engine.extraArgs` is refused; `message` says what to do instead."""

    index: int
    token: str
    message: str

    def __str__(self) -> str:
        return f"extraArgs[{self.index}] {self.token!r}: {self.message}"


def validate_extra_args(
    tokens: Sequence[str], *, allow_trust_remote_code: bool
) -> list[ArgProblem]:
    """Every problem with `tokens` as extra vLLM flags; an empty list means they are safe."""
    problems: list[ArgProblem] = []
    if len(tokens) > MAX_EXTRA_ARGS:
        problems.append(
            ArgProblem(
                MAX_EXTRA_ARGS,
                tokens[MAX_EXTRA_ARGS],
                f"at most {MAX_EXTRA_ARGS} tokens are accepted, got {len(tokens)}; "
                "drop flags that only restate vLLM's defaults",
            )
        )
    scanner = _Scanner(list(tokens[:MAX_EXTRA_ARGS]), flag_table(), allow_trust_remote_code)
    return problems + scanner.run()


class _Scanner:
    """Walks the tokens the way argparse would, recording each problem once."""

    def __init__(self, tokens: list[str], table: FlagTable, allow_trust_remote_code: bool) -> None:
        self.tokens = tokens
        self.table = table
        self.allow_trust_remote_code = allow_trust_remote_code
        self.problems: list[ArgProblem] = []
        self.first_use: dict[str, int] = {}
        self.position = 0

    def run(self) -> list[ArgProblem]:
        while self.position < len(self.tokens):
            index = self.position
            self.position += 1
            self._scan(index, self.tokens[index])
        return self.problems

    def _refuse(self, index: int, message: str) -> None:
        self.problems.append(ArgProblem(index, self.tokens[index], message))

    def _next_is_value(self) -> bool:
        return self.position < len(self.tokens) and not _looks_like_flag(self.tokens[self.position])

    def _take_value(self) -> tuple[int, str]:
        index = self.position
        self.position += 1
        return index, self.tokens[index]

    def _skip_values(self) -> None:
        # Values after a refused flag belong to it; reporting them again would only add noise.
        while self._next_is_value():
            self.position += 1

    def _scan(self, index: int, item: str) -> None:
        if problem := _token_problem(item):
            self._refuse(index, problem)
            if _looks_like_flag(item):
                self._skip_values()
            return
        if not _looks_like_flag(item):
            self._refuse(
                index,
                f"{item!r} is not a flag and follows no flag that takes a value; vLLM would "
                "read it as a second model; give each value right after its flag "
                "(--max-num-seqs 8) or as --flag=value",
            )
        elif item == "--":
            self._refuse(index, "'--' would end vLLM's options; remove it")
        elif not item.startswith("--"):
            self._short_option(index, item)
            self._skip_values()
        else:
            self._long_option(index, item)

    def _short_option(self, index: int, token: str) -> None:
        base = re.split(r"[=.]", token, maxsplit=1)[0]
        owner = self.table.short_alias_owner(base)
        if owner is None:
            self._refuse(
                index,
                f"short option {base} is refused: vLLM flags are given by their exact long "
                "name (--name or --name=value)",
            )
            return
        denial = DENIED.get(owner.name)
        if denial is not None and not self._allowed_anyway(owner, negated=False):
            self._refuse(index, _denial_message(f"{base} (short for {owner.option})", denial))
            return
        self._refuse(index, f"short option {base} is refused: write its long name {owner.option}")

    def _long_option(self, index: int, token: str) -> None:
        name, has_value, inline = token.partition("=")
        base, dotted, key = name.partition(".")
        if not _FLAG_NAME.fullmatch(base) or (dotted and not _JSON_KEY_PATH.fullmatch(key)):
            self._refuse(
                index,
                f"{name!r} is not a flag name: a flag is '--' and lower-case letters, digits and "
                "dashes; quotes, spaces and shell syntax are never interpreted",
            )
            self._skip_values()
            return
        match = self.table.lookup(base)
        if match is None:
            self._refuse(index, self._unknown_message(base))
            self._skip_values()
            return
        inline_value = inline if has_value else None
        denial = DENIED.get(match.flag.name)
        if denial is not None and not self._allowed_anyway(match.flag, negated=match.negated):
            self._refuse(index, _denial_message(_describe(match), denial))
            self._skip_values()
        elif dotted:
            self._json_key(index, match, key, inline_value)
        else:
            self._flag(index, match, inline_value)

    def _allowed_anyway(self, flag: VllmFlag, *, negated: bool) -> bool:
        denial = DENIED[flag.name]
        if negated and denial.negation_allowed:
            return True
        return flag.name == "trust-remote-code" and self.allow_trust_remote_code

    def _unknown_message(self, base: str) -> str:
        message = f"{base} is not a flag of vLLM {self.table.vllm_version}"
        close = difflib.get_close_matches(base, self.table.spellings(), n=1, cutoff=0.6)
        if not close:
            return f"{message}; see `vllm serve --help=all` for that version"
        suggestion = self.table.lookup(close[0])
        denial = DENIED.get(suggestion.flag.name) if suggestion else None
        if (
            suggestion is not None
            and denial is not None
            and not self._allowed_anyway(suggestion.flag, negated=suggestion.negated)
        ):
            return f"{message}; the closest, {close[0]}, is refused too: {_reason(denial)}"
        return f"{message}; did you mean {close[0]}?"

    def _first_use(self, index: int, key: str, spelled: str, *, repeatable: bool) -> bool:
        if key in self.first_use and not repeatable:
            first = self.first_use[key]
            self._refuse(
                index,
                f"{spelled} is given again (first at extraArgs[{first}]); give it once, "
                "with all its values",
            )
            return False
        self.first_use.setdefault(key, index)
        return True

    def _flag(self, index: int, match: FlagMatch, inline_value: str | None) -> None:
        flag = match.flag
        if not self._first_use(index, flag.name, match.spelled, repeatable=flag.repeatable):
            self._skip_values()
            return
        if match.negated or not flag.takes_value:
            self._no_value(index, match, inline_value)
            return
        values: list[tuple[int, str]] = []
        if inline_value is not None:
            values.append((index, inline_value))
        elif flag.multiple:
            while self._next_is_value():
                values.append(self._take_value())
        elif self._next_is_value():
            values.append(self._take_value())
        if not values and not flag.value_optional:
            self._refuse(
                index,
                f"{match.spelled} needs a value: {match.spelled} VALUE or {match.spelled}=VALUE",
            )
        for value_index, value in values:
            if problem := _value_problem(flag, match.spelled, value):
                self._refuse(value_index, problem)

    def _no_value(self, index: int, match: FlagMatch, inline_value: str | None) -> None:
        flag = match.flag
        switch = (
            f"write {flag.option} to switch it on or {flag.negation} to switch it off"
            if flag.negation
            else f"write {flag.option} alone"
        )
        if inline_value is not None:
            self._refuse(index, f"{match.spelled} takes no value; {switch}")
        elif self._next_is_value():
            value_index, value = self._take_value()
            self._refuse(
                value_index, f"{value!r} follows {match.spelled}, which takes no value; {switch}"
            )

    def _json_key(self, index: int, match: FlagMatch, key: str, inline_value: str | None) -> None:
        flag = match.flag
        if inline_value is not None:
            value: tuple[int, str] | None = (index, inline_value)
        else:
            value = self._take_value() if self._next_is_value() else None
        spelled = f"{match.spelled}.{key}"
        top_key = key.split(".", 1)[0].removesuffix("+")
        allowed = JSON_KEY_ALLOWLIST.get(flag.name)
        if not flag.json or match.negated:
            self._refuse(index, f"{spelled}: {match.spelled} takes no JSON keys")
        elif allowed is None:
            self._refuse(
                index,
                f"keys of {flag.option} cannot be given one by one; pass the whole object as "
                f"one value: {flag.option} '{{\"{top_key}\": ...}}'",
            )
        elif top_key not in allowed:
            self._refuse(
                index,
                f"key {top_key!r} of {flag.option} is not allowed; allowed keys: "
                + ", ".join(sorted(allowed)),
            )
        elif value is None:
            self._refuse(index, f"{spelled} needs a value: {spelled} VALUE or {spelled}=VALUE")
        elif self._first_use(index, f"{flag.name}.{key}", spelled, repeatable=False) and (
            problem := _text_problem(spelled, value[1], structured=True)
        ):
            self._refuse(value[0], problem)


def _looks_like_flag(item: str) -> bool:
    return item.startswith("-") and item != "-" and not _NEGATIVE_NUMBER.fullmatch(item)


def _token_problem(token: str) -> str | None:
    if len(token) > MAX_TOKEN_LENGTH:
        return f"is longer than {MAX_TOKEN_LENGTH} characters ({len(token)}); shorten it"
    if any(character in token for character in UNPRINTABLE):
        return "contains a line break or NUL byte; each token must be one line of text"
    return None


def _describe(match: FlagMatch) -> str:
    if match.spelled in (match.flag.option, match.flag.negation):
        return match.spelled
    return f"{match.spelled} (an alias of {match.flag.option})"


def _reason(denial: Denial) -> str:
    return denial.reason + (f"; {denial.instead}" if denial.instead else "")


def _denial_message(subject: str, denial: Denial) -> str:
    return f"{subject} is refused: {_reason(denial)}"


def _text_problem(spelled: str, value: str, *, structured: bool) -> str | None:
    """Shell syntax in a value; `structured` values (JSON) may contain operators as data."""
    if problem := _token_problem(value):
        return f"the value of {spelled} {problem}"
    for substitution in _SUBSTITUTIONS:
        if substitution in value:
            return (
                f"the value of {spelled} contains {substitution!r}: values reach vLLM as one "
                "literal argument and are never run by a shell, so nothing would be substituted"
            )
    operators = sorted(set(value) & _SHELL_OPERATORS)
    if operators and not structured:
        shown = " ".join(map(repr, operators))
        return (
            f"the value of {spelled} contains {shown}: values reach vLLM as one literal "
            "argument and are never run by a shell; give only the value itself"
        )
    return None


def _value_problem(flag: VllmFlag, spelled: str, value: str) -> str | None:
    structured = flag.json or value.lstrip().startswith(("{", "["))
    if problem := _text_problem(spelled, value, structured=structured):
        return problem
    if flag.choices is not None and value not in flag.choices:
        shown = ", ".join(flag.choices[:_MAX_CHOICES_SHOWN])
        more = ", ..." if len(flag.choices) > _MAX_CHOICES_SHOWN else ""
        return f"{value!r} is not a choice of {spelled}; use one of {shown}{more}"
    if (rule := VALUE_ALLOWLIST.get(flag.name)) and value not in rule.allowed:
        allowed = ", ".join(sorted(rule.allowed))
        return f"{spelled} {value} is refused: {rule.reason}; use one of {allowed}"
    if (keys := JSON_KEY_ALLOWLIST.get(flag.name)) is not None:
        return _json_object_problem(spelled, value, keys)
    return None


def _json_object_problem(spelled: str, value: str, allowed: frozenset[str]) -> str | None:
    keys_text = ", ".join(sorted(allowed))
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return f"{spelled} takes a JSON object here, with keys among {keys_text}"
    if extra := sorted(set(document) - allowed):
        return f"{spelled} may only set {keys_text}; refused keys: {', '.join(extra)}"
    return None
