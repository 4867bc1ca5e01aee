"""Let /healthz see kopf's watch streams: every event and bookmark each stream receives.

kopf drops BOOKMARK events before they reach any handler, and an idle cluster sends no
other events, so handler activity cannot tell a quiet operator from a stuck one. This
wraps kopf's per-request watch generator (`kopf._cogs.clients.watching.watch_objs`, looked
up by name on every reconnect) to record activity, then yields exactly what kopf would
have. It is internal API: kopf is pinned to one version in pyproject.toml, and a unit test
fails when the function it wraps moves or changes its signature.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from kopf._cogs.clients import watching

from sovereign_operator.health import WatchActivity

EXPECTED_PARAMETERS: Final = ("settings", "resource", "namespace", "since", "operator_pause_waiter")
_MARK: Final = "__sovereign_watch_probe__"


def stream_name(resource: Any, namespace: str | None) -> str:
    """`plural.group@namespace` (`*` for cluster-wide)."""
    group = f".{resource.group}" if resource.group else ""
    return f"{resource.plural}{group}@{namespace or '*'}"


def install(activity: WatchActivity) -> None:
    """Record every watch request's start and each event it yields into `activity`."""
    current: Callable[..., AsyncIterator[Any]] = watching.watch_objs
    original = getattr(current, _MARK, current)
    parameters = tuple(inspect.signature(original).parameters)
    if parameters != EXPECTED_PARAMETERS:
        raise RuntimeError(
            f"kopf's watch_objs takes {parameters}, not {EXPECTED_PARAMETERS}: "
            "the watch probe needs updating for this kopf version"
        )

    async def watch_objs(**kwargs: Any) -> AsyncIterator[Any]:
        name = stream_name(kwargs["resource"], kwargs["namespace"])
        activity.touch(name)
        async for raw_input in original(**kwargs):
            activity.touch(name)
            yield raw_input

    setattr(watch_objs, _MARK, original)
    watching.watch_objs = watch_objs
