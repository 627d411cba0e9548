#!/usr/bin/env bash
# Issue 21's long pixel run against MR.Q's published visual-DMC curve (cartpole-swingup), as a
# markdown table: each evaluation of each seed of runs/pixels/cartpole beside MR.Q's 10-seed mean
# +- std at the same agent step. Usage: scripts/pixel_results.sh [RUNS_DIR]
set -euo pipefail
RUNS=${1:-runs/pixels/cartpole}
PY=${PY:-.venv/bin/python}
"$PY" - "$RUNS" <<'PYEOF'
import csv, glob, os, sys
runs = sys.argv[1]
ref = {}
with open("docs/results/pixels/mrq_published_cartpole_swingup.csv") as f:
    for row in csv.DictReader(line for line in f if not line.startswith("#")):
        ref[int(row["step"])] = (float(row["mean"]), float(row["std"]))
seeds = {}
for path in sorted(glob.glob(os.path.join(runs, "*", "*", "seed*", "eval.csv"))):
    with open(path) as f:
        seeds[path.split(os.sep)[-2]] = {int(r["step"]): float(r["return_mean"]) for r in csv.DictReader(f)}
steps = sorted({s for rows in seeds.values() for s in rows})
print("| agent step | " + " | ".join(f"mrq_pixels_small {k}" for k in seeds) + " | MR.Q published (10 seeds) |")
print("|---:|" + "---:|" * (len(seeds) + 1))
for step in steps:
    cells = [f"{rows[step]:.1f}" if step in rows else "" for rows in seeds.values()]
    m, s = ref.get(step, (float("nan"), float("nan")))
    print(f"| {step} | " + " | ".join(cells) + f" | {m:.1f} +- {s:.1f} |")
PYEOF
