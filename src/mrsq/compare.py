"""``mrsq compare``: one markdown table per environment, a row per preset, over seeds.

Columns: final return and area under the curve (mean +- std over seeds), the interquartile mean
of the final return with a 95% stratified-bootstrap interval (``rliable``), and the final value
error. "Final" is the last evaluation step that every run of that environment reached, so presets
are compared at the same step even when runs stopped at different points; the area under the
curve is the mean evaluation return over the steps up to there (trapezoid rule, divided by the
span), so it reads in return units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrsq.runs import Run, common_steps, group, load_runs


def _mean_std(values: np.ndarray, digits: int = 1) -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "-"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} +- {values.std():.{digits}f}"


def _iqm_ci(finals: np.ndarray, reps: int) -> str:
    """IQM with rliable's stratified bootstrap (one task, runs as the sample)."""
    from rliable import library as rly
    from rliable import metrics

    scores = {"x": finals.reshape(-1, 1)}  # [runs, tasks]
    point, ci = rly.get_interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    return f"{point['x'][0]:.1f} [{ci['x'][0, 0]:.1f}, {ci['x'][1, 0]:.1f}]"


def auc(steps: np.ndarray, returns: np.ndarray) -> float:
    """Mean return over ``steps`` by the trapezoid rule (area / span); the value itself for one step."""
    if len(steps) < 2:
        return float(returns[0])
    return float(np.trapezoid(returns, steps) / (steps[-1] - steps[0]))


def _eval_means(members: list[Run], column: str, steps: np.ndarray) -> np.ndarray:
    """Each run's mean of ``column`` over the evaluations at ``steps`` (NaN where it has none)."""
    if steps.size == 0:
        return np.full(len(members), np.nan)
    return np.array([float(np.nanmean(m.at(column, steps))) if m.has(column) else np.nan for m in members])


def compare_tables(paths: list[Path], labels: list[str] | None = None, reps: int = 2000) -> str:
    runs = load_runs(paths, labels)
    out = []
    for env, by_label in group(runs).items():
        everyone: list[Run] = [r for members in by_label.values() for r in members]
        steps = common_steps(everyone)
        if steps.size == 0:
            out.append(f"## {env}\n\nno evaluation step is common to all runs\n")
            continue
        final = int(steps[-1])
        out.append(f"## {env} (at step {final}, the last one every run reached)\n")
        out.append("| preset | seeds | final return | IQM final [95% CI] | AUC (mean return) | final value error % "
                   "| value bias (mean of evals) | search divergence (mean of evals) |")
        out.append("|---|---|---|---|---|---|---|---|")
        later = steps[steps > 0]  # the diagnostics of step 0 (an untrained agent) say nothing
        for label, members in by_label.items():
            finals = np.array([m.at("return_mean", steps[-1:])[0] for m in members])
            aucs = np.array([auc(steps, m.at("return_mean", steps)) for m in members])
            verr = np.array([m.at("value_error_pct", steps[-1:])[0] if m.has("value_error_pct") else np.nan
                             for m in members])
            out.append(f"| {label} | {len(members)} | {_mean_std(finals)} | {_iqm_ci(finals, reps)} | "
                       f"{_mean_std(aucs)} | {_mean_std(verr)} | {_mean_std(_eval_means(members, 'value_bias', later))} "
                       f"| {_mean_std(_eval_means(members, 'search_divergence', later), 4)} |")
        out.append("")
    return "\n".join(out)
