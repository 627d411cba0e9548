#!/usr/bin/env bash
# Issue 17's learning results from the sweeps' run folders: copy the complete runs' small files
# into docs/results/cheap_pessimism/runs/ (committed), then the compare tables, the frontier
# table, its JSON and its figure, all from those copies.
#
#   scripts/cheap_results.sh [SWEEP_ROOT]     (default: runs/cheap_pessimism, holding hopper/ and walker/)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-runs/cheap_pessimism}"
DST=docs/results/cheap_pessimism
PY="${PYTHON:-.venv/bin/python}"
MRSQ="${MRSQ:-.venv/bin/mrsq}"
# an env's runs may sit in several sweep folders (walker/, walker_s1/: one sweep per seed, run side
# by side); they land in one copy per env
for env in hopper walker; do
  for src in "$SRC/$env" "$SRC/$env"_*; do
    [ -d "$src" ] && "$PY" scripts/collect_runs.py "$src" "$DST/runs/$env" > /dev/null
  done
done
dirs=()
for env in hopper walker; do [ -d "$DST/runs/$env" ] && dirs+=("$DST/runs/$env"); done
"$MRSQ" compare "${dirs[@]}" > "$DST/compare.md"
"$MRSQ" frontier "${dirs[@]}" --threads 1 --out "$DST/frontier.png" --json "$DST/frontier.json" \
  | grep -v '^mrsq: wrote' > "$DST/frontier.md"
"$MRSQ" plot "${dirs[@]}" --out "$DST/curves.png" > /dev/null
echo "wrote $DST/compare.md, frontier.md, frontier.json, frontier.png, curves.png"
