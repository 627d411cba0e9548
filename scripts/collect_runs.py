"""Copy the small files of a sweep's complete runs (spec.yaml, run.json, eval.csv, train.csv) into
a folder that is committed, keeping the sweep layout ``<env>/<variant>/seed<k>/`` so `mrsq compare`,
`mrsq plot` and `mrsq frontier` read the copy as they read the sweep. Checkpoints and replay
segments stay behind (tens of MB per run).

    python scripts/collect_runs.py runs/cheap_pessimism/hopper docs/results/cheap_pessimism/runs/hopper
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mrsq.runs import find_run_folders, read_run_json

FILES = ("spec.yaml", "run.json", "eval.csv", "train.csv")


def collect(src: Path, dst: Path) -> list[Path]:
    copied = []
    for run in find_run_folders(src):
        if read_run_json(run).get("status") != "done":
            continue
        target = dst / run.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, target / name)
        copied.append(target)
    if (src / "sweep.json").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        _merge_sweep_json(src / "sweep.json", dst / "sweep.json")
    return copied


def _merge_sweep_json(src: Path, dst: Path) -> None:
    """Copy ``src``'s sweep.json, keeping the run entries of another sweep already collected into
    ``dst`` (an env's seeds may come from several sweep folders): runs are keyed by folder, the
    newer entry wins, and the header (sweep file, resources) is ``src``'s."""
    info = json.loads(src.read_text())
    if dst.is_file():
        runs = {run["folder"]: run for run in json.loads(dst.read_text()).get("runs", [])}
        runs.update({run["folder"]: run for run in info.get("runs", [])})
        info["runs"] = sorted(runs.values(), key=lambda run: run["folder"])
    dst.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    for path in collect(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
