"""``mrsq frontier RUNS...``: pessimism and return against compute, one point per variant.

For every variant (a sweep's preset, or a run folder's label) of every environment:

* **FLOPs per environment step**, counted (``FlopCounterMode``, eager) on a freshly built agent
  of the run's own ``spec.yaml`` and environment: one action (the planner, exploring), one
  ``agent.update`` outside the encoder burst (critic + policy updates) and, for MR.Q's family, one
  encoder update (the 250-update burst every 250 steps, amortised). ``critic`` FLOPs are the part
  spent in the critic ensemble, its target copy and a distilled head. Both are reported relative
  to a reference variant (``--reference``, default ``mrsq_small``, else the first).
* **Pessimism**, averaged over the evaluations after the warm-up (``step > warmup_steps``) of
  each seed, then mean and standard deviation over seeds: ``value_bias`` (mean Q - G, return
  units), ``overestimation_frac``, ``value_error_pct`` and the planner's own ``planner_value_bias``.
* **Return**: the final evaluation (the last step every run of the env reached) and the area
  under the curve, mean and std over seeds.

Prints a markdown table per env and, with ``--out``, draws the frontier: x = FLOPs per step
relative to the reference, y = value bias (left) and return (right), error bars = seed std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from mrsq.compare import auc
from mrsq.plot import save_figure
from mrsq.runs import Run, RunFolderError, common_steps, group, load_runs

VALUE_NAMES = ("value_bias", "overestimation_frac", "value_error_pct", "planner_value_bias")
CRITIC_MODULES = ("critic", "critic_target", "distill_head")  # what counts as "critic" compute


@dataclass
class Cost:
    total: float  # FLOPs per env step
    critic: float  # of which in the critics (and their target, a distilled head)
    parts: dict[str, float]


class _Root(torch.nn.Module):
    """Makes the agent a child of a module that is called, so FlopCounterMode attributes FLOPs to
    the agent's attributes by name (``_Root.agent.critic``) rather than to module types."""

    def __init__(self, agent: torch.nn.Module) -> None:
        super().__init__()
        self.agent, self.fn = agent, None

    def forward(self):
        return self.fn()


def step_cost(spec, warm_steps: int = 600) -> Cost:
    """FLOPs of one training-phase environment step of ``spec`` (its own env), counted eagerly."""
    from torch.utils.flop_counter import FlopCounterMode

    from mrsq.compile import eager
    from mrsq.envs import make_env
    from mrsq.envs.base import fill_with_random_actions
    from mrsq.replay import LAPReplay
    from mrsq.runtime import resolve
    from mrsq.training.loop import build_agent

    spec = spec.model_copy(update={"compile": "off", "precision": "fp32"})
    env = make_env(spec.train.env, 0)
    torch.manual_seed(0)
    agent = build_agent(spec, env, torch.device("cpu"), resolve("fp32", "off", "cpu"))
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=warm_steps + 100, horizon=agent.replay_horizon, seed=0)
    obs = fill_with_random_actions(env, replay, warm_steps)
    agent.prepare(replay)
    agent.update(replay)  # the first update: MR.Q's burst; counted apart below
    root = _Root(agent)
    parts = {"act": lambda: agent.act(obs, explore=True), "update": lambda: agent.update(replay)}
    if hasattr(agent, "encoder_step"):
        horizon = spec.encoder_horizon
        parts["encoder (amortised)"] = lambda: agent.encoder_step(replay.sample(spec.batch_size, horizon=horizon))
    total, critic, by_part = 0.0, 0.0, {}
    for name, fn in parts.items():
        root.fn = fn
        with eager(), FlopCounterMode(display=False) as counter:
            root()
        counts = counter.get_flop_counts()
        flops = float(counter.get_total_flops())
        by_part[name] = flops
        total += flops
        critic += sum(sum(counts.get(f"_Root.agent.{m}", {}).values()) for m in CRITIC_MODULES)
    return Cost(total, critic, by_part)


