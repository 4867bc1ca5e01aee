#!/usr/bin/env bash
# Install Ray into the project's virtual environment, for the Ray group `engine` tests
# (tests/engine/test_ray_group.py). Ray is not a dependency of the package: only Ray groups'
# engine images need it, and they ship it next to vLLM.
#
# Idempotent: does nothing when the pinned version is already there.
# Usage: scripts/install_ray.sh [VENV] (default .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-${VENV:-$repo/.venv}}
python=$venv/bin/python
RAY_VERSION=2.60.0

[[ -x $python ]] || { echo "no virtual environment at $venv; run 'make venv' first" >&2; exit 1; }
if "$python" -c "import sys; from importlib.metadata import version; sys.exit(version('ray') != '$RAY_VERSION')" 2>/dev/null; then
  echo "ray $RAY_VERSION already installed in $venv" >&2
  exit 0
fi
# shellcheck source=scripts/venv_install.sh
source "$repo/scripts/venv_install.sh"
venv_install "ray==$RAY_VERSION"
"$python" -c "import ray; print('ray', ray.__version__)" >&2
