#!/usr/bin/env bash
# Issue 20 (D)'s horizon study from the sweep's run folders: copy the complete runs' small files
# into docs/results/horizon/runs/ (committed), with issue 17's mrsq_small Hopper runs (MPPI,
# horizon 3, same settings) as the MPPI horizon-3 arm, then the compare table and the curves.
#
#   scripts/horizon_results.sh [SWEEP_FOLDER]     (default: runs/horizon/hopper)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-runs/horizon/hopper}"
DST=docs/results/horizon
PY="${PYTHON:-.venv/bin/python}"
MRSQ="${MRSQ:-.venv/bin/mrsq}"
"$PY" scripts/collect_runs.py "$SRC" "$DST/runs" > /dev/null
mkdir -p "$DST/runs/gym-Hopper-v5"
rm -rf "$DST/runs/gym-Hopper-v5/mrsq_small"
cp -r docs/results/cheap_pessimism/runs/hopper/gym-Hopper-v5/mrsq_small "$DST/runs/gym-Hopper-v5/mrsq_small"
"$MRSQ" compare "$DST/runs" > "$DST/compare.md"
"$MRSQ" frontier "$DST/runs" --threads 1 --json "$DST/frontier.json" | grep -v '^mrsq: wrote' > "$DST/frontier.md"
"$MRSQ" plot "$DST/runs" --out "$DST/curves.png" --title "Hopper: MRS.Q (CPU-sized) planning horizon x planner" > /dev/null
echo "wrote $DST/compare.md, frontier.md, frontier.json and curves.png from $(find "$DST/runs" -name eval.csv | wc -l) runs"
