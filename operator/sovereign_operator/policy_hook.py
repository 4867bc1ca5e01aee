"""The PolicyHook reconcile calls, and the admission webhook's view, from the operator's indexes.

kopf keeps three indexes fed by watch streams (`handlers/policies.py`,
`handlers/model_deployment.py`): every ModelPolicy, every namespace's labels (what a
policy's namespaceSelector matches), and every ModelDeployment's spec (what a
per-namespace GPU ceiling adds up). Nothing here lists or reads the API server: a
reconcile pass and an admission request cost no request. kopf hands its live indexes to
the start-up handler, which `bind`s them here; they fill before any handler runs.

This module imports no kopf: an index is read as a mapping of key -> iterable of values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from sovereign_operator.admission import PolicyView, evaluate_view
from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.model_policy import ModelPolicy
from sovereign_operator.hooks import DeploymentKey, PolicyVerdict
from sovereign_operator.policy import NamedPolicy, allow_trust_remote_code, applicable
from sovereign_operator.policy_status import PolicyStanding

POLICY_INDEX: Final = "model_policies"
POLICY_STATUS_INDEX: Final = "model_policy_statuses"
"""name -> (metadata.generation, the stored status): what a status write compares with."""
NAMESPACE_INDEX: Final = "namespace_labels"
DEPLOYMENT_INDEX: Final = "model_deployments"
"""Owned by handlers/model_deployment.py: (namespace, name) -> snapshot with `spec`."""


@dataclass(frozen=True)
class UnreadablePolicy:
    """A ModelPolicy whose spec does not parse (the CRD schema makes this rare)."""

    name: str
    problem: str

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"


PolicyEntry = NamedPolicy | UnreadablePolicy


def read_policy(body: Mapping[str, Any]) -> PolicyEntry:
    """A ModelPolicy as the index keeps it: parsed once per change, not per evaluation."""
    name = str((body.get("metadata") or {}).get("name", ""))
    try:
        policy = ModelPolicy.model_validate(
            {"metadata": {"name": name}, "spec": dict(body.get("spec") or {})}
        )
    except ValidationError as error:
        return UnreadablePolicy(name, str(error).replace("\n", " "))
    return NamedPolicy.from_resource(policy)


def _values(index: Any) -> Iterable[Any]:
    if index is None:
        return ()
    return (value for key in list(index.keys()) for value in index.get(key) or ())


def _first(index: Any, key: object) -> Any:
    store = index.get(key) if index is not None else None
    for value in store or ():
        return value
    return None


class IndexedPolicies:
    """Policy evaluation over the live indexes: `PolicyHook` for reconcile, `view` for
    admission, and which deployments a policy or namespace change concerns."""

    def __init__(self, default_image: str) -> None:
        self.default_image = default_image
        self._indexes: Mapping[str, Any] = {}

    def bind(self, indexes: Mapping[str, Any]) -> None:
        self._indexes = indexes

    def entries(self) -> list[PolicyEntry]:
        return list(_values(self._indexes.get(POLICY_INDEX)))

    def policies(self) -> tuple[NamedPolicy, ...]:
        return tuple(e for e in self.entries() if isinstance(e, NamedPolicy))

    def stored_status(self, name: str) -> tuple[int | None, Mapping[str, Any]]:
        """A policy's generation and the status stored on it now."""
        stored = _first(self._indexes.get(POLICY_STATUS_INDEX), name)
        return stored if stored is not None else (None, {})

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        labels = _first(self._indexes.get(NAMESPACE_INDEX), namespace)
        return dict(labels) if labels is not None else None

    def deployments(self, namespace: str | None = None) -> list[tuple[str, str]]:
        """(namespace, name) of every ModelDeployment, or of one namespace's."""
        index = self._indexes.get(DEPLOYMENT_INDEX)
        keys = list(index.keys()) if index is not None else []
        return [k for k in keys if namespace is None or k[0] == namespace]

    def selected_deployments(self, policy: NamedPolicy) -> list[tuple[str, str]]:
        """The deployments in namespaces `policy` selects."""
        chosen = []
        for namespace, name in self.deployments():
            labels = self.namespace_labels(namespace)
            if labels is not None and applicable([policy], labels):
                chosen.append((namespace, name))
        return chosen

    def standings(self) -> dict[str, PolicyStanding]:
        """Per readable policy: the namespaces it selects now, and the deployments there
        that break it. Each deployment is judged once, with every policy in force (as
        reconcile judges it), and each verdict attributed to the policies it names."""
        policies = self.policies()
        index = self._indexes.get(NAMESPACE_INDEX)
        selected: dict[str, set[str]] = {p.name: set() for p in policies}
        for namespace in list(index.keys()) if index is not None else []:
            for policy in applicable(policies, self.namespace_labels(namespace) or {}):
                selected[policy.name].add(namespace)
        covered = set().union(*selected.values())
        deployments = self._indexes.get(DEPLOYMENT_INDEX)
        violations: dict[str, list[str]] = {p.name: [] for p in policies}
        for namespace, name in self.deployments():
            if namespace not in covered:
                continue
            snapshot = _first(deployments, (namespace, name)) or {}
            try:
                spec = ModelDeploymentSpec.model_validate(dict(snapshot.get("spec") or {}))
            except ValidationError:
                continue  # reported on the deployment itself (InvalidSpec)
            evaluation = evaluate_view(
                spec, self.view(namespace, name), default_image=self.default_image
            )
            for policy_name, broken in evaluation.by_policy().items():
                if broken and policy_name in violations:
                    reasons = "; ".join(str(verdict) for verdict in broken)
                    violations[policy_name].append(f"{namespace}/{name}: {reasons}")
        return {
            policy_name: PolicyStanding(len(namespaces), tuple(sorted(violations[policy_name])))
            for policy_name, namespaces in selected.items()
        }

    def view(self, namespace: str, name: str) -> PolicyView:
        entries = self.entries()
        named = tuple(e for e in entries if isinstance(e, NamedPolicy))
        # The namespace's other specs cost a walk over every deployment: only a
        # per-namespace GPU ceiling reads them.
        others = []
        if any(p.spec.limits.max_gpus_per_namespace is not None for p in named):
            index = self._indexes.get(DEPLOYMENT_INDEX)
            for key in self.deployments(namespace):
                if key[1] != name:
                    snapshot = _first(index, key) or {}
                    others.append(dict(snapshot.get("spec") or {}))
        return PolicyView(
            policies=named,
            unreadable=tuple(str(e) for e in entries if isinstance(e, UnreadablePolicy)),
            namespace_labels=self.namespace_labels(namespace),
            other_specs=tuple(others),
        )

    async def __call__(self, key: DeploymentKey, spec: ModelDeploymentSpec) -> PolicyVerdict:
        return self.verdict(key, spec)

    def verdict(self, key: DeploymentKey, spec: ModelDeploymentSpec) -> PolicyVerdict:
        """PolicyCompliant for reconcile; `enforce` stops new rollouts of a refused spec
        while what already runs is left alone."""
        view = self.view(key.namespace, key.name)
        if view.unreadable:
            return PolicyVerdict(
                "False",
                "PolicyUnreadable",
                "ModelPolicy cannot be read, so no spec can be approved: "
                + "; ".join(view.unreadable),
                enforce=True,
            )
        if not view.policies:
            return PolicyVerdict("True", "NoPolicy", "no ModelPolicy exists")
        labels = view.namespace_labels
        if labels is None:
            return PolicyVerdict(
                "Unknown", "NamespaceUnknown", f"namespace {key.namespace} is not indexed yet"
            )
        evaluation = evaluate_view(spec, view, default_image=self.default_image)
        trust = allow_trust_remote_code(view.policies, labels)
        if not evaluation.applied:
            return PolicyVerdict(
                "True",
                "NoPolicy",
                f"no ModelPolicy selects namespace {key.namespace}",
                allow_trust_remote_code=trust,
            )
        if evaluation.compliant:
            return PolicyVerdict(
                "True", "Compliant", evaluation.message(), allow_trust_remote_code=trust
            )
        return PolicyVerdict(
            "False",
            "PolicyViolation",
            evaluation.message() + "; the running engine is kept, new rollouts are held",
            allow_trust_remote_code=trust,
            enforce=True,
        )
