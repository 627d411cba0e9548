"""The paper's diagnostics: value error against the realised return, policy-vs-search divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrsq.envs.base import Env
from mrsq.planners.policy import PolicyPlanner, PolicyPlannerSpec
from mrsq.training.diagnostics import counted_states, discounted_returns, value_error_stats
from mrsq.training.loop import evaluate

from tests.test_fast_paths import make


# ------------------------------------------------------------------------------ by hand
def test_discounted_returns_by_hand():
    g = discounted_returns(np.array([1.0, 2.0, 3.0]), 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])


def test_truncated_tails_are_cut_terminated_episodes_kept_whole():
    assert counted_states(1000, terminated=True, gamma=0.99) == 1000
    k = math.ceil(math.log(0.01) / math.log(0.99))
    assert k == 459 and 0.99 ** k <= 0.01 < 0.99 ** (k - 1)
    assert counted_states(1000, terminated=False, gamma=0.99) == 1000 - 459 + 1
    assert counted_states(200, terminated=False, gamma=0.99) == 0  # too short to trust any state
    assert counted_states(10, terminated=False, gamma=0.5, tail_weight=0.25) == 9  # k = 2


def test_value_error_stats_by_hand():
    q, g = np.array([11.0, 8.0, 0.5]), np.array([10.0, 10.0, 0.2])
    s = value_error_stats(q, g, member_std=np.array([1.0, 2.0, 3.0]), eps=1.0)
    # percents: +10, -20, and 100 * 0.3 / max(0.2, 1) = +30
    assert s["value_error_pct"] == pytest.approx((10 - 20 + 30) / 3)
    assert s["value_error_abs"] == pytest.approx((1 + 2 + 0.3) / 3)
    assert s["value_bias"] == pytest.approx((1 - 2 + 0.3) / 3)
    assert s["overestimation_frac"] == pytest.approx(2 / 3)
    assert s["q_member_std"] == pytest.approx(2.0)
    assert s["value_states"] == 3
    empty = value_error_stats(np.zeros(0), np.zeros(0))
    assert empty["value_states"] == 0 and math.isnan(empty["value_error_pct"])


# ------------------------------------------------------------------------------ a constructed case
class FixedRewardChain(Env):
    """Reward 1 per step; terminates after ``length`` steps; the observation is the step index."""

    env_id, obs_dim, action_dim = "test:chain", 1, 1

    def __init__(self, length: int) -> None:
        self.max_episode_steps, self._t = length, 0

    def reset(self, seed=None):
        self._t = 0
        return np.array([0.0], np.float32)

    def step(self, action):
        self._t += 1
        return np.array([self._t], np.float32), 1.0, self._t >= self.max_episode_steps, False


class BiasedCritic:
    """Knows the chain's true value and reports it times (1 + bias); acts with 0."""

    def __init__(self, length: int, gamma: float, bias: float) -> None:
        self.length, self.gamma, self.bias = length, gamma, bias
        self.planner = PolicyPlanner(PolicyPlannerSpec(), 1)

    def act(self, obs, explore=False, first=False):
        return np.zeros(1, np.float32)

    def value_estimate(self, obs, action):
        remaining = self.length - obs[:, 0].double()
        true = (1 - self.gamma ** remaining) / (1 - self.gamma)
        return (1 + self.bias) * true, torch.full_like(true, 0.5)

    def pop_divergence(self, explore):
        return 0.0

    @property
    def spec(self):
        return type("S", (), {"discount": self.gamma})()


@pytest.mark.parametrize("bias", [0.25, -0.1, 0.0])
def test_a_critic_biased_by_a_known_amount_shows_exactly_that_bias(bias):
    env, agent = FixedRewardChain(30), BiasedCritic(30, 0.9, bias)
    d = evaluate(agent, env, episodes=2).diagnostics
    assert d["value_states"] == 60  # terminated episodes: every state counts
    assert d["value_error_pct"] == pytest.approx(100 * bias, abs=1e-9)
    if bias:  # (unbiased, Q and G agree only to rounding)
        assert d["overestimation_frac"] == (1.0 if bias > 0 else 0.0)
    true = (1 - 0.9 ** np.arange(30, 0, -1)) / 0.1
    assert d["value_bias"] == pytest.approx(bias * true.mean(), abs=1e-9)
    assert d["q_member_std"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------ the real agent
def test_value_estimate_is_the_target_aggregate_in_return_units():
    spec, env, agent = make("mrsq_small")  # 5 critics, target aggregator: min
    agent.reward_scale = 3.0
    with torch.no_grad():  # online and target networks apart, so using the targets would show
        for p in [*agent.encoder.parameters(), *agent.critic.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.equal(next(agent.critic.parameters()), next(agent.critic_target.parameters()))
    obs, act = torch.randn(7, env.obs_dim), torch.rand(7, env.action_dim) * 2 - 1
    q, std = agent.value_estimate(obs, act)
    with torch.no_grad():
        members = agent.critic(agent.encoder.zsa(agent.encoder.zs(obs), act))[:, :, 0]  # [N, T]
    assert members.shape[0] == 5
    torch.testing.assert_close(q, 3.0 * members.min(0).values)
    torch.testing.assert_close(std, 3.0 * members.std(0))


def test_eval_value_columns_on_a_real_agent():
    spec, env, agent = make("mrq_small")
    d = evaluate(agent, env, episodes=1).diagnostics  # fake:point2: 50 steps, truncated, gamma .99
    assert d["value_states"] == 0 and math.isnan(d["value_error_pct"])  # too short to trust any G
    assert d["search_divergence"] == 0.0


# ------------------------------------------------------------------------------ divergence
def test_divergence_is_exactly_zero_for_the_policy_planner_and_positive_for_mppi():
    for preset, zero in (("mrq_small", True), ("mrsq_small", False)):
        spec, env, agent = make(preset)
        obs, first = env.reset(), True
        for _ in range(5):
            obs, *_ = env.step(agent.act(obs, explore=True, first=first))
            first = False
        train = agent.pop_divergence(explore=True)
        assert (train == 0.0) if zero else (train > 0), (preset, train)
        assert math.isnan(agent.pop_divergence(explore=True))  # popped: nothing since
        assert math.isnan(agent.pop_divergence(explore=False))  # evaluation acts are kept apart
        agent.act(obs, explore=False)
        ev = agent.pop_divergence(explore=False)
        assert (ev == 0.0) if zero else (ev > 0)


def test_divergence_is_the_mean_squared_action_gap():
    spec, env, agent = make("mrsq_small")
    obs = env.reset()
    seen = []
    original = agent.planner.plan
    agent.planner.plan = lambda *a, **k: seen.append(original(*a, **k)) or seen[-1]
    agent.act(obs, explore=False, first=True)
    view = agent.acting_view()
    with torch.no_grad():
        pi = view.policy(view.encode(torch.as_tensor(obs).reshape(1, -1)))[0]
    expected = (seen[0] - pi).square().mean().item()
    assert agent.pop_divergence(explore=False) == pytest.approx(expected, rel=1e-6)
