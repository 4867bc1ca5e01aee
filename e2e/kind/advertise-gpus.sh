#!/usr/bin/env bash
# Give every node labelled nvidia.com/gpu.count=N a capacity of N `nvidia.com/gpu`, so the
# scheduler places GPU pods on kind as it would on a GPU cluster. This is the documented
# "advertise extended resources for a node" status patch; the kubelet keeps the capacity and
# derives allocatable from it (patched here too, so the scheduler sees it at once).
# No GPU is involved: pods get the resource, not a device.
set -euo pipefail

nodes=$(kubectl get nodes -l nvidia.com/gpu.count \
  -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.labels.nvidia\.com/gpu\.count}{"\n"}{end}')
[[ -n $nodes ]] || { echo "no node is labelled nvidia.com/gpu.count" >&2; exit 1; }

while read -r node count; do
  kubectl patch node "$node" --subresource=status --type=json -p "[
    {\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$count\"},
    {\"op\": \"add\", \"path\": \"/status/allocatable/nvidia.com~1gpu\", \"value\": \"$count\"}]" >/dev/null
  echo "$node: nvidia.com/gpu=$count" >&2
done <<< "$nodes"
