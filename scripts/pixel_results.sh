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
# the figure: each seed's evaluations over MR.Q's published mean +- std band
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6.4, 4))
ref_steps = sorted(ref)
mean = [ref[k][0] for k in ref_steps]
std = [ref[k][1] for k in ref_steps]
last = max(steps) if steps else max(ref_steps)
shown = [i for i, k in enumerate(ref_steps) if k <= max(last * 1.5, 30000)]
xs = [ref_steps[i] for i in shown]
ax.plot(xs, [mean[i] for i in shown], color="k", label="MR.Q published (10 seeds, mean)")
ax.fill_between(xs, [mean[i] - std[i] for i in shown], [mean[i] + std[i] for i in shown], color="k", alpha=0.15,
                label="+- std")
for name, rows in seeds.items():
    ks = sorted(rows)
    ax.plot(ks, [rows[k] for k in ks], marker="o", label=f"mrq_pixels_small {name} (CPU-sized)")
ax.set_xlabel("agent steps")
ax.set_ylabel("evaluation return")
ax.set_title("dmcpix:cartpole-swingup from 84x84 pixels")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
out = os.environ.get("PIXEL_PLOT", "docs/results/pixels/cartpole_swingup.png")
fig.savefig(out, dpi=110)
print(f"\n(figure: {out})", file=sys.stderr)
PYEOF
