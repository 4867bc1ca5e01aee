"""A small checker for the Pod Security Standards `restricted` profile (which includes baseline).

Written from the Kubernetes Pod Security Standards page and the pod-security-admission
checks (k8s.io/pod-security-admission/policy) as of Kubernetes 1.33/1.34: every control of
both profiles that a pod spec can break. It works on plain dicts (a Pod, or a template's
`{metadata, spec}`), reports every violation, and is deliberately strict where the
admission plugin has version-dependent leniency (e.g. user-namespace pods).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
RESTRICTED_ADDABLE_CAPABILITIES: Final = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    }
)  # fmt: skip
SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUME_SOURCES: Final = frozenset(
    {
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
        "persistentVolumeClaim", "projected", "secret",
    }
)  # fmt: skip
SECCOMP_RESTRICTED: Final = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION: Final = "container.apparmor.security.beta.kubernetes.io/"


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every way `pod` ({metadata, spec}) breaks the restricted profile; empty when it meets it."""
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    spec: Mapping[str, Any] = pod["spec"]
    return [*_baseline(metadata, spec), *_restricted(spec)]


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


def _baseline(metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> Iterator[str]:
    pod_sc = _sc(spec)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"host namespaces: spec.{field} must be false"
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        yield "hostProcess: pod windowsOptions.hostProcess must be false"
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            yield f"hostPath volumes: volume {volume['name']!r} uses hostPath"
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"sysctls: {sysctl.get('name')!r} is not a safe sysctl"
    yield from _selinux("pod", pod_sc)
    yield from _apparmor("pod", pod_sc)
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield "seccomp: pod seccompProfile must not be Unconfined"
    for key, value in (metadata.get("annotations") or {}).items():
        if (
            key.startswith(APPARMOR_ANNOTATION)
            and value != "runtime/default"
            and not str(value).startswith("localhost/")
        ):
            yield f"appArmor: annotation {key} = {value!r} is not allowed"
    for container in _containers(spec):
        yield from _baseline_container(container)


def _baseline_container(container: Mapping[str, Any]) -> Iterator[str]:
    name, sc = container.get("name"), _sc(container)
    if sc.get("privileged"):
        yield f"privileged: container {name!r} is privileged"
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        yield f"hostProcess: container {name!r} sets windowsOptions.hostProcess"
    added = set((sc.get("capabilities") or {}).get("add") or [])
    if added - BASELINE_CAPABILITIES:
        yield f"capabilities: container {name!r} adds {sorted(added - BASELINE_CAPABILITIES)}"
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            yield f"hostPorts: container {name!r} uses hostPort {port['hostPort']}"
    if sc.get("procMount", "Default") != "Default":
        yield f"procMount: container {name!r} must use the Default /proc mount"
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield f"seccomp: container {name!r} seccompProfile must not be Unconfined"
    yield from _selinux(f"container {name!r}", sc)
    yield from _apparmor(f"container {name!r}", sc)
    yield from _handler_hosts(container)


def _handler_hosts(container: Mapping[str, Any]) -> Iterator[str]:
    """Probes and hooks must not name a host: the kubelet would call any address for the pod."""
    name = container.get("name")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        handler = container.get(probe) or {}
        for kind in ("httpGet", "tcpSocket"):
            if (handler.get(kind) or {}).get("host"):
                yield f"probe host: container {name!r} {probe}.{kind}.host must be unset"
    for hook in ("postStart", "preStop"):
        handler = (container.get("lifecycle") or {}).get(hook) or {}
        for kind in ("httpGet", "tcpSocket"):
            if (handler.get(kind) or {}).get("host"):
                yield f"lifecycle host: container {name!r} {hook}.{kind}.host must be unset"


def _selinux(who: str, sc: Mapping[str, Any]) -> Iterator[str]:
    options = sc.get("seLinuxOptions") or {}
    if options.get("type", "") not in SELINUX_TYPES:
        yield f"seLinuxOptions: {who} sets type {options['type']!r}"
    if options.get("user") or options.get("role"):
        yield f"seLinuxOptions: {who} must not set user or role"


def _apparmor(who: str, sc: Mapping[str, Any]) -> Iterator[str]:
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        yield f"appArmor: {who} appArmorProfile must not be Unconfined"


def _restricted(spec: Mapping[str, Any]) -> Iterator[str]:
    pod_sc = _sc(spec)
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUME_SOURCES:
            yield f"volume types: volume {volume['name']!r} uses {sorted(sources)}"
    pod_non_root = pod_sc.get("runAsNonRoot")
    if pod_non_root is False:
        yield "runAsNonRoot: pod must not set runAsNonRoot=false"
    if pod_sc.get("runAsUser") == 0:
        yield "runAsUser: pod must not run as user 0"
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_RESTRICTED:
        yield f"seccomp: pod seccompProfile {pod_seccomp!r} must be RuntimeDefault or Localhost"
    for container in _containers(spec):
        yield from _restricted_container(container, pod_non_root is True, pod_seccomp is not None)


def _restricted_container(
    container: Mapping[str, Any], pod_non_root: bool, pod_seccomp: bool
) -> Iterator[str]:
    name, sc = container.get("name"), _sc(container)
    # Must be explicitly false: the default lets setuid binaries gain privileges.
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"allowPrivilegeEscalation: container {name!r} must set it to false"
    non_root = sc.get("runAsNonRoot")
    if non_root is False or (non_root is None and not pod_non_root):
        yield f"runAsNonRoot: container {name!r} (or the pod) must set runAsNonRoot=true"
    if sc.get("runAsUser") == 0:
        yield f"runAsUser: container {name!r} must not run as user 0"
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp is None and not pod_seccomp:
        yield f"seccomp: container {name!r} (or the pod) must set a seccompProfile"
    elif seccomp is not None and seccomp not in SECCOMP_RESTRICTED:
        yield f"seccomp: container {name!r} seccompProfile {seccomp!r} is not allowed"
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        yield f"capabilities: container {name!r} must drop ALL"
    added = set(capabilities.get("add") or []) - RESTRICTED_ADDABLE_CAPABILITIES
    if added:
        yield f"capabilities: container {name!r} may add only NET_BIND_SERVICE, adds {sorted(added)}"
