"""Issue 17's cost table from benchmarks/cheap_pessimism.sh's JSON files: per preset the planning
action, the training-phase step and the training loop (ms, counted GFLOP, x its floor at the
ceiling measured beside it, env steps/s), each with its ratio to mrsq's.

    python scripts/cheap_cost_table.py docs/results/cheap_pessimism/bench
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(folder: Path) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(folder.glob("*_*.json")):
        preset, bench = path.stem.rsplit("_", 1)
        out.setdefault(preset, {})[bench] = json.loads(path.read_text())
    return out


def total(result: dict) -> dict:
    return result["rows"][-1]


def main(folder: str) -> None:
    runs = load(Path(folder))
    runs = dict(sorted(runs.items(), key=lambda kv: (kv[0] != "mrsq", kv[0])))  # mrsq first
    ref = runs.get("mrsq")
    any_run = next(iter(runs.values()))
    print(f"Machine: {next(iter(any_run.values()))['device']}, {next(iter(any_run.values()))['threads']} threads, "
          f"{next(iter(any_run.values()))['runtime']['precision']}, compile {next(iter(any_run.values()))['runtime']['compile']}\n")
    print("| preset | plan ms (x floor) | plan GFLOP | train step ms (x floor) | train GFLOP | loop ms (x floor) "
          "| loop env steps/s | loop GFLOP/step | plan ms / mrsq | loop speed / mrsq | loop GFLOP / mrsq |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset, b in runs.items():
        plan, train, loop = (total(b[k]) if k in b else None for k in ("plan", "train", "loop"))
        sps = b["loop"]["steps_per_s"] if loop else float("nan")
        cells = [preset,
                 f"{plan['ms']:.0f} ({plan['ms'] / plan['floor_ms']:.2f})" if plan else "-",
                 f"{plan['gflop']:.1f}" if plan else "-",
                 f"{train['ms']:.0f} ({train['ms'] / train['floor_ms']:.2f})" if train else "-",
                 f"{train['gflop']:.1f}" if train else "-",
                 f"{loop['ms']:.0f} ({loop['ms'] / loop['floor_ms']:.2f})" if loop else "-",
                 f"{sps:.2f}" if loop else "-",
                 f"{loop['gflop']:.1f}" if loop else "-"]
        if ref and plan and "plan" in ref:
            cells.append(f"{plan['ms'] / total(ref['plan'])['ms']:.2f}")
        else:
            cells.append("-")
        if ref and loop and "loop" in ref:
            cells += [f"{sps / ref['loop']['steps_per_s']:.2f}", f"{loop['gflop'] / total(ref['loop'])['gflop']:.2f}"]
        else:
            cells += ["-", "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/cheap_pessimism/bench")
