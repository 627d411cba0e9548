"""``mrsq diagnose overestimation``: search's overestimation where the truth is known exactly.

The paper's first two mechanisms in one setting. A search scores many candidate plans with a
learned value and executes the best-looking one; when the learned value is the true value plus
independent errors, the best-looking plan is preferentially one whose error is large and
positive, so the search's estimate of the plan it picks exceeds that plan's true value, and more
so the more candidates it scores. An ensemble's minimum over K members pulls the estimate back.

The model (:class:`NoisyValueModel`) is a tree whose states carry the whole action history
(``z_t = [t, a_0, ..., a_{t-1}]``), so every distinct candidate ends in a distinct state and its
errors are drawn independently of every other candidate's. Rewards are exact: ``r(a) =
-scale * ||a - a*||^2 / A`` (``truth: flat`` sets the scale to 0: every plan is worth 0). The
terminal value of each of the K members is the true one (0) plus ``noise * eps_k(z_H)``, with
``eps`` a standard normal that is a fixed function of the state and the member (a hash of the
history's bits: scoring a plan twice gives the same errors, as a trained critic would), and the
planner sees the members through the aggregator it is given (mean, min, min_of_k, ...).

Per trial (a fresh error draw): one search from the root; the search's own score of the plan it
executes (``planner.last_value``) minus that plan's true value is the **bias**, the best true
value minus the executed plan's is the **regret**. For one-shot search (random shooting) on the
flat truth the bias has an exact expectation: ``discount^H E[max of m iid aggregated errors]``,
computed here by numerical integration for the aggregators whose per-plan distribution is known
(mean of K: ``N(0, s^2/K)``; min of K; min of k drawn; max; one member).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mrsq.critics.aggregators import build_aggregator

_MASK53 = (1 << 53) - 1
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB


def _finalize(h: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping arithmetic; logical shifts via masks)."""
    h = (h ^ ((h >> 30) & ((1 << 34) - 1))) * _MIX1
    h = (h ^ ((h >> 27) & ((1 << 37) - 1))) * _MIX2
    return h ^ ((h >> 31) & ((1 << 33) - 1))


def hashed_normal(z: torch.Tensor, members: int, seed: int) -> torch.Tensor:
    """Standard normal draws ``[K, B]``, a fixed function of each row of ``z [B, D]`` (fp32), the
    member index and ``seed``: equal rows give equal draws, distinct rows independent ones (up to
    the hash's quality, checked in the tests). Box-Muller on two hashed 53-bit uniforms.

    Hand-written: torch's generators draw by position, not by content, and a table of draws
    cannot cover a continuous action space."""
    bits = z.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # [B, D]
    h = torch.full((z.shape[0],), seed, dtype=torch.int64) * _GOLDEN
    for j in range(bits.shape[1]):
        h = _finalize(h ^ (bits[:, j] + torch.tensor(j, dtype=torch.int64) * _GOLDEN))
    k = torch.arange(members, dtype=torch.int64)[:, None]  # [K, 1]
    h1 = _finalize(h[None] ^ ((2 * k + 1) * _GOLDEN))
    h2 = _finalize(h1 ^ _GOLDEN)
    u1 = (((h1 >> 11) & _MASK53).double() + 1.0) / float(1 << 53)  # (0, 1]
    u2 = ((h2 >> 11) & _MASK53).double() / float(1 << 53)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).float()


