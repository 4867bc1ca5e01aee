"""Sink health, the AuditSinkHealthy condition, and what to do while a sink fails."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sovereign_operator.api.common import Condition

CONDITION_TYPE: Final = "AuditSinkHealthy"


@dataclass(frozen=True)
class SinkHealth:
    """One sink's delivery state, for the AuditSinkHealthy condition."""

    name: str
    healthy: bool
    pending: int = 0
    """Records accepted but not yet delivered by this sink."""
    last_error: str = ""


class FailurePolicy(StrEnum):
    """What the operator does while a sink is failing (`audit.failurePolicy`)."""

    PAUSE = "pause"
    """Stop making changes until every sink delivers again: no unaudited change, ever."""
    CONTINUE = "continue"
    """Keep reconciling; records are spooled and delivered when the sink recovers."""


@dataclass(frozen=True)
class AuditHealth:
    """Every sink's state and the policy that decides what a failing one means."""

    sinks: tuple[SinkHealth, ...]
    failure_policy: FailurePolicy

    @property
    def healthy(self) -> bool:
        return all(sink.healthy for sink in self.sinks)

    def condition(self, observed_generation: int | None = None) -> Condition:
        """The `AuditSinkHealthy` condition for a resource's status."""
        failing = [sink for sink in self.sinks if not sink.healthy]
        if not failing:
            return Condition(
                type=CONDITION_TYPE,
                status="True",
                reason="AllSinksDelivering",
                message="every audit sink is delivering",
                observed_generation=observed_generation,
            )
        message = "; ".join(
            f"{sink.last_error} ({sink.pending} records waiting)" for sink in failing
        )
        if self.failure_policy is FailurePolicy.PAUSE:
            message += "; changes are paused until it recovers (audit.failurePolicy: pause)"
        return Condition(
            type=CONDITION_TYPE,
            status="False",
            reason="SinkFailing",
            message=message[:2048],
            observed_generation=observed_generation,
        )
