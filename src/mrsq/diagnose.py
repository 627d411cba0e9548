"""``mrsq diagnose nchain``: how often a search finds the one rewarded sequence of an N-chain
(the paper's Figure 2), for random shooting and, with ``--planner``, any registered planner
beside the random-shooting formula at the same number of model evaluations.

With ``A`` choices per step, ``n`` steps and ``m`` uniformly sampled sequences, at least one
sequence is the rewarded one with probability ``1 - (1 - A^-n)^m``. The empirical rate comes from
``trials`` independent searches with mrsq's own machinery: uniform sequences drawn like
:class:`~mrsq.planners.random_shooting.RandomShootingPlanner` does, scored by
:func:`~mrsq.planners.sampling.trajectory_value` on the true model
(:class:`~mrsq.envs.nchain.NChainModel`); a search succeeds when its best sequence earns the
reward. The interval is the exact (Clopper-Pearson) 95% binomial interval.

Another planner (``--planner mppi``, ``cem``, ``icem``) searches the same true model once per
trial from the chain's start, with no policy rollouts (the chain's policy is a blind 0), and
succeeds when the sequence it would execute earns the reward; its model evaluations per search
are counted (``evaluations_per_action``: every sequence scored, over all iterations), and the
formula is evaluated at that count: what random shooting would reach with the same budget.

``mrsq diagnose overestimation`` (:mod:`mrsq.overestimation`) is the other analysis.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from mrsq.envs.nchain import NChainEnv, NChainModel
from mrsq.planners.random_shooting import RandomShootingPlanner, RandomShootingSpec
from mrsq.planners.sampling import trajectory_value

MAX_BATCH = 1 << 20  # sequences scored at once


def analytic_success(num_actions: int, horizon: int, samples: int) -> float:
    """``1 - (1 - A^-n)^m``, computed stably (log1p/expm1) so 1e-7 is not lost to rounding."""
    p = float(num_actions) ** -horizon
    return -math.expm1(samples * math.log1p(-p))


def binomial_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial rate (scipy's implementation)."""
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