class NoisyValueModel:
    """A :class:`~mrsq.planners.base.PlanningModel` with exact rewards and noisy member values.

    ``z [B, 1 + H*A]``: the step index, then the actions taken so far (zeros after). The policy
    acts 0 (the planners' policy rollouts are off in this diagnostic unless asked for).
    ``aggregate`` is a :class:`~mrsq.critics.aggregators.BoundAggregator` over ``[K, B, 1]``."""

    episodic = False

    def __init__(self, horizon: int, action_dim: int, members: int, noise: float, aggregate, seed: int = 0,
                 reward_scale: float = 1.0, optimum: float = 0.3, discount: float = 1.0) -> None:
        self.horizon, self.action_dim, self.members, self.noise = horizon, action_dim, members, noise
        self.aggregate, self.seed, self.reward_scale, self.discount = aggregate, seed, reward_scale, discount
        self.optimum = torch.full((action_dim,), optimum)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.reshape(-1, obs.shape[-1]).shape[0], 1 + self.horizon * self.action_dim)

    def reward(self, a: torch.Tensor) -> torch.Tensor:
        return -self.reward_scale * (a - self.optimum).square().mean(-1, keepdim=True)

    def step(self, z: torch.Tensor, a: torch.Tensor):
        t = z[:, 0].long()
        cols = 1 + t[:, None] * self.action_dim + torch.arange(self.action_dim)  # [B, A]
        nxt = z.clone().scatter_(1, cols.clamp(max=z.shape[1] - 1), a.float())
        nxt[:, 0] = z[:, 0] + 1
        return self.reward(a), torch.zeros(z.shape[0], 1), nxt

    def policy(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], self.action_dim)

    def member_values(self, z: torch.Tensor) -> torch.Tensor:
        """Every member's value at ``z``: true (0) + noise x eps ``[K, B, 1]``."""
        return (self.noise * hashed_normal(z, self.members, self.seed))[..., None]

    def value(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.member_values(z))

    def true_value(self, sequence: torch.Tensor) -> float:
        """The exact value of ``sequence [H, A]`` (its discounted rewards; the true terminal value is 0)."""
        rewards = self.reward(sequence.float())[:, 0]
        return float((rewards * self.discount ** torch.arange(len(rewards))).sum())


# ------------------------------------------------------------------------------ the analytic case
def _per_plan_cdf(aggregator: str, members: int, k: int | None):
    """CDF of one plan's aggregated error in units of the noise std, or None if not known."""
    from scipy.stats import norm

    if aggregator == "mean":
        return lambda x: norm.cdf(x * math.sqrt(members))
    if aggregator in ("min", "min_of_k", "subset"):
        n = members if aggregator == "min" else k
        return lambda x: 1 - norm.sf(x) ** n
    if aggregator == "max":
        return lambda x: norm.cdf(x) ** members
    if aggregator == "first" or (aggregator == "mean_of_k" and k is not None):
        n = 1 if aggregator == "first" else k
        return lambda x: norm.cdf(x * math.sqrt(n))
    return None


def expected_max(samples: int, aggregator: str, members: int, k: int | None = None) -> float | None:
    """``E[max of m iid aggregated errors]`` for unit noise (multiply by the noise std), by
    numerical integration of ``E[X] = int_0^inf (1 - F^m) - int_-inf^0 F^m``; None when the
    aggregator's per-plan distribution has no closed form here (mean_minus_std)."""
    cdf = _per_plan_cdf(aggregator, members, k)
    if cdf is None:
        return None
    x = np.linspace(-12, 12, 200_001)
    fm = cdf(x) ** samples
    dx = x[1] - x[0]
    pos, neg = x >= 0, x <= 0  # both halves end at the grid point 0
    return float(np.trapezoid(1 - fm[pos], dx=dx) - np.trapezoid(fm[neg], dx=dx))


# ------------------------------------------------------------------------------ the experiment
@dataclass
class Setting:
    planner: str = "random_shooting"
    samples: int = 64
    horizon: int = 1
    members: int = 10
    aggregator: dict | None = None  # an aggregator spec mapping; None: {"type": "min"}
    noise: float = 1.0
    truth: str = "flat"  # flat: every plan is worth 0; quadratic: r(a) = -||a - 0.3||^2 / A
    action_dim: int = 1
    trials: int = 500
    seed: int = 0
    planner_fields: dict | None = None  # more planner spec fields (num_elites, iterations, ...)


def build_planner(setting: Setting):
    from mrsq.registry import PLANNERS

    fields = {"num_samples": setting.samples, "horizon": setting.horizon, **(setting.planner_fields or {})}
    spec_cls = PLANNERS.spec(setting.planner)
    if "num_policy_trajectories" in spec_cls.model_fields:  # the diagnostic's policy is a neutral 0
        fields.setdefault("num_policy_trajectories", 0)
    if "num_elites" in spec_cls.model_fields:
        cap = setting.samples // 2 if setting.planner == "icem" else setting.samples
        fields.setdefault("num_elites", max(1, min(spec_cls.model_fields["num_elites"].default, cap)))
    spec = spec_cls.model_validate({"type": setting.planner, **fields})
    return PLANNERS.get(setting.planner)(spec, setting.action_dim)


