"""The Pod Security Standards checker: our pods pass it, and it fails each kind of bad pod."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.render.cases import children, make_plan
from tests.unit.render.pss import restricted_violations

pytestmark = pytest.mark.unit

Pod = dict[str, Any]


def rendered_pod() -> Pod:
    template: Pod = children(make_plan())["Deployment"]["spec"]["template"]
    return copy.deepcopy(template)


def engine(pod: Pod) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def fetch(pod: Pod) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["initContainers"][0]
    return container


def test_the_rendered_engine_pod_meets_restricted() -> None:
    assert restricted_violations(rendered_pod()) == []


def _set(path: str, value: object) -> Callable[[Pod], None]:
    """A mutation that sets a dotted path under the pod spec (creating dicts on the way)."""

    def mutate(pod: Pod) -> None:
        target = pod["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
        target[leaf] = value

    return mutate


def _drop(getter: Callable[[Pod], dict[str, Any]], key: str) -> Callable[[Pod], None]:
    def mutate(pod: Pod) -> None:
        del getter(pod)["securityContext"][key]

    return mutate


def _both(*mutations: Callable[[Pod], None]) -> Callable[[Pod], None]:
    def mutate(pod: Pod) -> None:
        for m in mutations:
            m(pod)

    return mutate


def _add_volume(volume: dict[str, Any]) -> Callable[[Pod], None]:
    return lambda pod: pod["spec"]["volumes"].append(volume)


BAD_PODS = [
    ("host namespaces", _set("hostNetwork", True)),
    ("host namespaces", _set("hostPID", True)),
    ("host namespaces", _set("hostIPC", True)),
    ("privileged", _set("containers.0.securityContext.privileged", True)),
    ("hostProcess", _set("securityContext.windowsOptions", {"hostProcess": True})),
    (
        "capabilities",
        _set("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    ),
    (
        "capabilities",
        _set("initContainers.0.securityContext.capabilities", {"add": ["NET_BIND_SERVICE"]}),
    ),
    (
        "capabilities",
        _set("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["CHOWN"]}),
    ),
    ("hostPath", _add_volume({"name": "host", "hostPath": {"path": "/var/lib"}})),
    ("volume types", _add_volume({"name": "nfs", "nfs": {"server": "nfs", "path": "/"}})),
    ("volume types", _add_volume({"name": "repo", "gitRepo": {"repository": "https://x"}})),
    ("hostPorts", _set("containers.0.ports", [{"containerPort": 8000, "hostPort": 8000}])),
    ("sysctls", _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}])),
    ("seLinuxOptions", _set("securityContext.seLinuxOptions", {"type": "spc_t"})),
    ("seLinuxOptions", _set("containers.0.securityContext.seLinuxOptions", {"user": "root"})),
    ("appArmor", _set("containers.0.securityContext.appArmorProfile", {"type": "Unconfined"})),
    ("procMount", _set("containers.0.securityContext.procMount", "Unmasked")),
    ("seccomp", _set("containers.0.securityContext.seccompProfile", {"type": "Unconfined"})),
    ("seccomp", _set("securityContext.seccompProfile", {"type": "Unconfined"})),
    (
        "seccomp",
        _both(
            _drop(lambda p: p["spec"], "seccompProfile"),
            _drop(engine, "seccompProfile"),
        ),
    ),
    ("allowPrivilegeEscalation", _drop(fetch, "allowPrivilegeEscalation")),
    (
        "allowPrivilegeEscalation",
        _set("containers.0.securityContext.allowPrivilegeEscalation", True),
    ),
    ("runAsNonRoot", _set("securityContext.runAsNonRoot", False)),
    ("runAsNonRoot", _set("initContainers.0.securityContext.runAsNonRoot", False)),
    (
        "runAsNonRoot",
        _both(_drop(lambda p: p["spec"], "runAsNonRoot"), _drop(engine, "runAsNonRoot")),
    ),
    ("runAsUser", _set("securityContext.runAsUser", 0)),
    ("runAsUser", _set("containers.0.securityContext.runAsUser", 0)),
    ("probe host", _set("containers.0.livenessProbe.httpGet.host", "169.254.169.254")),
    (
        "lifecycle host",
        _set("containers.0.lifecycle", {"preStop": {"httpGet": {"port": 80, "host": "x"}}}),
    ),
]


@pytest.mark.parametrize(
    ("control", "mutate"),
    BAD_PODS,
    ids=[f"{i}-{control}" for i, (control, _) in enumerate(BAD_PODS)],
)
def test_each_control_catches_a_bad_pod(control: str, mutate: Callable[[Pod], None]) -> None:
    pod = rendered_pod()
    mutate(pod)
    violations = restricted_violations(pod)
    assert violations, f"{control} not caught"
    assert any(v.startswith(control) for v in violations), violations


def test_apparmor_annotation() -> None:
    pod = rendered_pod()
    pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/engine"] = (
        "unconfined"
    )
    assert any(v.startswith("appArmor") for v in restricted_violations(pod))
    pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/engine"] = (
        "runtime/default"
    )
    assert restricted_violations(pod) == []


def test_container_level_settings_may_replace_pod_level_ones() -> None:
    pod = rendered_pod()
    for key in ("runAsNonRoot", "seccompProfile"):
        del pod["spec"]["securityContext"][key]
    # Each container still sets both, which the profile accepts.
    assert restricted_violations(pod) == []
