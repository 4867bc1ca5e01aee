"""A ModelPolicy's status: is it in force, what it selects, which deployments break it now.

`kubectl get mpol` shows SelectedNamespaces and NonCompliant at a glance, and
`kubectl describe mpol` names the deployments that break the policy and why, so a
compliance officer sees a tightened policy's reach before anyone's rollout is held.

Pure: the standing comes from the operator's indexes (policy_hook.IndexedPolicies), and
the status is written only when it differs from what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sovereign_operator.api.common import Condition
from sovereign_operator.api.model_policy import ModelPolicyStatus

ACCEPTED: Final = "Accepted"
DEPLOYMENTS_COMPLIANT: Final = "DeploymentsCompliant"
MAX_NAMED: Final = 5
"""Deployments a condition message names before it says 'and N more'."""
MAX_MESSAGE: Final = 2000


@dataclass(frozen=True)
class PolicyStanding:
    """What one readable policy reaches now, from the indexes."""

    selected_namespaces: int
    violations: tuple[str, ...]
    """'namespace/name: what breaks the policy', one per non-compliant deployment, sorted."""


def _accepted(problem: str | None, standing: PolicyStanding) -> tuple[str, str, str]:
    if problem is not None:
        return (
            "False",
            "InvalidSpec",
            f"{problem}; until it is fixed every ModelDeployment is refused (fail closed)",
        )
    count = standing.selected_namespaces
    return "True", "InForce", f"enforced in {count} namespace{'' if count == 1 else 's'}"


def _compliant(problem: str | None, standing: PolicyStanding) -> tuple[str, str, str]:
    if problem is not None:
        return "Unknown", "InvalidSpec", "the policy cannot be read, so nothing is evaluated"
    if not standing.violations:
        return "True", "AllCompliant", "every ModelDeployment it selects complies"
    named = list(standing.violations[:MAX_NAMED])
    more = len(standing.violations) - len(named)
    if more:
        named.append(f"and {more} more")
    message = f"{len(standing.violations)} break it: " + " | ".join(named)
    return "False", "Violations", message[:MAX_MESSAGE]


def policy_status(
    *,
    generation: int | None,
    problem: str | None,
    standing: PolicyStanding,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The status to store. `problem` is why the spec does not parse (None: it does).

    A condition's lastTransitionTime moves only when its status changes."""
    before = _previous_conditions(previous)
    stamp = now.astimezone(UTC).replace(microsecond=0)
    conditions = []
    for kind, (state, reason, message) in (
        (ACCEPTED, _accepted(problem, standing)),
        (DEPLOYMENTS_COMPLIANT, _compliant(problem, standing)),
    ):
        old = before.get(kind)
        unchanged = old is not None and old.status == state
        conditions.append(
            Condition(
                type=kind,
                status=state,
                reason=reason,
                message=message,
                last_transition_time=old.last_transition_time if unchanged and old else stamp,
                observed_generation=generation,
            )
        )
    result = ModelPolicyStatus(
        observed_generation=generation,
        conditions=conditions,
        selected_namespaces=0 if problem else standing.selected_namespaces,
        non_compliant_deployments=0 if problem else len(standing.violations),
    )
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def status_changed(new: Mapping[str, Any], stored: Mapping[str, Any] | None) -> bool:
    """Whether writing `new` over `stored` changes anything (a no-op round writes nothing)."""
    return dict(new) != dict(stored or {})


def _previous_conditions(previous: Mapping[str, Any] | None) -> dict[str, Condition]:
    raw: Sequence[Any] = (previous or {}).get("conditions") or ()
    found: dict[str, Condition] = {}
    for item in raw:
        try:
            condition = Condition.model_validate(item)
        except ValueError:
            continue  # not ours to read: rewritten below
        found[condition.type] = condition
    return found
