"""Small builders for click options, shared by the commands so each option reads as one line.

`tuning(...)` is the common numeric knob with a range and a shown default;
`option_group(...)` adds a family of options (--audit-*, --webhook-*) and hands the command
one settings object built from them instead of a dozen keyword arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Any], Any]


def tuning(
    flag: str, kind: click.IntRange | click.FloatRange, default: float, help_text: str
) -> Decorator:
    """A numeric option whose range is `kind` and whose default `--help` shows."""
    return click.option(flag, type=kind, default=default, show_default=True, help=help_text)


def apply_options(command: F, options: Sequence[Decorator]) -> F:
    """Decorate `command` with `options`, so that `--help` lists them in the given order."""
    decorated: Any = command
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def option_group(
    prefix: str, keyword: str, options: Sequence[Decorator], build: Callable[..., Any]
) -> Callable[[F], F]:
    """Options named `prefix*` reach the command as one argument `keyword` = build(**them)."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in list(kwargs) if name.startswith(prefix)}
            return command(*args, **{keyword: build(**values)}, **kwargs)

        return apply_options(wrapper, options)  # type: ignore[return-value]

    return decorate


def kubeconfig_option(help_text: str) -> Decorator:
    """--kubeconfig (or $KUBECONFIG); None means in-cluster, the pod's service account."""
    return click.option(
        "--kubeconfig",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="KUBECONFIG",
        default=None,
        help=help_text,
    )
