"""The admission decision for a ModelDeployment create, update or delete (pure).

The validating webhook (`handlers/admission.py`) gathers the request and the cluster state
it needs (the ModelPolicies, the namespace's labels, the namespace's other deployments)
and asks `decide`; the answer says whether to admit and, when refusing, names the policy,
the field and what is allowed (`policy.PolicyEvaluation.message`). The same evaluation runs
again in reconcile (`policy_hook.py`), so a policy tightened after admission is noticed.

Only what needs cluster state lives here: shape and cross-field rules are the CRD's
(OpenAPI schema and CEL), which the API server checks before any validating webhook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sovereign_operator.api.model_deployment import ModelDeploymentSpec
from sovereign_operator.api.problems import InvalidSpec, parse
from sovereign_operator.policy import NamedPolicy, PolicyEvaluation, evaluate, gpu_ceiling

CREATE: Final = "CREATE"
UPDATE: Final = "UPDATE"
DELETE: Final = "DELETE"


@dataclass(frozen=True)
class PolicyView:
    """The cluster state a policy evaluation reads, as the operator's indexes hold it."""

    policies: tuple[NamedPolicy, ...]
    unreadable: tuple[str, ...] = ()
    """Policies that exist but do not parse, as `name: problem`: they refuse everything
    (fail closed), since nobody can say what they would allow."""
    namespace_labels: Mapping[str, str] | None = None
    """None: the namespace is not known (yet); only policies selecting every namespace
    can be told apart from none, so the evaluation is refused as unknown."""
    other_specs: tuple[Mapping[str, Any], ...] = ()
    """The raw specs of the namespace's other ModelDeployments (for maxGpusPerNamespace)."""


@dataclass(frozen=True)
class Decision:
    """Admit or refuse, and why, in the words the caller sees."""

    allowed: bool
    reason: str
    message: str
    policies: tuple[str, ...] = ()
    evaluation: PolicyEvaluation | None = None


def other_namespace_gpus(specs: Iterable[Mapping[str, Any]]) -> int:
    """The most GPUs the namespace's other deployments may hold; an unreadable spec
    counts as none (reconcile refuses to serve it)."""
    total = 0
    for raw in specs:
        try:
            total += gpu_ceiling(parse(ModelDeploymentSpec, raw, prefix="spec"))
        except InvalidSpec:
            continue
    return total


def evaluate_view(
    spec: ModelDeploymentSpec, view: PolicyView, *, default_image: str
) -> PolicyEvaluation:
    """`policy.evaluate` against what the indexes hold; the namespace's other deployments
    are only summed when some policy limits GPUs per namespace (it costs a parse each)."""
    labels = view.namespace_labels or {}
    limits_namespace = any(p.spec.limits.max_gpus_per_namespace is not None for p in view.policies)
    others = other_namespace_gpus(view.other_specs) if limits_namespace else 0
    return evaluate(
        spec,
        view.policies,
        namespace_labels=labels,
        default_image=default_image,
        other_namespace_gpus=others,
    )


def _early(
    operation: str,
    what: str,
    old_spec: Mapping[str, Any] | None,
    new_spec: Mapping[str, Any] | None,
    view: PolicyView,
) -> Decision | None:
    """The answers that need no evaluation of the spec, or None."""
    if operation == DELETE:
        return Decision(True, "Deleted", f"{what} deleted")
    if operation not in (CREATE, UPDATE) or new_spec is None:
        return Decision(True, "NotChecked", f"{operation} of {what} is not checked")
    if operation == UPDATE and old_spec is not None and dict(old_spec) == dict(new_spec):
        return Decision(True, "SpecUnchanged", f"{what}: the spec did not change")
    if not view.policies and not view.unreadable:
        return Decision(True, "NoPolicy", f"no ModelPolicy exists; {what} admitted")
    return _unevaluable(what, view)


def _unevaluable(what: str, view: PolicyView) -> Decision | None:
    """Fail closed when the policies or the namespace cannot be read."""
    if view.unreadable:
        return Decision(
            False,
            "PolicyUnreadable",
            f"{what} refused: ModelPolicy cannot be read, so nothing can be admitted until it "
            f"is fixed: {'; '.join(view.unreadable)}",
        )
    if view.namespace_labels is None:
        return Decision(
            False,
            "NamespaceUnknown",
            f"{what} refused: the operator does not know its namespace yet; retry",
        )
    return None


def decide(
    operation: str,
    *,
    namespace: str,
    name: str,
    old_spec: Mapping[str, Any] | None,
    new_spec: Mapping[str, Any] | None,
    view: PolicyView,
    default_image: str,
) -> Decision:
    """Whether to admit `operation` on ModelDeployment `namespace/name`.

    - DELETE is always admitted (and recorded): no policy rule forbids removing a model.
    - UPDATE that leaves the spec as it was is admitted: labels, annotations and finalizers
      of a deployment that a later-tightened policy refuses must stay editable, and it
      can still be deleted; reconcile already reports it PolicyCompliant=False.
    - CREATE and spec-changing UPDATE are evaluated against every policy selecting the
      namespace; any broken rule refuses.
    """
    what = f"ModelDeployment {namespace}/{name}"
    early = _early(operation, what, old_spec, new_spec, view)
    if early is not None:
        return early
    try:
        spec = parse(ModelDeploymentSpec, new_spec, prefix="spec")
    except InvalidSpec as invalid:
        problems = "; ".join(str(p) for p in invalid.problems)
        return Decision(False, "InvalidSpec", f"{what} is invalid: {problems}")
    evaluation = evaluate_view(spec, view, default_image=default_image)
    if not evaluation.applied:
        return Decision(True, "NoPolicy", f"no ModelPolicy selects namespace {namespace}")
    if evaluation.compliant:
        return Decision(True, "Compliant", evaluation.message(), evaluation.applied, evaluation)
    return Decision(
        False,
        "PolicyViolation",
        f"{what} {evaluation.message()}",
        evaluation.applied,
        evaluation,
    )
