"""The engine's own ServiceAccount: an identity with no API access and no mounted token."""

from __future__ import annotations

from sovereign_operator.planning import ServingPlan
from sovereign_operator.render.meta import Manifest, Owner, engine_name, labels, object_meta


def render_service_account(plan: ServingPlan, owner: Owner) -> Manifest:
    """A dedicated account, so engine pods never borrow the namespace's `default` account.

    vLLM never talks to the Kubernetes API; the token is not mounted at all, so a
    compromised engine has no credential to use against the cluster.
    """
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(engine_name(plan.name), plan.namespace, owner, labels(plan.name)),
        "automountServiceAccountToken": False,
    }
