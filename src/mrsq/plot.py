"""``mrsq plot``: learning curves from run folders, grouped by (preset, env), mean and a band
(+- one std) across seeds; value-error and divergence panels when the runs logged them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrsq.runs import Run, common_steps, group, load_runs

PANELS = (("return_mean", "evaluation return"),
          ("value_error_pct", "value error (Q - G) / |G|, %"),
          ("search_divergence", "policy-vs-search divergence"))


def plot_runs(paths: list[Path], out: Path, title: str = "", labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(paths, labels)
    groups = group(runs)
    panels = [(c, name) for c, name in PANELS if any(r.has(c) for r in runs)]
    fig, axes = plt.subplots(len(groups), len(panels), figsize=(4.6 * len(panels), 3.4 * len(groups)),
                             dpi=110, squeeze=False)
    for row, (env, by_label) in enumerate(groups.items()):
        for col, (column, name) in enumerate(panels):
            ax = axes[row, col]
            for i, (label, members) in enumerate(by_label.items()):
                _curve(ax, members, column, label, f"C{i}")
            if column == "value_error_pct":
                ax.axhline(0, color="k", lw=0.8)
            ax.set_title(f"{env}: {name}", fontsize=9)
            ax.set_xlabel("environment steps")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def save_figure(fig, out: Path) -> Path:
    """Write ``fig`` to ``out`` (its folder created), close it, return the path."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _curve(ax, members: list[Run], column: str, label: str, color: str) -> None:
    members = [m for m in members if m.has(column)]
    if not members:
        return
    steps = common_steps(members)
    values = np.stack([m.at(column, steps) for m in members])  # [seeds, steps]
    with np.errstate(all="ignore"):
        mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
    ax.plot(steps, mean, color=color, marker="o", ms=2.5, label=f"{label} ({len(members)} seed{'s' * (len(members) > 1)})")
    if len(members) > 1:
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
