"""`mrsq diagnose overestimation`: a search's bias where the true values are exact, against its
analytic expectation, and the min over K pulling it back; the N-chain with other planners."""

from __future__ import annotations

import json
import math

import pytest
import torch

import mrsq.planners  # noqa: F401
from mrsq.critics.aggregators import build_aggregator
from mrsq.overestimation import NoisyValueModel, Setting, aggregator_spec, expected_max, hashed_normal, run


def test_hashed_errors_are_standard_normal_fixed_per_state_and_independent():
    z = torch.rand(20_000, 4)
    e = hashed_normal(z, 3, seed=0)
    assert e.shape == (3, 20_000)
    assert e.mean(1).abs().max() < 0.03 and (e.var(1) - 1).abs().max() < 0.04
    corr = torch.corrcoef(e)
    assert (corr - torch.eye(3)).abs().max() < 0.03  # members independent
    assert torch.equal(hashed_normal(z[:7], 3, seed=0), e[:, :7])  # a fixed function of the state
    nearby = z.clone()
    nearby[:, 2] = torch.nextafter(nearby[:, 2], torch.tensor(2.0))  # one ulp away: a distinct state
    assert torch.corrcoef(torch.stack([e[0], hashed_normal(nearby, 1, seed=0)[0]]))[0, 1].abs() < 0.03
    assert torch.corrcoef(torch.stack([e[0], hashed_normal(z, 1, seed=1)[0]]))[0, 1].abs() < 0.03


def test_model_tracks_the_history_and_scores_the_truth_exactly():
    agg = build_aggregator(aggregator_spec({"type": "mean"}))
    model = NoisyValueModel(horizon=2, action_dim=1, members=3, noise=0.0, aggregate=agg, reward_scale=1.0)
    z = model.encode(torch.zeros(1, 1))
    r0, _, z = model.step(z, torch.tensor([[0.5]]))
    r1, _, z = model.step(z, torch.tensor([[-0.2]]))
    torch.testing.assert_close(z, torch.tensor([[2.0, 0.5, -0.2]]))
    assert r0.item() == pytest.approx(-(0.2 ** 2)) and r1.item() == pytest.approx(-(0.5 ** 2))
    assert model.true_value(torch.tensor([[0.5], [-0.2]])) == pytest.approx(-(0.04 + 0.25))


# Cases chosen to test the exact expectation: one-shot search, flat truth, noise std 1.
ANALYTIC = [({"type": "min"}, 1, 16), ({"type": "mean"}, 10, 64), ({"type": "min"}, 10, 64),
            ({"type": "min_of_k", "k": 2}, 10, 64), ({"type": "max"}, 3, 8)]


@pytest.mark.parametrize("agg,members,m", ANALYTIC, ids=[f"{a['type']}-K{k}-m{m}" for a, k, m in ANALYTIC])
def test_one_shot_bias_matches_its_analytic_expectation(agg, members, m):
    r = run(Setting(samples=m, members=members, aggregator=agg, trials=400, seed=3))
    assert r["analytic_bias"] is not None
    assert abs(r["bias"] - r["analytic_bias"]) < r["bias_ci"], r  # inside the 95% interval
    assert r["regret"] == 0  # flat truth: nothing to lose


def test_expected_max_by_hand():
    assert expected_max(1, "min", 1) == pytest.approx(0.0, abs=1e-6)
    assert expected_max(2, "min", 1) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-5)  # E max of 2 N(0,1)
    assert expected_max(1, "min", 2) == pytest.approx(-1 / math.sqrt(math.pi), rel=1e-5)  # E min of 2
    assert expected_max(4, "mean", 4) == pytest.approx(expected_max(4, "min", 1) / 2, rel=1e-5)
    assert expected_max(5, "mean_minus_std", 10) is None


