#!/usr/bin/env bash
# Issue 18's GPU smoke test: under 5 minutes on one GPU from a cold compile cache; exits non-zero
# on any failure and prints a table naming the card (also written to OUT_DIR/gpu_smoke.md/.json).
#
#   benchmarks/gpu_smoke.sh [OUT_DIR]        (default: runs/gpu-smoke)
#
# 1. the tests that need CUDA (the CPU suite, `cuda_branch` included, runs in CI);
# 2. benchmarks/gpu_smoke.py: mrsq_small and full mrsq on CUDA (see its docstring for the checks).
# PYTHON selects the interpreter (default .venv/bin/python if present, else python3). stderr of
# each part is kept in OUT_DIR (compile fall-backs and CUDA-graph skips are reported there).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu-smoke}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export MUJOCO_GL="${MUJOCO_GL:-disable}" PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke.sh: no CUDA device (torch ' + torch.__version__ + ')')" || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
status=0
echo "== CUDA tests"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -k "cuda and not cuda_branch" tests 2> "$OUT/tests.stderr" \
  | tee "$OUT/tests.log" | tail -5 || status=1
grep -q " passed" "$OUT/tests.log" && ! grep -q " failed\| error" "$OUT/tests.log" || status=1
echo "== smoke"
timeout 240 "$PY" benchmarks/gpu_smoke.py --device cuda --out "$OUT" 2> "$OUT/smoke.stderr" || status=1
grep -c "skipping cudagraphs" "$OUT/smoke.stderr" | sed 's/^/CUDA-graph skip messages in stderr: /'
[ $status -eq 0 ] && echo "gpu_smoke.sh: all checks passed" || echo "gpu_smoke.sh: FAILED (see $OUT)" >&2
exit $status
