"""A ModelPolicy's status: what it selects, which deployments break it, written only on change."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.handlers.policies import refresh_policy_statuses
from sovereign_operator.policy_hook import POLICY_STATUS_INDEX, UnreadablePolicy
from sovereign_operator.policy_status import (
    ACCEPTED,
    DEPLOYMENTS_COMPLIANT,
    MAX_NAMED,
    PolicyStanding,
    policy_status,
    status_changed,
)
from tests.unit.operator.test_admission import FakeIndex, approved_only, hooked, raw_spec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_the_standing_counts_selected_namespaces_and_names_each_breaking_deployment() -> None:
    deployments = {
        ("clinical", "ok"): raw_spec(),
        ("clinical", "rogue"): raw_spec("s3://elsewhere/llama"),
        ("lab", "toy"): raw_spec("s3://elsewhere/llama"),  # lab is not selected
    }
    standing = hooked(approved_only(), deployments=deployments).standings()["approved-only"]
    assert standing.selected_namespaces == 1
    (violation,) = standing.violations
    assert violation.startswith("clinical/rogue: ")
    assert "spec.model.source" in violation


def test_a_violation_is_attributed_only_to_the_policy_it_breaks() -> None:
    strict = approved_only("strict")
    capped = approved_only("capped", limits={"maxGpusPerDeployment": 2})
    hook = hooked(strict, capped, deployments={("clinical", "big"): raw_spec(gpus=4)})
    standings = hook.standings()
    assert standings["strict"].violations == ()
    (violation,) = standings["capped"].violations
    assert violation.startswith("clinical/big: ")


def test_a_readable_policy_is_in_force_and_lists_what_breaks_it() -> None:
    standing = PolicyStanding(2, tuple(f"ns/md{i}: source" for i in range(MAX_NAMED + 2)))
    status = policy_status(generation=3, problem=None, standing=standing, previous=None, now=NOW)
    assert (status["selectedNamespaces"], status["nonCompliantDeployments"]) == (2, 7)
    assert status["observedGeneration"] == 3
    found = conditions(status)
    assert (found[ACCEPTED]["status"], found[ACCEPTED]["reason"]) == ("True", "InForce")
    assert "2 namespaces" in found[ACCEPTED]["message"]
    compliant = found[DEPLOYMENTS_COMPLIANT]
    assert (compliant["status"], compliant["reason"]) == ("False", "Violations")
    assert "ns/md0: source" in compliant["message"]
    assert compliant["message"].endswith("and 2 more")


def test_an_unreadable_policy_says_it_refuses_everything() -> None:
    broken = UnreadablePolicy("broken", "spec.limits: bad")
    status = policy_status(
        generation=1, problem=broken.problem, standing=PolicyStanding(0, ()), previous=None, now=NOW
    )
    found = conditions(status)
    assert (found[ACCEPTED]["status"], found[ACCEPTED]["reason"]) == ("False", "InvalidSpec")
    assert "every ModelDeployment is refused" in found[ACCEPTED]["message"]
    assert found[DEPLOYMENTS_COMPLIANT]["status"] == "Unknown"


def test_an_unchanged_round_writes_nothing_and_transitions_keep_their_time() -> None:
    clean = PolicyStanding(1, ())
    first = policy_status(generation=1, problem=None, standing=clean, previous=None, now=NOW)
    later = NOW + timedelta(minutes=5)
    again = policy_status(generation=1, problem=None, standing=clean, previous=first, now=later)
    assert not status_changed(again, first)

    broken = PolicyStanding(1, ("ns/md: source",))
    moved = policy_status(generation=1, problem=None, standing=broken, previous=first, now=later)
    assert status_changed(moved, first)
    found, before = conditions(moved), conditions(first)
    assert found[ACCEPTED]["lastTransitionTime"] == before[ACCEPTED]["lastTransitionTime"]
    assert found[DEPLOYMENTS_COMPLIANT]["lastTransitionTime"] == "2026-11-29T09:05:00Z"


def test_a_round_writes_each_changed_status_once_and_then_nothing() -> None:
    hook = hooked(
        approved_only(),
        UnreadablePolicy("broken", "spec.limits: bad"),
        deployments={("clinical", "rogue"): raw_spec("s3://elsewhere/llama")},
    )
    written: dict[str, dict[str, Any]] = {}

    def stored(statuses: Mapping[str, Any]) -> None:
        indexes = dict(hook._indexes)
        names = ("approved-only", "broken")
        indexes[POLICY_STATUS_INDEX] = FakeIndex({n: [(1, statuses.get(n, {}))] for n in names})
        hook.bind(indexes)

    stored({})

    async def write(name: str, status: Mapping[str, Any]) -> None:
        written[name] = dict(status)

    assert asyncio.run(refresh_policy_statuses(hook, write, NOW)) == 2
    assert written["approved-only"]["nonCompliantDeployments"] == 1
    assert conditions(written["broken"])[ACCEPTED]["status"] == "False"
    # The watch brings the written statuses back into the index: the next round is quiet.
    stored(written)
    assert asyncio.run(refresh_policy_statuses(hook, write, NOW + timedelta(seconds=10))) == 0
