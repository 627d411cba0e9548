"""The sampling planners (MPPI, CEM, random shooting) on hand-written planning models."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import mrsq.planners  # noqa: F401  (registration)
from mrsq.planners.cem import CEMPlanner, CEMSpec
from mrsq.planners.icem import ICEMPlanner, ICEMSpec
from mrsq.planners.mppi import MPPIPlanner, MPPISpec
from mrsq.planners.random_shooting import RandomShootingPlanner, RandomShootingSpec
from mrsq.planners.sampling import shift_mean, trajectory_value, weighted_stats
from mrsq.registry import PLANNERS
from mrsq.testing import QuadraticModel, plan_steps

A_STAR = [0.3, -0.5]
OBS = torch.zeros(2)


def _run(planner, model, calls: int) -> torch.Tensor:
    return plan_steps(planner, model, OBS, calls)


# ------------------------------------------------------------------------------ convergence
@pytest.mark.parametrize("make", [lambda: MPPIPlanner(MPPISpec(), 2), lambda: CEMPlanner(CEMSpec(), 2),
                                  lambda: CEMPlanner(CEMSpec(action="mean"), 2)], ids=["mppi", "cem", "cem_mean"])
def test_iterative_planners_reach_the_optimum(make):
    model, planner = QuadraticModel(A_STAR), make()
    action = _run(planner, model, calls=4)
    assert action.shape == (2,)
    assert torch.allclose(action, model.a_star, atol=0.1), action
    assert torch.allclose(planner.mean, model.a_star.expand(3, 2), atol=0.1), planner.mean


def test_random_shooting_gets_close_with_many_samples():
    model = QuadraticModel(A_STAR)
    planner = RandomShootingPlanner(RandomShootingSpec(horizon=1, num_samples=4096), 2)
    action = planner.plan(model, OBS, first=True)
    assert torch.allclose(action, model.a_star, atol=0.1), action
    assert (action.abs() <= 1).all()


def test_large_action_dims_get_extra_iterations():
    assert MPPIPlanner(MPPISpec(), 19).iterations == 6
    assert MPPIPlanner(MPPISpec(), 20).iterations == 8
    assert CEMPlanner(CEMSpec(extra_iterations_large_action=0), 21).iterations == 6


# ------------------------------------------------------------------------------ warm start
def test_warm_start_shifts_the_previous_mean(monkeypatch):
    model = QuadraticModel(A_STAR)
    planner = MPPIPlanner(MPPISpec(num_samples=64, num_elites=8, num_policy_trajectories=4), 2)
    starts = []
    original = planner.initial_mean
    monkeypatch.setattr(planner, "initial_mean", lambda first=False: starts.append(original(first)) or starts[-1])

    planner.plan(model, OBS, first=True)
    assert torch.equal(starts[-1], torch.zeros(3, 2))
    stored = planner.mean.clone()
    assert stored.abs().sum() > 0
    planner.plan(model, OBS)
    expected = torch.cat([stored[1:], torch.zeros(1, 2)])
    assert torch.equal(starts[-1], expected)
    assert torch.equal(shift_mean(stored), expected)

    planner.plan(model, OBS, first=True)  # an episode start ignores the stored mean
    assert torch.equal(starts[-1], torch.zeros(3, 2))
    planner.reset()
    assert torch.equal(planner.mean, torch.zeros(3, 2))
    assert torch.equal(planner.initial_mean(first=False), torch.zeros(3, 2))


def test_mean_is_not_part_of_checkpoints():
    assert "mean" not in MPPIPlanner(MPPISpec(), 2).state_dict()


# ------------------------------------------------------------------------------ elite choice
@pytest.mark.parametrize("cls,spec_cls", [(MPPIPlanner, MPPISpec), (CEMPlanner, CEMSpec)])
def test_executed_action_is_the_first_action_of_an_elite(monkeypatch, cls, spec_cls):
    model = QuadraticModel(A_STAR)
    spec = spec_cls(iterations=1, num_samples=32, num_elites=4, num_policy_trajectories=2, horizon=2)
    planner = cls(spec, 2)
    sampled = []
    original = planner.sample
    monkeypatch.setattr(planner, "sample", lambda *args: sampled.append(original(*args)) or sampled[-1])

    for trial in range(5):
        sampled.clear()
        action = planner.plan(model, OBS, first=trial == 0)
        assert len(sampled) == 1 and sampled[0].shape == (30, 2, 2)
        policy_plan = torch.zeros(2, 2, 2)  # QuadraticModel's policy acts 0
        candidates = torch.cat([policy_plan, sampled[0]])
        values = trajectory_value(model, model.encode(OBS.reshape(1, -1)), candidates)[:, 0]
        elites = candidates[values.topk(4).indices]
        assert any(torch.equal(action, e[0]) for e in elites), (action, elites[:, 0])
        if cls is CEMPlanner:
            assert torch.equal(action, candidates[values.argmax(), 0])


def test_random_shooting_executes_the_best_sequence(monkeypatch):
    model = QuadraticModel(A_STAR)
    planner = RandomShootingPlanner(RandomShootingSpec(num_samples=50, num_policy_trajectories=1, horizon=2), 2)
    sampled = []
    original = planner.sample
    monkeypatch.setattr(planner, "sample", lambda *args: sampled.append(original(*args)) or sampled[-1])
    action = planner.plan(model, OBS)
    candidates = torch.cat([torch.zeros(1, 2, 2), sampled[0]])
    values = trajectory_value(model, model.encode(OBS.reshape(1, -1)), candidates)[:, 0]
    assert torch.equal(action, candidates[values.argmax(), 0])


# ------------------------------------------------------------------------------ aggregator
class LastActionModel(QuadraticModel):
    """``z' = a`` and ``pi(z) = z``: the terminal value sees the last planned action."""

    def step(self, z, a):
        reward = -(a - self.a_star).square().sum(-1, keepdim=True)
        return reward, torch.zeros_like(reward), a

    def policy(self, z):
        return z