@torch.no_grad()
def search_successes(num_actions: int, horizon: int, samples: int, trials: int, seed: int = 0) -> int:
    """How many of ``trials`` random-shooting searches (``samples`` sequences each) over the true
    ``nchain:<A>-<n>`` model find the rewarded sequence."""
    torch.manual_seed(seed)
    env = NChainEnv(num_actions, horizon)
    model = NChainModel(env.target, num_actions)
    planner = RandomShootingPlanner(RandomShootingSpec(horizon=horizon, num_samples=samples,
                                                       num_policy_trajectories=0), action_dim=1)
    z0 = model.encode(torch.as_tensor(env.reset())[None])
    per_chunk = max(1, MAX_BATCH // samples)
    found = 0
    for start in range(0, trials, per_chunk):
        chunk = min(per_chunk, trials - start)
        values = trajectory_value(model, z0, planner.sample(chunk * samples, z0.device))  # [chunk*m, 1]
        found += int((values.reshape(chunk, samples).amax(1) > 0.5).sum())
    return found


@torch.no_grad()
def planner_successes(planner: str, num_actions: int, horizon: int, samples: int, trials: int, seed: int = 0,
                      fields: dict | None = None) -> tuple[int, int]:
    """``(successes, model evaluations per search)`` of ``trials`` searches by ``planner``
    (``samples`` sequences per iteration, ``fields`` more of its spec) over the true chain."""
    from mrsq.overestimation import Setting, build_planner

    torch.manual_seed(seed)
    env = NChainEnv(num_actions, horizon)
    model = NChainModel(env.target, num_actions)
    built = build_planner(Setting(planner=planner, samples=samples, horizon=horizon, action_dim=1,
                                  planner_fields=fields))
    obs = torch.as_tensor(env.reset())[None]
    z0 = model.encode(obs)
    found = 0
    for _ in range(trials):
        built.reset()
        built.plan(model, obs, first=True, explore=False)
        found += int(trajectory_value(model, z0, built.last_sequence[None])[0, 0] > 0.5)
    evaluations = built.evaluations_per_action() if hasattr(built, "evaluations_per_action") else samples
    return found, evaluations


def nchain_report(num_actions: int, horizon: int, samples: int, trials: int, seed: int = 0,
                  planner: str = "random_shooting", fields: dict | None = None) -> dict:
    if planner == "random_shooting" and not fields:
        k, evaluations = search_successes(num_actions, horizon, samples, trials, seed), samples
    else:
        k, evaluations = planner_successes(planner, num_actions, horizon, samples, trials, seed, fields)
    low, high = binomial_interval(k, trials)
    return {"planner": planner, "actions": num_actions, "horizon": horizon, "samples": samples,
            "evaluations": evaluations, "trials": trials, "seed": seed, "successes": k, "empirical": k / trials,
            "analytic": analytic_success(num_actions, horizon, evaluations), "ci_low": low, "ci_high": high}


def nchain_table(planners, samples: int, trials: int, seed: int = 0, actions=(2, 4, 10), max_horizon: int = 10,
                 fields: dict | None = None) -> tuple[list[dict], str]:
    """Every planner's success rate for A in ``actions`` and n in 1..``max_horizon`` beside the
    random-shooting formula at its evaluation count -> (rows, markdown table)."""
    rows = [nchain_report(a, n, samples, trials, seed, planner, fields)
            for planner in planners for a in actions for n in range(1, max_horizon + 1)]
    lines = ["| planner | A | evals | " + " | ".join(f"n={n}" for n in range(1, max_horizon + 1)) + " |",
             "|---|---|---|" + "---|" * max_horizon]
    for planner in planners:
        for a in actions:
            cells = [r for r in rows if r["planner"] == planner and r["actions"] == a]
            lines.append(f"| {planner} | {a} | {cells[0]['evaluations']} | " + " | ".join(
                f"{r['empirical']:.2f} ({r['analytic']:.2f})" for r in cells) + " |")
    return rows, "\n".join(lines)


def plot_nchain(path, samples: int, trials: int, seed: int = 0, max_horizon: int = 12,
                actions=(2, 4, 10)) -> list[dict]:
    """Success rate against the horizon for each ``A`` in ``actions``: analytic curve, empirical
    points with their 95% intervals. Returns the rows plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    rows = []
    for i, a in enumerate(actions):
        color = f"C{i}"
        hs = np.arange(1, max_horizon + 1)
        ax.plot(hs, [analytic_success(a, int(h), samples) for h in hs], color=color, label=f"A={a} analytic")
        pts = [nchain_report(a, int(h), samples, trials, seed) for h in hs]
        rows += pts
        emp = np.array([r["empirical"] for r in pts])
        err = np.array([[r["empirical"] - r["ci_low"] for r in pts], [r["ci_high"] - r["empirical"] for r in pts]])
        ax.errorbar(hs, emp, yerr=err, fmt="o", ms=3, color=color, capsize=2, label=f"A={a} empirical (95% CI)")
    ax.set_xlabel("chain length n (search horizon)")
    ax.set_ylabel(f"P(search finds the reward), m={samples}")
    ax.set_title(f"Random shooting on the N-chain ({trials} trials per point)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return rows


def main(args) -> int:
    from pydantic import ValidationError

    from mrsq import specs
    from mrsq.errors import UsageError
    from mrsq.registry import PLANNERS, unknown_message

    if args.planner not in PLANNERS:
        raise UsageError(f"--planner: {unknown_message('planner', args.planner, PLANNERS.names())}")
    fields = specs.apply_overrides({}, args.planner_set) or None  # --set FIELD=VALUE: planner spec fields
    try:
        if args.analysis == "overestimation":
            from mrsq import overestimation

            return overestimation.main(args, fields)
        return _nchain(args, fields)
    except ValidationError as exc:  # a planner or aggregator spec the settings make invalid
        flags = "--aggregator / --set" if args.analysis == "overestimation" else "--set"
        planner_spec = PLANNERS.spec(args.planner)
        root = planner_spec if exc.title == planner_spec.__name__ else None  # lists the fields a typo could mean
        raise UsageError(f"--planner {args.planner} / {flags}: {specs.format_validation_error(exc, root, fields)}") from None


def _nchain(args, fields: dict | None) -> int:
    from mrsq.errors import UsageError

    for name, least in (("actions", 2), ("horizon", 1), ("samples", 1), ("trials", 1)):
        value = getattr(args, name)
        if value < least:
            raise UsageError(f"--{name} must be at least {least} (got {value})")
    if args.table:
        rows, table = nchain_table([args.planner], args.samples, args.trials, args.seed, fields=fields)
        print(json.dumps(rows) if args.json else table)
        return 0
    report = nchain_report(args.actions, args.horizon, args.samples, args.trials, args.seed, args.planner, fields)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"N-chain A={args.actions} n={args.horizon}, {args.planner} with m={args.samples} sequences per "
              f"iteration ({report['evaluations']} model evaluations per search), {args.trials} trials (seed {args.seed})")
        print(f"  empirical {report['empirical']:.4g}  ({report['successes']}/{args.trials}, "
              f"95% CI [{report['ci_low']:.4g}, {report['ci_high']:.4g}])")
        print(f"  random shooting at {report['evaluations']} evaluations: {report['analytic']:.4g}  "
              f"= 1 - (1 - {args.actions}^-{args.horizon})^{report['evaluations']}")
    if args.plot:
        from pathlib import Path

        out = Path(args.plot)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_nchain(out, args.samples, args.trials, args.seed)
        print(f"mrsq: wrote {out}")
    return 0
