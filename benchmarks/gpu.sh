#!/usr/bin/env bash
# The whole bench suite on one GPU, in under 5 minutes: prints a table naming the card and writes
# the JSON that docs/performance.md's GPU section is made from.
#
#   benchmarks/gpu.sh [OUT_DIR]        (default: runs/bench-gpu)
#
# Needs a Python whose torch has CUDA, with mrsq's dependencies; PYTHON selects it (default:
# .venv/bin/python if present, else python3). Nothing is installed from the network here.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/bench-gpu}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export MUJOCO_GL="${MUJOCO_GL:-disable}" PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: torch.cuda.is_available() is False (torch %s): no GPU to benchmark" % torch.__version__)
print("card:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true

# train (full mrq), plan (full mrsq), loop (full mrq and full mrsq), scaling: one JSON file.
timeout 290 "$PY" -m mrsq.cli bench all --preset mrq --plan-preset mrsq --env dmc:cheetah-run \
    --set train.device=cuda --repeats 3 --plan-iters 20 --loop-steps 40 --out "$OUT/bench_all.json" \
    | tee "$OUT/bench_all.md"
echo "wrote $OUT/bench_all.json and $OUT/bench_all.md"
