#!/usr/bin/env bash
# Every test tier, as `make test` runs them. The engine tier (real vLLM, diffusers and Ray
# processes: CPU-bound) runs in the background at a lower priority, beside the unit and
# integration tiers (which mostly wait on the local control plane), so on a 2-core machine
# the two overlap instead of adding up. Integration keeps first call on the CPU; the engine
# tier's start-up timeouts are minutes, not seconds, so it only runs a little longer.
#
# The engine tier's output follows the others' when it ends; the exit status is non-zero
# when either failed. `pytest` alone still runs all tiers one after the other.
# Usage: scripts/run_tests.sh [VENV_BIN] (default .venv/bin).
set -uo pipefail

bin=${1:-.venv/bin}
log=$(mktemp -t engine-tier.XXXXXX)
nice -n 10 "$bin/pytest" tests/engine >"$log" 2>&1 &
engine=$!
trap 'kill "$engine" 2>/dev/null' INT TERM
echo "[test] engine tier (tests/engine) started in the background; its output: $log"

"$bin/pytest" tests/unit tests/integration
rest=$?

echo "[test] unit and integration tiers done (exit $rest); waiting for the engine tier"
wait "$engine"
engine_status=$?
echo "================================ engine tier ================================"
cat "$log"
rm -f "$log"
echo "[test] unit+integration exit $rest, engine exit $engine_status"
((rest == 0 && engine_status == 0))