def aggregator_spec(mapping: dict | None):
    from mrsq.registry import AGGREGATORS

    mapping = dict(mapping or {"type": "min"})
    return AGGREGATORS.spec(mapping["type"]).model_validate(mapping)


@torch.no_grad()
def run(setting: Setting) -> dict:
    """``trials`` searches, each on a fresh error draw -> bias and regret (mean, 95% interval),
    the analytic expectation where there is one, and the sequences scored per search."""
    agg_spec = aggregator_spec(setting.aggregator)
    aggregate = build_aggregator(agg_spec)
    planner = build_planner(setting)
    scale = 0.0 if setting.truth == "flat" else 1.0
    torch.manual_seed(setting.seed)
    bias, regret = np.empty(setting.trials), np.empty(setting.trials)
    obs = torch.zeros(1, 1)
    for i in range(setting.trials):
        model = NoisyValueModel(setting.horizon, setting.action_dim, setting.members, setting.noise, aggregate,
                                seed=setting.seed * 1_000_003 + i, reward_scale=scale)
        planner.reset()
        planner.plan(model, obs, first=True, explore=False)
        true = model.true_value(planner.last_sequence)
        bias[i] = float(planner.last_value) - true
        regret[i] = 0.0 - true  # the optimum (a* inside the box at every step) is worth 0
    half = lambda v: 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")  # noqa: E731
    k = getattr(agg_spec, "k", None)
    analytic = None
    one_shot = setting.planner == "random_shooting" and setting.truth == "flat"
    if one_shot:
        m = planner.spec.num_samples
        unit = expected_max(m, agg_spec.type, setting.members, k)
        analytic = None if unit is None else unit * setting.noise * (1.0 ** setting.horizon)
    evaluations = (planner.evaluations_per_action() if hasattr(planner, "evaluations_per_action")
                   else planner.spec.num_samples)
    return {**asdict(setting), "aggregator": agg_spec.model_dump(), "evaluations": evaluations,
            "bias": float(bias.mean()), "bias_ci": float(half(bias)), "bias_std": float(bias.std(ddof=1)),
            "regret": float(regret.mean()), "regret_ci": float(half(regret)), "analytic_bias": analytic,
            "per_trial_bias": bias.tolist()}


def summary_line(r: dict) -> str:
    agg = r["aggregator"]
    name = agg["type"] + "".join(f" {k}={v}" for k, v in agg.items() if k != "type")
    line = (f"{r['planner']:<16} m={r['samples']:<5} H={r['horizon']} K={r['members']:<3} {name:<16} "
            f"evals={r['evaluations']:<6} bias {r['bias']:+.3f} +- {r['bias_ci']:.3f}  regret {r['regret']:.3f} "
            f"+- {r['regret_ci']:.3f}")
    if r["analytic_bias"] is not None:
        line += f"  analytic {r['analytic_bias']:+.3f}"
    return line


# ------------------------------------------------------------------------------ the figure
def study(trials: int = 400, seed: int = 0) -> dict:
    """The two panels' data: (a) one-shot search on the flat truth, bias against m for the
    single critic, the mean and the min of K in {2, 5, 10}, beside the analytic curves; (b) each
    planner at horizon 3 on the quadratic truth, bias and regret against K (min)."""
    one_shot = []
    for m in (1, 4, 16, 64, 256, 1024):
        for members, agg in ((1, "min"), (10, "mean"), (2, "min"), (5, "min"), (10, "min")):
            one_shot.append(run(Setting(samples=m, members=members, aggregator={"type": agg}, trials=trials, seed=seed)))
    planners = []
    for planner, fields in (("random_shooting", {}), ("mppi", {"iterations": 6}), ("cem", {"iterations": 6}),
                            ("icem", {"iterations": 6})):
        for members in (1, 2, 5, 10):
            planners.append(run(Setting(planner=planner, samples=128, horizon=3, members=members, truth="quadratic",
                                        aggregator={"type": "min"}, trials=trials, seed=seed,
                                        planner_fields=fields or None, action_dim=1)))
    return {"one_shot": one_shot, "planners": planners}


