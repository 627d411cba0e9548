"""Copy the small files of a sweep's complete runs (spec.yaml, run.json, eval.csv, train.csv) into
a folder that is committed, keeping the sweep layout ``<env>/<variant>/seed<k>/`` so `mrsq compare`,
`mrsq plot` and `mrsq frontier` read the copy as they read the sweep. Checkpoints and replay
segments stay behind (tens of MB per run).

    python scripts/collect_runs.py runs/cheap_pessimism/hopper docs/results/cheap_pessimism/runs/hopper
"""

from __future__ import annotations

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
        shutil.copy2(src / "sweep.json", dst / "sweep.json")
    return copied


if __name__ == "__main__":
    for path in collect(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
