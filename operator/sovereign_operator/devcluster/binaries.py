"""Locate the repository and the control plane binaries, building them on first use.

The binaries are built from the pinned Go tool modules by `e2e/cluster/build.sh`, which owns
the cache (keyed by the go.mod/go.sum hashes and the Go version). Python never guesses a
cache path: it asks the script, which answers in well under a second when the cache is warm.
"""

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ENV = "SOVEREIGN_REPO"
# Points at a folder of ready binaries (e.g. unpacked from a CI cache), skipping build.sh.
BIN_DIR_ENV = "SOVEREIGN_BIN_DIR"
BUILD_SCRIPT = Path("e2e/cluster/build.sh")
BINARY_NAMES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


class BinariesError(RuntimeError):
    """The repository or a binary could not be found or built."""


def repo_root() -> Path:
    """The repository root: $SOVEREIGN_REPO, else the checkout this package was loaded from."""
    configured = os.environ.get(REPO_ENV)
    # operator/sovereign_operator/devcluster/binaries.py -> parents[3] is the checkout.
    candidate = Path(configured) if configured else Path(__file__).resolve().parents[3]
    if (candidate / BUILD_SCRIPT).is_file():
        return candidate
    hint = f"{REPO_ENV}={configured}" if configured else f"the package location {candidate}"
    raise BinariesError(
        f"cannot find {BUILD_SCRIPT} from {hint}; "
        f"set {REPO_ENV} to the root of a sovereign-operator checkout"
    )


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def path(self, name: str) -> Path:
        if name not in BINARY_NAMES:
            raise KeyError(f"unknown binary {name!r}; known: {', '.join(BINARY_NAMES)}")
        return self.directory / name

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    def missing(self) -> list[str]:
        return [name for name in BINARY_NAMES if not os.access(self.path(name), os.X_OK)]


def ensure_binaries(*, show_progress: bool = True) -> Binaries:
    """Return the cached binaries, running the build script first when the cache is cold.

    The script's progress (stderr) goes straight to the terminal, because a cold build takes
    tens of minutes and silence would look like a hang; its last stdout line is the folder.
    """
    configured = os.environ.get(BIN_DIR_ENV)
    if configured:
        return _checked(Binaries(Path(configured)), f"${BIN_DIR_ENV}")

    script = repo_root() / BUILD_SCRIPT
    result = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=None if show_progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = "" if show_progress else f":\n{result.stderr[-4000:]}"
        raise BinariesError(f"{script} failed with exit status {result.returncode}{detail}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise BinariesError(f"{script} printed no binary folder on stdout")
    return _checked(Binaries(Path(lines[-1])), str(script))


def _checked(binaries: Binaries, source: str) -> Binaries:
    missing = binaries.missing()
    if missing:
        raise BinariesError(
            f"{source} gave {binaries.directory}, which lacks: {', '.join(missing)}"
        )
    return binaries


@dataclass(frozen=True)
class PinnedVersions:
    kubernetes: str
    helm: str
    etcd: str
    kwok: str


def pinned_versions(root: Path | None = None) -> PinnedVersions:
    """The versions build.sh stamps into the binaries; the script is the single source."""
    script = (root or repo_root()) / BUILD_SCRIPT
    text = script.read_text()

    def pinned(variable: str) -> str:
        match = re.search(rf"^{variable}=(\S+)$", text, flags=re.MULTILINE)
        if match is None:
            raise BinariesError(f"{script} does not set {variable}")
        return match.group(1)

    return PinnedVersions(
        kubernetes=pinned("K8S_VERSION"),
        helm=pinned("HELM_VERSION"),
        etcd=pinned("ETCD_VERSION"),
        kwok=pinned("KWOK_VERSION"),
    )
