#!/usr/bin/env bash
# The bench suite on one GPU: prints tables naming the card and writes the JSON that
# docs/performance.md's GPU section is made from (run benchmarks/gpu_smoke.sh first).
#
#   benchmarks/gpu.sh [OUT_DIR]        (default: runs/bench-gpu)
#
# Needs a Python whose torch has CUDA, with mrsq's dependencies; PYTHON selects it (default:
# .venv/bin/python if present, else python3). Nothing is installed from the network here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/bench-gpu}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export MUJOCO_GL="${MUJOCO_GL:-disable}" PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

"$PY" - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: torch.cuda.is_available() is False (torch %s): no GPU to benchmark" % torch.__version__)
print("card:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true

# One bench per command, each writing its JSON (and markdown) as soon as it is done, so a timeout
# or a failure later keeps what was measured; stderr of each is kept beside it (compile
# fall-backs, CUDA-graph skips and recompiles are reported there). A failed bench is reported and
# the rest still run; the exit status is 1 if any failed.
COMMON=(--env dmc:cheetah-run --set train.device=cuda --repeats 3)
status=0
bench() {  # bench NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  if timeout "$limit" "$PY" -m mrsq.cli bench "$@" "${COMMON[@]}" --out "$OUT/$name.json" \
       > "$OUT/$name.md" 2> "$OUT/$name.stderr"; then
    cat "$OUT/$name.md"
  else
    echo "gpu.sh: bench $name failed or timed out (exit $?); see $OUT/$name.stderr" >&2
    tail -3 "$OUT/$name.stderr" >&2
    status=1
  fi
}
bench train_mrq 120 train --preset mrq
bench plan_mrsq 120 plan --preset mrsq --plan-iters 20
bench loop_mrq 120 loop --preset mrq --loop-steps 40
bench loop_mrsq 150 loop --preset mrsq --loop-steps 40
bench scaling 150 scaling --preset mrq --plan-preset mrsq
grep -h "skipping cudagraphs\|Recompiling\|fell back\|running it eager" "$OUT"/*.stderr | sort | uniq -c || true
echo "wrote $OUT/*.json, *.md and *.stderr"
exit $status
