"""Learning curves from run folders (``eval.csv``) as a PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from mrsq.cli import UsageError


def read_eval(run: Path) -> tuple[list[int], list[float], list[float]]:
    path = run / "eval.csv"
    if not path.is_file():
        raise UsageError(f"{run}: no eval.csv (is it a run folder?)")
    steps, means, stds = [], [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            means.append(float(row["return_mean"]))
            stds.append(float(row["return_std"] or 0))
    return steps, means, stds


def plot_runs(runs: list[Path], out: Path, title: str = "", labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if labels and len(labels) != len(runs):
        raise UsageError(f"--label given {len(labels)} times for {len(runs)} runs")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for i, run in enumerate(runs):
        steps, means, stds = read_eval(run)
        label = labels[i] if labels else run.name
        ax.plot(steps, means, marker="o", ms=3, label=label)
        ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean +- std over episodes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
