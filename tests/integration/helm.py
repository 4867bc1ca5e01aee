"""helm against the test cluster, with its cache and config kept in a folder of the test's own."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from sovereign_operator.local import NAMESPACE, RELEASE

CHART = Path(__file__).resolve().parents[2] / "charts" / "sovereign-operator"


@dataclass
class Helm:
    binary: Path
    kubeconfig: Path
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def install_operator_chart(self, chart: Path = CHART, *extra: str) -> None:
        """The chart without its Deployment: CRDs, ServiceAccount, RBAC (tests run the operator)."""
        self(
            "upgrade",
            "--install",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "operator.enabled=false",
            "--wait",
            "--timeout=120s",
            *extra,
        )
