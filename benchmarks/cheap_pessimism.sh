#!/usr/bin/env bash
# Issue 17's cost table: `mrsq bench plan`, `train` and `loop` at full size for mrsq and each
# cheap preset, one after another in one sitting, JSON per (preset, bench) in OUT_DIR; then the
# markdown table (ms, GFLOP, env steps/s and the ratio to mrsq) from scripts/cheap_cost_table.py.
#
#   benchmarks/cheap_pessimism.sh [OUT_DIR] [PRESET...]   (default: docs/results/cheap_pessimism/bench)
#
# Run it on an otherwise idle machine: every figure is a wall-clock time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs/results/cheap_pessimism/bench}"
shift || true
PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(mrsq mrsq_trunk mrsq_trunk3 mrsq_plan_k mrsq_tqc mrsq_distill mrsq_droq mrq_mpc)
MRSQ="${MRSQ:-.venv/bin/mrsq}"
ENV_ID="${ENV_ID:-dmc:cheetah-run}"
export MUJOCO_GL="${MUJOCO_GL:-disable}"
mkdir -p "$OUT"
for p in "${PRESETS[@]}"; do
  for b in plan train loop; do
    echo "== $p: bench $b"
    "$MRSQ" bench "$b" --preset "$p" --env "$ENV_ID" --json --out "$OUT/${p}_${b}.json" > /dev/null
  done
done
"${PYTHON:-.venv/bin/python}" scripts/cheap_cost_table.py "$OUT" | tee "$OUT/table.md"