def _optimistic_member(z, a):
    """Member 0: +1000 where a[0] > 0; member 1: 0. -> ``[2, B, 1]``."""
    bonus = 1000.0 * (a[:, :1] > 0).float()
    return torch.stack([bonus, torch.zeros_like(bonus)])


@pytest.mark.parametrize("cls,spec_cls", [(MPPIPlanner, MPPISpec), (CEMPlanner, CEMSpec), (ICEMPlanner, ICEMSpec)])
def test_terminal_value_uses_the_models_aggregator(cls, spec_cls):
    a_star = [-0.5, 0.3]
    spec = spec_cls(horizon=1)
    pessimist = LastActionModel(a_star, values=_optimistic_member, aggregate=lambda v: v.amin(0))
    optimist = LastActionModel(a_star, values=_optimistic_member, aggregate=lambda v: v.mean(0))
    cautious = _run(cls(spec, 2), pessimist, calls=3)
    assert torch.allclose(cautious, torch.tensor(a_star), atol=0.1), cautious
    lured = _run(cls(spec, 2), optimist, calls=3)
    assert lured[0] > 0, lured


# ------------------------------------------------------------------------------ trajectory value
class ScriptedModel:
    """1-d counter: ``z' = z + 1``, ``r = a * (z + 1)``, termination prob ``p`` on the first step
    only, terminal value ``10 z + a``, policy 0.5."""

    action_dim, discount = 1, 0.9

    def __init__(self, p: float, episodic: bool = True) -> None:
        self.p, self.episodic = p, episodic

    def encode(self, obs):
        return obs.reshape(obs.shape[0], -1)

    def step(self, z, a):
        reward = a * (z + 1)
        term = self.p * (z == 0).float()
        return reward, term, z + 1

    def policy(self, z):
        return torch.full_like(z, 0.5)

    def value(self, z, a):
        return 10 * z + a


@pytest.mark.parametrize("p,episodic", [(1.0, True), (0.5, True), (0.0, True), (1.0, False)])
def test_trajectory_value_matches_a_hand_computation(p, episodic):
    model = ScriptedModel(p, episodic)
    actions = torch.tensor([[[1.0], [2.0]], [[-1.0], [0.5]], [[0.0], [0.0]]])  # [N=3, H=2, A=1]
    got = trajectory_value(model, torch.zeros(1, 1), actions)
    alive = 1 - p if episodic else 1.0
    gamma = 0.9
    expected = []
    for a0, a1 in actions[:, :, 0].tolist():
        # r0 = a0 * 1, r1 = a1 * 2 (masked by survival), terminal value(z=2, pi=0.5) = 20.5
        expected.append(a0 + gamma * alive * 2 * a1 + gamma ** 2 * alive * 20.5)
    assert got.shape == (3, 1)
    assert torch.allclose(got[:, 0], torch.tensor(expected)), (got, expected)
    if p == 1.0 and episodic:  # termination at step 0 masks all later reward and the terminal value
        assert torch.allclose(got[:, 0], actions[:, 0, 0])


def test_weighted_stats():
    actions = torch.tensor([[[1.0]], [[3.0]]])
    mean, std = weighted_stats(actions, torch.tensor([0.25, 0.75]))
    assert torch.allclose(mean, torch.tensor([[2.5]]))
    assert torch.allclose(std, torch.tensor([[(0.25 * 1.5 ** 2 + 0.75 * 0.5 ** 2) ** 0.5]]))


# ------------------------------------------------------------------------------ specs, registry
@pytest.mark.parametrize("spec_cls", [MPPISpec, CEMSpec, ICEMSpec])
def test_spec_rejects_more_elites_than_samples(spec_cls):
    with pytest.raises(ValidationError, match="num_elites"):
        spec_cls(num_samples=32, num_elites=33, num_policy_trajectories=0)


@pytest.mark.parametrize("spec_cls", [MPPISpec, CEMSpec, RandomShootingSpec])
def test_spec_rejects_only_policy_trajectories(spec_cls):
    with pytest.raises(ValidationError, match="num_policy_trajectories"):
        spec_cls(num_samples=16, num_elites=4, num_policy_trajectories=16) if spec_cls is not RandomShootingSpec \
            else spec_cls(num_samples=16, num_policy_trajectories=16)


