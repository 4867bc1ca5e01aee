"""Fixtures for tests against a real control plane.

One cluster per test session: the local control plane started in a temporary state folder
(about ten seconds once the binaries are cached), or an existing cluster when
SOVEREIGN_KUBECONFIG points at its kubeconfig (`sovereign cluster up` + `eval "$(sovereign
cluster env)"` to iterate quickly, or kind). Each test gets its own namespace at PodSecurity
`restricted`; on failure the namespace's events, pods, custom resources and the component
logs are printed with the test's report.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s

from sovereign_operator.devcluster import cluster as local
from sovereign_operator.devcluster import kube, testkit
from sovereign_operator.devcluster.binaries import BinariesError, ensure_binaries
from sovereign_operator.devcluster.state import CLUSTER_FILE, ClusterInfo, StateDir
from tests.integration.helm import Helm

KUBECONFIG_ENV = "SOVEREIGN_KUBECONFIG"
HERE = Path(__file__).parent


@dataclass(frozen=True)
class IntegrationCluster:
    kubeconfig: Path
    # The local control plane's state folder; None for a cluster we did not start (kind).
    state: StateDir | None
    kubectl: Path
    helm: Path
    # True when kubectl and helm are the version-pinned builds from e2e/cluster/build.sh.
    pinned_tools: bool

    def identity_kubeconfig(self, identity: str) -> Path:
        """Kubeconfig of a token identity: admin, sovereign-operator, alice, bob, mallory."""
        if self.state is None:
            pytest.skip("token identities exist only on the local control plane")
        path = self.state.identity_kubeconfig(identity)
        if not path.is_file():
            raise LookupError(f"no identity {identity!r} in {self.state.identity_kubeconfigs}")
        return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test in this folder needs the cluster; mark them even if a module forgets to.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    # A cold build of the binaries takes 10-40 minutes: do it here, before any test starts,
    # so pytest-timeout does not count it against the first test, and with output shown.
    wanted = any(HERE in item.path.parents for item in session.items)
    if not wanted or os.environ.get(KUBECONFIG_ENV):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():
            ensure_binaries()
    except BinariesError as error:
        pytest.exit(f"cannot build the local control plane: {error}", returncode=3)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item so fixtures can tell, at teardown, that the
    # test failed and dump what the cluster saw.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(item: pytest.Item) -> bool:
    return any(
        getattr(getattr(item, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IntegrationCluster]:
    existing = os.environ.get(KUBECONFIG_ENV)
    if existing:
        yield _existing_cluster(Path(existing))
        return
    root = tmp_path_factory.mktemp("cluster") / "state"
    info = local.up(
        root,
        progress=lambda message: print(f"[cluster] {message}", file=sys.stderr),
        # A killed test session takes its cluster with it instead of leaving it running.
        die_with_parent=True,
    )
    state = StateDir(Path(info.state_dir))
    bin_dir = Path(info.bin_dir)
    try:
        yield IntegrationCluster(
            state.admin_kubeconfig, state, bin_dir / "kubectl", bin_dir / "helm", True
        )
    finally:
        local.down(root)


def _existing_cluster(kubeconfig: Path) -> IntegrationCluster:
    if (kubeconfig.parent / CLUSTER_FILE).is_file():
        # A cluster from `sovereign cluster up`: use the binaries it was started with.
        state = StateDir(kubeconfig.parent)
        bin_dir = Path(ClusterInfo.load(state).bin_dir)
        return IntegrationCluster(kubeconfig, state, bin_dir / "kubectl", bin_dir / "helm", True)
    on_path = shutil.which("kubectl"), shutil.which("helm")
    if on_path[0] and on_path[1]:
        # kind users bring their own kubectl and helm; don't make them build ours.
        return IntegrationCluster(kubeconfig, None, Path(on_path[0]), Path(on_path[1]), False)
    binaries = ensure_binaries()
    return IntegrationCluster(kubeconfig, None, binaries.kubectl, binaries.helm, True)


@pytest.fixture(scope="session")
def kubectl_path(cluster: IntegrationCluster) -> Path:
    return cluster.kubectl


@pytest.fixture(scope="session")
def helm_path(cluster: IntegrationCluster) -> Path:
    return cluster.helm


@pytest.fixture(scope="session")
def identity_kubeconfig(cluster: IntegrationCluster) -> Callable[[str], Path]:
    """identity_kubeconfig("alice") -> the path of alice's token kubeconfig."""
    return cluster.identity_kubeconfig


@pytest.fixture(scope="session")
def api(cluster: IntegrationCluster) -> Iterator[k8s.ApiClient]:
    """An admin client (system:masters)."""
    with kube.api_client(cluster.kubeconfig) as client:
        yield client


@pytest.fixture
def api_as(cluster: IntegrationCluster) -> Iterator[Callable[[str], k8s.ApiClient]]:
    """api_as("alice") -> a client authenticated with alice's token."""
    opened: list[k8s.ApiClient] = []

    def open_for(identity: str) -> k8s.ApiClient:
        client = kube.api_client(cluster.identity_kubeconfig(identity))
        opened.append(client)
        return client

    yield open_for
    for client in opened:
        client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(
    request: pytest.FixtureRequest, cluster: IntegrationCluster, api: k8s.ApiClient
) -> Iterator[str]:
    """A fresh namespace enforcing PodSecurity `restricted`.

    Teardown deletes our custom resources first (in it, and cluster-scoped ones labelled
    `sovereign.dev/test-namespace=<name>`), then the namespace, without waiting for it.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    testkit.create_namespace(api, name)
    yield name
    if _failed(request.node):
        dump = testkit.dump_namespace(cluster.kubectl, cluster.kubeconfig, name, api, cluster.state)
        print(f"\n##### cluster state for failed test {request.node.nodeid}\n{dump}")
    for warning in testkit.delete_custom_resources(api, name):
        print(f"cleanup: {warning}", file=sys.stderr)
    k8s.CoreV1Api(api).delete_namespace(name)


@pytest.fixture
def kubectl(cluster: IntegrationCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl("get", "pods", "-n", ns) with the admin kubeconfig; fails the test on error
    unless check=False."""

    def run(
        *args: str, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or cluster.kubeconfig
        result = subprocess.run(
            [str(cluster.kubectl), f"--kubeconfig={config}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def helm(cluster: IntegrationCluster, tmp_path: Path) -> Helm:
    """helm(...) against the cluster, with its cache and config in a temporary folder."""
    return Helm(cluster.helm, cluster.kubeconfig, tmp_path / "helm")
