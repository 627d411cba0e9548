"""The planners built to reach further: iCEM (coloured noise, kept and shifted elites, shrinking
population), policy-guided sampling (``center: policy``) and knot-parameterised sequences
(``knots``), on hand-written models whose optimum is known."""

from __future__ import annotations

import math

import pytest
import torch

import mrsq.planners  # noqa: F401  (registration)
from mrsq import specs
from mrsq.planners.cem import CEMPlanner, CEMSpec
from mrsq.planners.icem import ICEMPlanner, ICEMSpec, colored_noise_factor
from mrsq.planners.mppi import MPPIPlanner, MPPISpec
from mrsq.planners.sampling import knot_matrix, shift_matrix, shift_mean
from mrsq.registry import PLANNERS
from mrsq.testing import QuadraticModel, plan_steps

A_STAR = [0.3, -0.5]
OBS = torch.zeros(2)


def _run(planner, model, calls: int) -> torch.Tensor:
    return plan_steps(planner, model, OBS, calls)


PLANNERS_UNDER_TEST = {
    "icem": lambda: ICEMPlanner(ICEMSpec(), 2),
    "icem_white": lambda: ICEMPlanner(ICEMSpec(beta=0.0), 2),
    "mppi_policy": lambda: MPPIPlanner(MPPISpec(center="policy"), 2),
    "cem_policy": lambda: CEMPlanner(CEMSpec(center="policy"), 2),
    "icem_policy": lambda: ICEMPlanner(ICEMSpec(center="policy"), 2),
    "mppi_knots": lambda: MPPIPlanner(MPPISpec(horizon=5, knots=2), 2),
    "icem_knots": lambda: ICEMPlanner(ICEMSpec(horizon=6, knots=3), 2),
}


@pytest.mark.parametrize("name", list(PLANNERS_UNDER_TEST))
def test_reaches_the_quadratic_optimum(name):
    model, planner = QuadraticModel(A_STAR), PLANNERS_UNDER_TEST[name]()
    action = _run(planner, model, calls=4)
    assert action.shape == (2,) and (action.abs() <= 1).all()
    assert torch.allclose(action, model.a_star, atol=0.1), action
    # the refit mean is the plan (or, around the policy that acts 0, the residual): a_star at every step
    steps = planner.to_steps(planner.mean[None])[0]
    assert torch.allclose(steps, model.a_star.expand_as(steps), atol=0.1), steps


@pytest.mark.parametrize("name", ["icem", "mppi_policy", "mppi_knots"])
def test_warm_start_and_reset(name, monkeypatch):
    model, planner = QuadraticModel(A_STAR), PLANNERS_UNDER_TEST[name]()
    _run(planner, model, calls=2)
    stored = planner.mean.clone()
    starts = []
    original = planner.initial_mean
    monkeypatch.setattr(planner, "initial_mean", lambda first=False: starts.append(original(first)) or starts[-1])
    planner.plan(model, OBS)
    expected = planner.knot_shift @ stored if planner.interpolated else shift_mean(stored)
    torch.testing.assert_close(starts[-1], expected)
    planner.plan(model, OBS, first=True)
    assert torch.equal(starts[-1], torch.zeros_like(stored))
    planner.reset()
    assert torch.equal(planner.mean, torch.zeros_like(stored))
    assert planner.state_dict() == {}  # per-episode state: never in checkpoints


