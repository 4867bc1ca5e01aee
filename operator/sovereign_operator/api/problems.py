"""Turning invalid input into a list of problems, each naming the field and the fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with the input: where (a dotted camelCase path) and what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidSpec(ValueError):
    """The input cannot be served as written; `problems` lists every reason."""

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location as `spec.engine.extraArgs[2]`."""
    path = prefix
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
        elif not item.startswith(("function-", "json-or-python", "lax-or-strict")):
            path = f"{path}.{item}" if path else item
    return path or "(root)"


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    # pydantic prefixes custom errors with "Value error, "; the rest is our own sentence.
    message = message.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field; check the spelling against `kubectl explain modeldeployment.spec`"
    if error["type"] == "missing":
        return "required field is missing"
    return message


def problems_from(error: ValidationError, *, prefix: str = "") -> list[FieldProblem]:
    """Every pydantic error as a FieldProblem with a camelCase path."""
    return [FieldProblem(_path(prefix, tuple(e["loc"])), _message(e)) for e in error.errors()]


def parse(model: type[ModelT], data: object, *, prefix: str = "") -> ModelT:
    """Validate `data` as `model`, raising InvalidSpec listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidSpec(problems_from(error, prefix=prefix)) from None