def plot(data: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    groups: dict = {}
    for r in data["one_shot"]:
        groups.setdefault((r["members"], r["aggregator"]["type"]), []).append(r)
    for i, ((members, agg), rows) in enumerate(groups.items()):
        label = "1 critic" if members == 1 else f"{agg} of {members}"
        ms = [r["samples"] for r in rows]
        ax1.errorbar(ms, [r["bias"] for r in rows], yerr=[r["bias_ci"] for r in rows], fmt="o", ms=3,
                     color=f"C{i}", capsize=2, label=f"{label} (measured)")
        ax1.plot(ms, [r["analytic_bias"] for r in rows], "--", color=f"C{i}", lw=1)
    ax1.set_xscale("log")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_xlabel("plans scored m (one-shot search)")
    ax1.set_ylabel("estimate - true value of the chosen plan")
    ax1.set_title("(a) bias grows with m; the min over K pulls it back\n(dashed: exact expectation)", fontsize=9)
    ax1.legend(fontsize=7)
    by_planner: dict = {}
    for r in data["planners"]:
        by_planner.setdefault(r["planner"], []).append(r)
    for i, (name, rows) in enumerate(by_planner.items()):
        ks = [r["members"] for r in rows]
        ax2.errorbar(ks, [r["bias"] for r in rows], yerr=[r["bias_ci"] for r in rows], fmt="-o", ms=3,
                     color=f"C{i}", capsize=2, label=f"{name} bias ({rows[0]['evaluations']} evals)")
        ax2.plot(ks, [r["regret"] for r in rows], ":", color=f"C{i}", lw=1.2, label=f"{name} true regret")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_xlabel("critics K (planner aggregator: min over K)")
    ax2.set_title("(b) planners at H=3, quadratic truth, noise std 1", fontsize=9)
    ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args, fields: dict | None = None) -> int:
    """``mrsq diagnose overestimation`` (:func:`mrsq.diagnose.main` checks ``--planner`` and parses
    ``--set`` into ``fields`` first, and turns spec errors into one line)."""
    import yaml

    from mrsq.errors import UsageError
    from mrsq.registry import AGGREGATORS, unknown_message

    try:
        agg = yaml.safe_load(args.aggregator)
    except yaml.YAMLError as exc:
        raise UsageError(f"--aggregator {args.aggregator!r}: not a name or a YAML mapping ({exc})") from None
    agg = {"type": agg} if isinstance(agg, str) else agg
    if not isinstance(agg, dict) or agg.get("type") not in AGGREGATORS:
        raise UsageError(f"--aggregator {args.aggregator!r}: "
                         f"{unknown_message('aggregator', (agg or {}).get('type') if isinstance(agg, dict) else agg, AGGREGATORS.names())}")
    for name, least in (("samples", 1), ("horizon", 1), ("members", 1), ("trials", 2)):
        if getattr(args, name) < least:
            raise UsageError(f"--{name} must be at least {least} (got {getattr(args, name)})")
    if args.noise < 0:
        raise UsageError(f"--noise must be >= 0 (got {args.noise})")
    setting = Setting(planner=args.planner, samples=args.samples, horizon=args.horizon, members=args.members,
                      aggregator=agg, noise=args.noise, truth=args.truth, trials=args.trials, seed=args.seed,
                      planner_fields=fields)
    result = run(setting)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_trial_bias"}))
    else:
        print(summary_line(result))
    if args.plot:
        from pathlib import Path

        out = Path(args.plot)
        out.parent.mkdir(parents=True, exist_ok=True)
        data = study(trials=args.trials, seed=args.seed)
        plot(data, out)
        out.with_suffix(".json").write_text(json.dumps(
            {k: [{kk: vv for kk, vv in r.items() if kk != "per_trial_bias"} for r in v] for k, v in data.items()},
            indent=1) + "\n")
        print(f"mrsq: wrote {out} and {out.with_suffix('.json')}")
    return 0