def test_spec_field_constraints():
    with pytest.raises(ValidationError, match="temperature"):
        MPPISpec(temperature=0)
    with pytest.raises(ValidationError, match="min_std"):
        CEMSpec(min_std=3.0, max_std=2.0)
    with pytest.raises(ValidationError, match="horizon"):
        RandomShootingSpec(horizon=0)


@pytest.mark.parametrize("name,fields", [
    ("mppi", {"num_samples": 32, "num_elites": 4, "num_policy_trajectories": 2, "iterations": 2}),
    ("cem", {"num_samples": 32, "num_elites": 4, "num_policy_trajectories": 2, "iterations": 2}),
    ("icem", {"num_samples": 32, "num_elites": 4, "num_policy_trajectories": 2, "iterations": 2}),
    ("mppi", {"num_samples": 32, "num_elites": 4, "num_policy_trajectories": 2, "iterations": 2, "center": "policy",
              "knots": 2}),
    ("random_shooting", {"num_samples": 32, "num_policy_trajectories": 2}),
])
def test_built_from_the_registry(name, fields):
    spec = PLANNERS.spec(name).model_validate({"type": name, **fields})
    planner = PLANNERS.get(name)(spec, 2)
    action = planner.plan(QuadraticModel(A_STAR), torch.zeros(1, 2), first=True, explore=False)
    assert action.shape == (2,) and (action.abs() <= 1).all() and torch.isfinite(action).all()
    planner.reset()


# ------------------------------------------------------------------------------ policy-prior noise
class _FeedbackModel:
    """z' = z + a, policy pi(z) = -z/2, reward -||a||^2: closed-loop rollouts are checkable by hand."""

    action_dim, discount, episodic = 2, 0.5, False

    def encode(self, obs):
        return obs.reshape(obs.shape[0], -1).float()

    def step(self, z, a):
        reward = -a.square().sum(-1, keepdim=True)
        return reward, torch.zeros_like(reward), z + a

    def policy(self, z):
        return -z / 2

    def value(self, z, a):
        return torch.zeros(z.shape[0], 1)


def test_noisy_policy_rollouts_are_closed_loop_and_scored():
    from mrsq.planners.sampling import policy_rollout

    model, z0 = _FeedbackModel(), torch.zeros(1, 2)
    noise = torch.tensor([[[0.2, -0.4], [0.1, 0.0], [0.0, 0.3]],
                          [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # [P=2, H=3, A=2]
    actions, values = policy_rollout(model, z0, 3, noise)
    assert actions.shape == (2, 3, 2) and values.shape == (2, 1)
    # by hand, row 0: a0 = n0 = (.2,-.4); z1 = a0; a1 = -z1/2 + n1 = (0, .2); z2 = (.2,-.2); a2 = (-.1, .4)
    expected = torch.tensor([[0.2, -0.4], [0.0, 0.2], [-0.1, 0.4]])
    torch.testing.assert_close(actions[0], expected)
    r = -expected.square().sum(-1)
    torch.testing.assert_close(values[0, 0], r[0] + 0.5 * r[1] + 0.25 * r[2])
    torch.testing.assert_close(actions[1], torch.zeros(3, 2))  # zero noise: the policy's own plan (0)
    # without noise: one rollout stands for all copies
    a1, v1 = policy_rollout(model, z0, 3)
    assert a1.shape == (1, 3, 2) and v1.shape == (1, 1)
    # clamped to the action box
    big, _ = policy_rollout(model, z0, 1, torch.full((1, 1, 2), 5.0))
    torch.testing.assert_close(big, torch.ones(1, 1, 2))


@pytest.mark.parametrize("std", [0.0, 0.1])
def test_mppi_policy_trajectories_get_their_noise(monkeypatch, std):
    model = QuadraticModel(A_STAR)  # policy acts 0
    spec = MPPISpec(iterations=1, num_samples=64, num_elites=8, num_policy_trajectories=24, policy_noise_std=std)
    planner = MPPIPlanner(spec, 2)
    seen = []
    original = planner._policy_rollout
    monkeypatch.setattr(planner, "_policy_rollout", lambda *a: seen.append(original(*a)) or seen[-1])
    planner.plan(model, OBS, first=True)
    actions = seen[0][0]
    if std == 0:
        assert actions.shape == (1, 3, 2) and torch.equal(actions, torch.zeros(1, 3, 2))
    else:
        assert actions.shape == (24, 3, 2)
        assert len({tuple(a.flatten().tolist()) for a in actions}) == 24  # 24 different plans
        assert 0.07 < actions.std().item() < 0.13  # policy (0) + N(0, 0.1)


def test_presets_use_the_references_policy_noise():
    from mrsq.specs import load

    for name in ("mrsq", "mrsq_small", "mrsq_cem", "mrq_mpc"):
        assert load(name).planner.policy_noise_std == 0.1, name
