#!/usr/bin/env bash
# Copy the generated CRDs (crds/, from `sovereign crds`) into the chart, which templates
# them behind crds.enabled. tests/unit/operator/test_chart.py fails when they differ.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$root/charts/sovereign-operator/crds-src
rm -f "$dest"/*.yaml
mkdir -p "$dest"
cp "$root"/crds/*.yaml "$dest"/
echo "copied $(ls "$root"/crds/*.yaml | wc -l) CRDs into $dest"
