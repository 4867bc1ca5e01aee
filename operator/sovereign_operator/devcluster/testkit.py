"""Helpers the integration and e2e fixtures share: test namespaces, cleanup, failure dumps.

They live in the package rather than in a conftest so every test tier (and a person
debugging by hand) uses the same code against the local cluster or kind.
"""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from .state import StateDir

OUR_GROUP = "sovereign.dev"
# Cluster-scoped objects a test creates for its namespace carry this label, so cleanup
# can find them without touching what other tests (or the operator's install) created.
TEST_NAMESPACE_LABEL = "sovereign.dev/test-namespace"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}


def create_namespace(api: k8s.ApiClient, name: str, timeout: float = 30.0) -> None:
    """A namespace at PodSecurity `restricted`, returned once its default service account
    exists (pods created before that are refused by ServiceAccount admission)."""
    core = k8s.CoreV1Api(api)
    body: Any = {"metadata": {"name": name, "labels": {**RESTRICTED, "sovereign.dev/test": "true"}}}
    core.create_namespace(body=body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status != 404:
                raise
            time.sleep(0.1)
        else:
            return
    raise TimeoutError(f"namespace {name}: no default service account after {timeout:.0f} s")


def our_custom_resources(api: k8s.ApiClient) -> list[tuple[str, str, str, bool]]:
    """(group, storage version, plural, namespaced) for every CRD of our API group family."""
    found = []
    for crd in k8s.ApiextensionsV1Api(api).list_custom_resource_definition().items:
        spec = crd.spec
        if spec.group != OUR_GROUP and not spec.group.endswith(f".{OUR_GROUP}"):
            continue
        version = next(v.name for v in spec.versions if v.storage)
        found.append((spec.group, version, spec.names.plural, spec.scope == "Namespaced"))
    return found


@dataclass(frozen=True)
class _ObjectRef:
    group: str
    version: str
    plural: str
    namespace: str | None  # None: cluster-scoped
    name: str

    def delete(self, custom: k8s.CustomObjectsApi) -> None:
        with _missing_is_fine():
            if self.namespace is None:
                custom.delete_cluster_custom_object(
                    self.group, self.version, self.plural, self.name
                )
            else:
                custom.delete_namespaced_custom_object(
                    self.group, self.version, self.namespace, self.plural, self.name
                )

    def release(self, custom: k8s.CustomObjectsApi) -> None:
        """Drop the finalizers, so deletion completes without the operator."""
        body: Any = {"metadata": {"finalizers": None}}
        with _missing_is_fine():
            if self.namespace is None:
                custom.patch_cluster_custom_object(
                    self.group, self.version, self.plural, self.name, body
                )
            else:
                custom.patch_namespaced_custom_object(
                    self.group, self.version, self.namespace, self.plural, self.name, body
                )

    def exists(self, custom: k8s.CustomObjectsApi) -> bool:
        try:
            if self.namespace is None:
                custom.get_cluster_custom_object(self.group, self.version, self.plural, self.name)
            else:
                custom.get_namespaced_custom_object(
                    self.group, self.version, self.namespace, self.plural, self.name
                )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


@contextmanager
def _missing_is_fine() -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        if error.status != 404:
            raise


def delete_custom_resources(api: k8s.ApiClient, namespace: str, timeout: float = 30.0) -> list[str]:
    """Delete our custom resources in `namespace` (and cluster-scoped ones labelled for it)
    before the namespace itself, while the operator can still run its finalizers.

    Returns warnings: objects whose finalizers did not finish in time are released by
    removing the finalizers, so a stopped operator cannot wedge namespace deletion.
    """
    custom = k8s.CustomObjectsApi(api)
    pending: list[_ObjectRef] = []
    for group, version, plural, namespaced in our_custom_resources(api):
        items: Any = {"items": []}
        # A CRD deleted a moment ago (a test's own fixture) answers 404: nothing to clean.
        with _missing_is_fine():
            if namespaced:
                items = custom.list_namespaced_custom_object(group, version, namespace, plural)
            else:
                selector = f"{TEST_NAMESPACE_LABEL}={namespace}"
                items = custom.list_cluster_custom_object(
                    group, version, plural, label_selector=selector
                )
        for item in items["items"]:
            ref = _ObjectRef(
                group, version, plural, namespace if namespaced else None, item["metadata"]["name"]
            )
            ref.delete(custom)
            pending.append(ref)

    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [ref for ref in pending if ref.exists(custom)]
        time.sleep(0.2)
    for ref in pending:
        ref.release(custom)
    return [
        f"{r.plural}.{r.group}/{r.name}: finalizers still pending, removed them" for r in pending
    ]


def dump_namespace(
    kubectl: Path, kubeconfig: Path, namespace: str, api: k8s.ApiClient, state: StateDir | None
) -> str:
    """Events, pods, our custom resources and component log tails, as one readable text."""

    def run(*args: str) -> str:
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return (result.stdout + result.stderr).rstrip()

    sections = [
        ("events", run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", "-o", "wide")),
        ("pods", run("get", "pods", "-n", namespace, "-o", "wide")),
        ("pods (yaml)", run("get", "pods", "-n", namespace, "-o", "yaml")),
    ]
    for group, _, plural, namespaced in our_custom_resources(api):
        scope = ["-n", namespace] if namespaced else ["-l", f"{TEST_NAMESPACE_LABEL}={namespace}"]
        sections.append(
            (f"{plural}.{group}", run("get", f"{plural}.{group}", *scope, "-o", "yaml"))
        )
    if state is not None and state.logs.is_dir():
        logs = [log for log in sorted(state.logs.glob("*.log")) if log.name != "audit.log"]
        sections.extend((f"log {log.name} (tail)", _tail(log, 40)) for log in logs)
    return "\n".join(f"===== {title} =====\n{body or '(none)'}" for title, body in sections)


def _tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
