"""The N-chain env, its true model, and `mrsq diagnose nchain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mrsq.cli import main
from mrsq.diagnose import analytic_success, nchain_report
from mrsq.envs import EnvError, make_env
from mrsq.envs.nchain import NChainModel, choice_of
from mrsq.planners.sampling import trajectory_value


def _action_for(choice: int, num_actions: int) -> np.ndarray:
    return np.array([-1 + (2 * choice + 1) / num_actions], np.float32)  # the bin's centre


def test_action_bins_split_the_box_evenly():
    a = np.array([-1.0, -0.51, -0.49, 0.0, 0.49, 0.51, 1.0])
    np.testing.assert_array_equal(choice_of(a, 4), [0, 0, 1, 2, 2, 3, 3])
    torch.testing.assert_close(choice_of(torch.tensor(a), 4), torch.tensor([0, 0, 1, 2, 2, 3, 3]))
    # uniform actions pick each choice with probability 1/A
    counts = np.bincount(choice_of(np.random.default_rng(0).uniform(-1, 1, 40_000), 10), minlength=10)
    assert np.all(np.abs(counts / 40_000 - 0.1) < 0.01)


def test_only_the_rewarded_sequence_pays():
    env = make_env("nchain:3-4", seed=5)
    assert (env.obs_dim, env.action_dim, env.max_episode_steps) == (6, 1, 4)
    assert np.array_equal(env.target, make_env("nchain:3-4", seed=99).target)  # fixed by (A, n)
    paid = 0
    for seq in np.ndindex(3, 3, 3, 3):
        env.reset()
        total, done, steps = 0.0, False, 0
        for c in seq:
            _, r, done, truncated = env.step(_action_for(c, 3))
            total += r
            steps += 1
        assert done and not truncated and steps == 4
        paid += total == 1.0
        assert total == float(tuple(seq) == tuple(env.target))
    assert paid == 1


def test_true_model_scores_like_the_env():
    env = make_env("nchain:4-3", seed=0)
    model = NChainModel(env.target, 4)
    seqs = torch.tensor([[_action_for(c, 4)[0] for c in seq] for seq in np.ndindex(4, 4, 4)])[..., None]
    values = trajectory_value(model, model.encode(torch.as_tensor(env.reset())[None]), seqs)[:, 0]
    assert values.sum() == 1.0
    assert tuple(choice_of(seqs[values.argmax(), :, 0], 4).tolist()) == tuple(env.target)


def test_analytic_rate_at_known_points():
    assert analytic_success(10, 10, 1000) == pytest.approx(1e-7, rel=1e-3)
    assert analytic_success(4, 3, 16) == pytest.approx(1 - (63 / 64) ** 16)
    assert analytic_success(4, 3, 16) == pytest.approx(0.2227, abs=1e-4)
    assert analytic_success(2, 1, 1) == 0.5


@pytest.mark.parametrize("a,n,m", [(4, 3, 16), (2, 4, 8), (10, 2, 50)])
def test_empirical_rate_falls_inside_its_interval(a, n, m):
    r = nchain_report(a, n, m, trials=2000, seed=1)
    assert r["ci_low"] <= r["analytic"] <= r["ci_high"], r
    assert r["ci_low"] <= r["empirical"] <= r["ci_high"]


def test_diagnose_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "nchain.png"
    assert main(["diagnose", "nchain", "--actions", "4", "--horizon", "3", "--samples", "16", "--trials", "300",
                 "--seed", "2", "--json", "--plot", str(png)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    report = json.loads(line)
    assert {"empirical", "analytic", "ci_low", "ci_high", "trials"} <= set(report)
    assert report["trials"] == 300
    assert report["analytic"] == pytest.approx(analytic_success(4, 3, 16))  # the formula at the CLI's arguments
    assert report["ci_low"] <= report["analytic"] <= report["ci_high"], report  # and the run agrees with it
    assert png.stat().st_size > 10_000


def test_bad_nchain_ids_and_arguments_are_user_errors(capsys):
    with pytest.raises(EnvError, match="nchain:<A>-<n>"):
        make_env("nchain:1-3", 0)
    with pytest.raises(EnvError, match="nchain:<A>-<n>"):
        make_env("nchain:four", 0)
    assert main(["diagnose", "nchain", "--trials", "0"]) == 2
    assert "--trials must be at least 1" in capsys.readouterr().err