# ------------------------------------------------------------------------------ iCEM's parts
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 3.0])
def test_colored_noise_has_unit_variance_and_spectrum_slope_beta(beta):
    length = 64
    factor = colored_noise_factor(length, beta)
    torch.testing.assert_close((factor @ factor.T).diagonal(), torch.ones(length), atol=1e-4, rtol=0)
    noise = factor @ torch.randn(20_000, length, 1)  # [n, L, 1]
    assert abs(noise.var().item() - 1) < 0.03
    power = torch.fft.rfft(noise[..., 0].double(), dim=-1).abs().square().mean(0)  # [L/2 + 1]
    k = torch.arange(1, length // 2, dtype=torch.float64)  # below Nyquist, above the DC cutoff
    x, y = k.log(), power[1:length // 2].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()
    assert abs(slope.item() + beta) < 0.1, (beta, slope.item())


def test_colored_noise_is_smoother_with_larger_beta():
    white, red = colored_noise_factor(16, 0.0), colored_noise_factor(16, 3.0)
    e = torch.randn(5000, 16, 1)
    step_change = lambda f: (f @ e).diff(dim=1).square().mean().item()  # noqa: E731
    assert step_change(red) < 0.3 * step_change(white)
    torch.testing.assert_close(white @ white.T, torch.eye(16), atol=1e-5, rtol=0)  # beta 0 is white


def test_population_schedule_shrinks_by_the_factor_down_to_twice_the_elites():
    planner = ICEMPlanner(ICEMSpec(num_samples=512, num_elites=64, iterations=6, population_decay=1.25), 2)
    assert planner.populations == [512, 410, 328, 262, 210, 168]
    floor = ICEMPlanner(ICEMSpec(num_samples=100, num_elites=20, iterations=5, population_decay=2.0), 2)
    assert floor.populations == [100, 50, 40, 40, 40]  # never below 2 x 20


def test_sampled_batches_follow_the_schedule_with_kept_elites_and_the_mean(monkeypatch):
    spec = ICEMSpec(num_samples=64, num_elites=8, iterations=3, num_policy_trajectories=4, keep_fraction=0.25,
                    population_decay=2.0)
    planner = ICEMPlanner(spec, 2)
    seen = []
    original = planner.evaluate
    monkeypatch.setattr(planner, "evaluate", lambda m, z, params: seen.append(params.clone()) or original(m, z, params))
    planner.plan(QuadraticModel(A_STAR), OBS, first=True)
    # populations 64, 32, 16 (floor 16) minus the 4 policy rows, + 2 kept elites in every iteration
    # (at an episode start 2 fresh samples in their place), + the mean in the last one
    assert [p.shape[0] for p in seen] == [60 + 2, 28 + 2, 12 + 2 + 1]
    seen.clear()
    planner.plan(QuadraticModel(A_STAR), OBS)  # the next action: 2 shifted elites join iteration 0
    assert [p.shape[0] for p in seen] == [60 + 2, 28 + 2, 12 + 2 + 1]
    assert planner.has_carried and planner.evaluations_per_action() == 62 + 30 + 15 + 4


def test_elites_carry_over_between_iterations_and_shifted_to_the_next_action(monkeypatch):
    spec = ICEMSpec(num_samples=32, num_elites=4, iterations=2, num_policy_trajectories=0, keep_fraction=0.5,
                    add_mean=False, horizon=3)
    planner = ICEMPlanner(spec, 2)
    model = QuadraticModel(A_STAR)
    seen = []
    original = planner.evaluate

    def spy(m, z, params):
        actions, values = original(m, z, params)
        seen.append((params.clone(), values[:, 0].clone()))
        return actions, values

    monkeypatch.setattr(planner, "evaluate", spy)
    planner.plan(model, OBS, first=True)
    (p0, v0), (p1, _) = seen
    best_two = p0[v0.topk(2).indices]
    torch.testing.assert_close(p1[-2:], best_two)  # the 2 best of iteration 0 are re-candidates in 1
    last_params, last_values = seen[-1]
    carried = last_params[last_values.topk(2).indices]
    torch.testing.assert_close(planner.carried, torch.cat([carried[:, 1:], torch.zeros_like(carried[:, :1])], 1))
    seen.clear()
    before = planner.carried.clone()
    planner.plan(model, OBS)
    assert seen[0][0].shape[0] == 32 + 2
    torch.testing.assert_close(seen[0][0][-2:], before)  # the shifted elites join the first iteration
    seen.clear()
    planner.plan(model, OBS, first=True)  # an episode start: fresh samples instead of the carried
    assert seen[0][0].shape[0] == 32 + 2 and not torch.equal(seen[0][0][-2:], planner.carried)
    planner.reset()
    assert not planner.has_carried


def test_executes_the_best_sequence_of_any_iteration():
    """A model whose value is highest for a sequence only the first iteration can draw (its
    population is the largest): iCEM executes it even when later iterations find worse ones."""
    spec = ICEMSpec(num_samples=64, num_elites=4, iterations=3, num_policy_trajectories=0, horizon=1)
    planner = ICEMPlanner(spec, 1)

    class Model(QuadraticModel):
        def step(self, z, a):
            reward = -(a - self.a_star).square().sum(-1, keepdim=True)
            return reward, torch.zeros_like(reward), z

    model = Model([0.9])
    action = planner.plan(model, torch.zeros(1), first=True)
    assert abs(action.item() - 0.9) < 0.1


def test_executes_the_overall_best_when_a_later_iteration_finds_worse():
    """A rippled objective (many local optima) and no kept elites, so an iteration's best can be
    worse than an earlier one's: over 10 seeds the executed action is always the best scored in
    any iteration (each iteration's candidates recorded), and on some seeds that best is not the
    last iteration's, so executing the last iteration's best would fail here."""
    class Model(QuadraticModel):
        def step(self, z, a):
            reward = -(a - 0.9).square().sum(-1, keepdim=True) + 0.3 * torch.sin(40 * a).sum(-1, keepdim=True)
            return reward, torch.zeros_like(reward), z

    earlier_best = 0
    for seed in range(10):
        torch.manual_seed(seed)
        planner = ICEMPlanner(ICEMSpec(num_samples=64, num_elites=4, iterations=3, num_policy_trajectories=0,
                                       horizon=1, keep_fraction=0.0), 1)
        scored = []
        score = planner.score_candidates

        def spy(*args, **kwargs):
            out = score(*args, **kwargs)
            scored.append((out[0].detach().clone(), out[1][:, 0].detach().clone()))  # actions, values
            return out

        planner.score_candidates = spy
        action = planner.plan(Model([0.9]), torch.zeros(1), first=True)
        assert len(scored) == 3
        best = [values.max() for _, values in scored]
        i = int(torch.stack(best).argmax())
        actions, values = scored[i]
        torch.testing.assert_close(action, actions[values.argmax(), 0])
        earlier_best += int(best[-1] < best[i])
    assert earlier_best >= 1


@pytest.mark.parametrize("fields,match", [
    ({"beta": -0.5}, "beta"),
    ({"keep_fraction": 1.5}, "keep_fraction"),
    ({"keep_fraction": -0.1}, "keep_fraction"),
    ({"num_samples": 100, "num_elites": 64}, "2 x num_elites"),
    ({"population_decay": 0.5}, "population_decay"),
    ({"knots": 5, "horizon": 3}, "knots"),
])
def test_bad_settings_are_spec_errors(fields, match):
    with pytest.raises(specs.SpecError, match=match):
        specs.load("mrsq", [f"planner={{type: icem, {', '.join(f'{k}: {v}' for k, v in fields.items())}}}"])


def test_cem_mean_action_needs_an_action_centre():
    with pytest.raises(ValueError, match="center 'policy'"):
        CEMSpec(action="mean", center="policy")


def test_icem_from_the_registry_and_in_a_preset():
    spec = PLANNERS.spec("icem").model_validate({"type": "icem", "num_samples": 32, "num_elites": 4,
                                                 "num_policy_trajectories": 2, "iterations": 2})
    planner = PLANNERS.get("icem")(spec, 2)
    assert planner.plan(QuadraticModel(A_STAR), torch.zeros(1, 2), first=True, explore=False).shape == (2,)
    loaded = specs.load("mrsq_icem")
    assert loaded.planner.type == "icem" and loaded.planner.horizon == 3


# ------------------------------------------------------------------------------ policy-guided
class _FeedbackModel:
    """z' = z + a, policy pi(z) = -z/2, reward -||a - 0.5||^2: closed-loop candidates are
    checkable by hand."""

    action_dim, discount, episodic = 2, 1.0, False

    def encode(self, obs):
        return obs.reshape(obs.shape[0], -1).float()

    def step(self, z, a):
        reward = -(a - 0.5).square().sum(-1, keepdim=True)
        return reward, torch.zeros_like(reward), z + a

    def policy(self, z):
        return -z / 2

    def value(self, z, a):
        return torch.zeros(z.shape[0], 1)


def test_policy_centred_candidates_are_closed_loop_residuals():
    planner = MPPIPlanner(MPPISpec(center="policy", horizon=3, num_samples=8, num_elites=2,
                                   num_policy_trajectories=0, iterations=1), 2)
    residual = torch.tensor([[[0.2, -0.4], [0.1, 0.0], [0.0, 0.3]]])
    actions, values = planner.evaluate(_FeedbackModel(), torch.zeros(1, 2), residual)
    # a0 = e0; z1 = a0; a1 = -z1/2 + e1 = (0, .2); z2 = (.2, -.2); a2 = (-.1, .1) + e2 = (-.1, .4)
    expected = torch.tensor([[0.2, -0.4], [0.0, 0.2], [-0.1, 0.4]])
    torch.testing.assert_close(actions[0], expected)
    torch.testing.assert_close(values[0, 0], -(expected - 0.5).square().sum())


def test_policy_centred_search_finds_the_residual_that_beats_the_policy():
    model = _FeedbackModel()  # best: a = 0.5 at every step; the policy alone acts -z/2
    planner = MPPIPlanner(MPPISpec(center="policy", horizon=3, temperature=10.0, iterations=8), 2)
    _run(planner, model, calls=6)
    # from z0 = 0: z_t = 0.5 t on the optimum, so the residuals are 0.5 + z_t / 2 = 0.5, 0.75, 1.0
    expected = torch.tensor([0.5, 0.75, 1.0])[:, None].expand(3, 2)
    assert torch.allclose(planner.mean, expected, atol=0.15), planner.mean
    executed = -(planner.last_sequence - 0.5).square().sum()  # its return; the policy alone earns -1.5
    assert executed > -0.1, planner.last_sequence


# ------------------------------------------------------------------------------ knots
def test_knot_interpolation_by_hand():
    torch.testing.assert_close(knot_matrix(5, 3), torch.tensor(
        [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1.0]]))
    torch.testing.assert_close(knot_matrix(4, 1), torch.ones(4, 1))
    assert torch.equal(knot_matrix(3, 0), torch.eye(3)) and torch.equal(knot_matrix(3, 3), torch.eye(3))
    # with one knot per step the knot-space shift is the plain shift
    x = torch.randn(4, 2)
    torch.testing.assert_close(shift_matrix(4, 4) @ x, shift_mean(x))


def test_knot_planners_execute_interpolated_plans():
    planner = MPPIPlanner(MPPISpec(horizon=5, knots=2, num_samples=64, num_elites=8), 2)
    planner.plan(QuadraticModel(A_STAR), OBS, first=True)
    seq = planner.last_sequence  # [H, A]: linear in t between the two knots
    torch.testing.assert_close(seq[2], (seq[0] + seq[4]) / 2)
    assert planner.mean.shape == (2, 2) and math.isclose(planner.to_steps(planner.mean[None]).shape[1], 5)


@pytest.mark.parametrize("setting,message", [
    ("planner.beta=-1", "planner.beta"),
    ("planner.keep_fraction=1.2", "planner.keep_fraction"),
    ("planner.num_samples=100", "2 x num_elites"),
    ("planner.knots=4", "knots"),
])
def test_bad_planner_settings_stop_train_in_one_line_before_any_work(mrsq_main, tmp_path, setting, message):
    out = tmp_path / "run"
    code, _, err = mrsq_main("train", "mrsq_icem", "--set", setting, "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