def _after_warmup(run: Run, warmup: int, column: str) -> float:
    """Mean of ``column`` over the run's evaluations after the warm-up (NaN if none)."""
    if not run.has(column):
        return math.nan
    keep = run.steps > warmup
    values = run.columns[column][keep]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _spec_of(run: Run):
    from mrsq import specs

    spec_file = run.path / "spec.yaml"
    if not spec_file.is_file():
        raise RunFolderError(f"{run.path}: no spec.yaml, so its FLOPs cannot be counted")
    return specs.validate(yaml.safe_load(spec_file.read_text()), where=str(spec_file))


def frontier(paths: list[Path], reference: str = "mrsq_small", labels: list[str] | None = None) -> dict:
    """``{env: {"reference": label, "final_step": int, "rows": [per-variant dict]}}``."""
    import mrsq.components  # noqa: F401  (the specs name built-in components)

    out = {}
    for env, by_label in group(load_runs(paths, labels)).items():
        everyone = [r for members in by_label.values() for r in members]
        steps = common_steps(everyone)
        ref = reference if reference in by_label else next(iter(by_label))
        rows, costs = [], {}
        for label, members in by_label.items():
            spec = _spec_of(members[0])
            costs[label] = step_cost(spec)
            row = {"variant": label, "seeds": len(members), "flops_per_step": costs[label].total,
                   "critic_flops_per_step": costs[label].critic}
            for name in VALUE_NAMES:
                per_seed = np.array([_after_warmup(m, spec.warmup_steps, name) for m in members])
                row[name] = _stats(per_seed)
            if steps.size:
                row["final_return"] = _stats(np.array([m.at("return_mean", steps[-1:])[0] for m in members]))
                row["auc"] = _stats(np.array([auc(steps, m.at("return_mean", steps)) for m in members]))
            rows.append(row)
        for row in rows:
            row["flops_rel"] = row["flops_per_step"] / costs[ref].total
            row["critic_flops_rel"] = row["critic_flops_per_step"] / costs[ref].critic if costs[ref].critic else math.nan
        out[env] = {"reference": ref, "final_step": int(steps[-1]) if steps.size else None, "rows": rows}
    return out


def _stats(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def _fmt(s: dict, digits: int = 1) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.{digits}f} +- {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def table(result: dict) -> str:
    lines = []
    for env, block in result.items():
        ref = block["reference"]
        lines.append(f"## {env} (FLOPs relative to {ref}; pessimism averaged over the evaluations after the "
                     f"warm-up; return at step {block['final_step']}, the last one every run reached)\n")
        lines.append("| variant | seeds | FLOPs/step (x ref) | critic FLOPs (x ref) | value bias | overest. frac |"
                     " value error % | planner value bias | final return | AUC |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in block["rows"]:
            lines.append(
                f"| {r['variant']} | {r['seeds']} | {r['flops_per_step'] / 1e9:.3f} G ({r['flops_rel']:.2f}) | "
                f"{r['critic_flops_per_step'] / 1e9:.3f} G ({r['critic_flops_rel']:.2f}) | {_fmt(r['value_bias'])} | "
                f"{_fmt(r['overestimation_frac'], 2)} | {_fmt(r['value_error_pct'])} | {_fmt(r['planner_value_bias'])} | "
                f"{_fmt(r.get('final_return', _stats(np.zeros(0))))} | {_fmt(r.get('auc', _stats(np.zeros(0))))} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(result)
    fig, axes = plt.subplots(len(envs), 2, figsize=(10, 3.6 * len(envs)), dpi=110, squeeze=False)
    for row, env in enumerate(envs):
        block = result[env]
        for col, (key, name) in enumerate((("value_bias", "value bias Q - G (return units)"),
                                           ("final_return", "final evaluation return"))):
            ax = axes[row, col]
            for i, r in enumerate(block["rows"]):
                s = r.get(key)
                if not s or not s["n"]:
                    continue
                ax.errorbar(r["flops_rel"], s["mean"], yerr=s["std"] if s["n"] > 1 else None, fmt="o", capsize=3,
                            color=f"C{i}", label=f"{r['variant']} ({r['seeds']})")
            if key == "value_bias":
                ax.axhline(0, color="k", lw=0.8)
            ax.set_xlabel(f"FLOPs per env step relative to {block['reference']}")
            ax.set_title(f"{env}: {name}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)