def test_min_over_more_members_lowers_the_bias_on_the_same_draws():
    """Member k's errors do not depend on K and random shooting draws the same candidates under
    one seed: on the flat truth every trial's bias (the largest aggregated error) falls weakly as
    K grows; on the quadratic truth (where the chosen plan changes with K) the mean does."""
    flat = [run(Setting(samples=64, horizon=2, members=k, aggregator={"type": "min"}, trials=150, seed=5))
            for k in (1, 2, 5, 10)]
    for a, b in zip(flat, flat[1:]):
        assert all(x >= y - 1e-6 for x, y in zip(a["per_trial_bias"], b["per_trial_bias"]))
        assert a["bias"] > b["bias"]
    quadratic = [run(Setting(samples=64, horizon=2, members=k, aggregator={"type": "min"}, trials=150, seed=5,
                             truth="quadratic"))["bias"] for k in (1, 2, 5, 10)]
    assert quadratic == sorted(quadratic, reverse=True) and quadratic[0] > 0.5 and quadratic[-1] < 0, quadratic


def test_bias_grows_with_the_number_of_plans_scored():
    biases = [run(Setting(samples=m, members=1, trials=200, seed=1))["bias"] for m in (1, 8, 64)]
    assert biases[0] < biases[1] < biases[2]


@pytest.mark.parametrize("planner", ["mppi", "cem", "icem"])
def test_iterative_planners_are_measured(planner):
    """Each planner's evaluations are counted, and its second iteration lowers the regret of the
    executed plan on the same draws (measured: MPPI 1.85 -> 0.96, CEM 0.80 -> 0.36, iCEM 0.66 -> 0.27)."""
    one, two = (run(Setting(planner=planner, samples=32, horizon=3, members=5, truth="quadratic", trials=20,
                            planner_fields={"iterations": n})) for n in (1, 2))
    if planner in ("mppi", "cem"):
        assert (one["evaluations"], two["evaluations"]) == (32, 64)  # iterations x samples (no policy rollouts)
    else:  # iCEM: a shrinking population plus kept elites and the mean
        assert 32 < one["evaluations"] < two["evaluations"] < 2 * one["evaluations"]
    assert math.isfinite(two["bias"]) and 0 <= two["regret"] < one["regret"]


def test_cli_json_and_errors(mrsq_main):
    code, out, _ = mrsq_main("diagnose", "overestimation", "--samples", "16", "--members", "1", "--trials", "50",
                             "--json")
    assert code == 0
    r = json.loads(out)
    assert r["samples"] == 16 and r["analytic_bias"] == pytest.approx(expected_max(16, "min", 1))
    for argv, message in ((["--aggregator", "{type: bogus}"], "unknown aggregator"),
                          (["--planner", "icem", "--set", "beta=-1"], "beta"),
                          (["--planner", "icem", "--set", "keep_fraction=1.5"], "keep_fraction"),
                          (["--planner", "icem", "--set", "num_elites=40"], "2 x num_elites"),
                          (["--planner", "nope"], "unknown planner")):
        code, _, err = mrsq_main("diagnose", "overestimation", "--trials", "5", *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ N-chain, planners
def test_nchain_planners_count_their_evaluations_and_compare_with_the_formula(mrsq_main):
    from mrsq.diagnose import analytic_success, nchain_report

    r = nchain_report(4, 2, 16, 60, planner="mppi", fields={"iterations": 3})
    assert r["evaluations"] == 3 * 16 and r["analytic"] == pytest.approx(analytic_success(4, 2, 48))
    assert 0 <= r["ci_low"] <= r["empirical"] <= r["ci_high"] <= 1
    icem = nchain_report(2, 1, 16, 30, planner="icem", fields={"iterations": 2, "num_elites": 4})
    assert icem["empirical"] == 1.0  # 2 choices, 16 samples: always found, and executed (the best)
    code, out, _ = mrsq_main("diagnose", "nchain", "--planner", "cem", "--set", "iterations=2", "--samples", "8",
                             "--trials", "10", "--table")
    assert code == 0 and out.count("| cem |") == 3 and "n=10" in out
