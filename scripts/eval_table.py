"""Print a run folder's eval.csv as a markdown table (used to write docs/results.md).

    python scripts/eval_table.py RUN [RUN ...]
"""

import csv
import sys
from pathlib import Path


def main(runs: list[str]) -> None:
    tables = []
    for run in runs:
        with (Path(run) / "eval.csv").open() as f:
            tables.append({int(r["step"]): (float(r["return_mean"]), float(r["return_std"])) for r in csv.DictReader(f)})
    steps = sorted(set().union(*tables))
    print("| step | " + " | ".join(Path(r).name for r in runs) + " |")
    print("|---:|" + "---:|" * len(runs))
    for s in steps:
        cells = [f"{t[s][0]:.1f} ± {t[s][1]:.1f}" if s in t else "" for t in tables]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
