"""TD-MPC2's published settings that depend on the environment or that the first port missed,
each against the value in TD-MPC2's public code (commit e9f5932):

* seed_steps = max(1000, 5 * episode_length) (envs/__init__.py) followed by that many updates
  (trainer/online_trainer.py): 2,500 on DMC (500-step episodes at action repeat 2), 5,000 on Gym;
* rho = 0.7 on its Gym (MuJoCo) path (envs/mujoco.py), config.yaml's 0.5 elsewhere;
* every layer norm has a learnable scale and shift (common/layers.py: nn.LayerNorm);
* MPPI scores all sequences, the policy's included, at every iteration (tdmpc2.py: plan);
* the discount: 0.99 on both suites (the episode-length heuristic on DMC, discount_max on Gym).
"""

from __future__ import annotations

import pytest
import torch
import yaml

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.envs import make_env
from mrsq.training.loop import Trainer

TINY = ["encoder.zs_dim=32", "encoder.za_dim=16", "encoder.zsa_dim=32", "encoder.hidden_dim=32",
        "critic.hidden_dim=32", "policy.hidden_dim=32", "batch_size=16", "planner.num_samples=32",
        "planner.num_elites=4", "planner.num_policy_trajectories=4", "planner.iterations=2",
        "compile=off", "precision=fp32", "train.device=cpu"]


@pytest.fixture(scope="module")
def envs():
    made = {"dmc": make_env("dmc:cheetah-run", 0), "gym": make_env("gym:Hopper-v5", 0)}
    yield made
    for env in made.values():
        env.close()


@pytest.mark.parametrize("suite,warmup,rho", [("dmc", 2500, 0.5), ("gym", 5000, 0.7)])
def test_env_dependent_defaults_are_tdmpc2s(envs, suite, warmup, rho):
    spec = specs.load("tdmpc2")
    assert spec.warmup_steps == "auto" and spec.losses.rho == "auto"
    resolved = spec.for_env(envs[suite])
    assert resolved.warmup_steps == warmup == max(1000, 5 * envs[suite].max_episode_steps)
    assert resolved.losses.rho == rho
    assert resolved.unresolved() == [] and resolved.for_env(envs["dmc"]) is resolved  # values stay values


def test_explicit_values_are_kept_and_the_fallbacks_without_an_env(envs):
    spec = specs.load("tdmpc2", ["warmup_steps=1234", "losses.rho=0.6"])
    assert spec.for_env(envs["gym"]).warmup_steps == 1234 and spec.for_env(envs["gym"]).losses.rho == 0.6
    fallback = specs.load("tdmpc2").for_env(None)
    assert (fallback.warmup_steps, fallback.losses.rho) == (5000, 0.5)
    with pytest.raises(specs.SpecError, match="rho"):
        specs.load("tdmpc2", ["losses.rho=1.5"])
    with pytest.raises(specs.SpecError, match="warmup_steps"):
        specs.load("tdmpc2", ["warmup_steps=-1"])


def test_an_agent_built_without_an_env_uses_the_fallbacks():
    from mrsq.registry import AGENTS

    spec = specs.load("tdmpc2", TINY)
    agent = AGENTS.get("tdmpc2")(spec, 5, 2)
    assert agent.spec.losses.rho == 0.5
    torch.testing.assert_close(agent.rho, 0.5 ** torch.arange(4, dtype=torch.float32))


@pytest.mark.parametrize("env_id,warmup,rho", [("dmc:cheetah-run", 2500, 0.5), ("gym:Hopper-v5", 5000, 0.7)])
def test_show_resolves_them_for_the_env(mrsq_main, env_id, warmup, rho):
    code, out, _ = mrsq_main("show", "tdmpc2", "--env", env_id)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["warmup_steps"] == warmup and shown["losses"]["rho"] == rho
    assert shown["discount"] == 0.99  # TD-MPC2's value on both suites
    # the CPU-sized preset sets its own warm-up; rho still follows the env
    shown = yaml.safe_load(mrsq_main("show", "tdmpc2_small", "--env", env_id)[1])
    assert shown["warmup_steps"] == 2000 and shown["losses"]["rho"] == rho


def test_run_folder_spec_holds_the_resolved_values_and_the_burst_is_warmup_updates(tmp_path):
    """A Gym run: spec.yaml says rho 0.7, and the first update after a warm-up of 40 random steps
    is a burst of 40 updates in all (TD-MPC2: seed_steps updates when seeding ends)."""
    spec = specs.load("tdmpc2", [*TINY, "train.env=gym:Hopper-v5", "warmup_steps=40", "train.steps=41",
                                 "train.eval_every=1000", "train.eval_episodes=1"])
    trainer = Trainer(spec, tmp_path / "run", progress=False)
    trainer.run()
    written = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())
    assert written["losses"]["rho"] == 0.7 and written["warmup_steps"] == 40
    param = next(trainer.agent.critic.parameters())
    assert int(trainer.agent.model_optim.state[param]["step"]) == 40


def test_every_layer_norm_is_affine_in_tdmpc2_and_none_in_mrq():
    from mrsq.registry import AGENTS

    tdmpc2 = AGENTS.get("tdmpc2")(specs.load("tdmpc2", TINY), 5, 2)
    mrq = AGENTS.get("mrq")(specs.load("mrq", ["compile=off", "precision=fp32", "encoder.zs_dim=32",
                                               "encoder.zsa_dim=32", "encoder.hidden_dim=32",
                                               "critic.hidden_dim=32", "policy.hidden_dim=32"]), 5, 2)

    def norm_params(module):
        return [n for n, _ in module.named_parameters() if "norm" in n or "ln_" in n]

    # TD-MPC2: f's and g's hidden LNs (2 + 2), SimNorm's two, the critics' 2 hidden (scale, shift), policy's 2
    assert len(norm_params(tdmpc2.encoder)) == 2 * (2 + 2 + 2)
    assert len(norm_params(tdmpc2.critic)) == 2 * 2
    assert tdmpc2.critic.ln_weights[0].shape == (5, 1, 32)  # one scale per member
    assert len(norm_params(tdmpc2.policy)) == 2 * 2
    assert norm_params(mrq.encoder) == [] and norm_params(mrq.critic) == [] and norm_params(mrq.policy) == []


def test_affine_norms_learn_and_the_member_view_matches():
    from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec

    critic = EnsembleCritic(EnsembleCriticSpec(num_members=3, hidden_dim=16, hidden_layer_norm_affine=True,
                                               shared_layers=1), 8)
    with torch.no_grad():
        for w, b in zip(critic.ln_weights, critic.ln_biases):
            w.uniform_(0.5, 1.5)
            b.uniform_(-0.5, 0.5)
    x = torch.randn(7, 8)
    out = critic(x)
    for i in range(3):
        torch.testing.assert_close(critic.member(i)(x), out[i])
    torch.testing.assert_close(critic(x, members=torch.tensor([2, 0])), out[[2, 0]])
    out.sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in critic.ln_weights)


class _RandomValueModel:
    """Identity dynamics, zero reward, a terminal value drawn anew at every call: the planner's
    policy rows must be scored again at every iteration (TD-MPC2 scores all sequences each time)."""

    action_dim, discount, episodic = 2, 0.99, False

    def __init__(self, stochastic: bool) -> None:
        self.stochastic_value = stochastic
        self.batches = []

    def encode(self, obs):
        return obs.reshape(obs.shape[0], -1).float()

    def step(self, z, a):
        return torch.zeros(z.shape[0], 1), torch.zeros(z.shape[0], 1), z

    def policy(self, z):
        return torch.zeros(z.shape[0], 2)

    def value(self, z, a):
        self.batches.append(z.shape[0])
        return torch.randn(z.shape[0], 1)


@pytest.mark.parametrize("stochastic,rescore", [(True, "auto"), (False, "auto"), (False, True)])
def test_policy_trajectories_are_rescored_when_values_are_random(stochastic, rescore):
    from mrsq.planners.mppi import MPPIPlanner, MPPISpec

    planner = MPPIPlanner(MPPISpec(num_samples=32, num_elites=4, num_policy_trajectories=6, iterations=3,
                                   rescore_policy_trajectories=rescore), 2)
    model = _RandomValueModel(stochastic)
    planner.plan(model, torch.zeros(2), first=True)
    if stochastic or rescore is True:  # one rollout, then each iteration all 32 sequences in one call
        assert model.batches == [1, 32, 32, 32]
    else:  # deterministic values: the policy's plan is scored once, the 26 others per iteration
        assert model.batches == [1, 26, 26, 26]


def test_tdmpc2s_view_says_its_values_are_random_and_mrsqs_does_not():
    from mrsq.registry import AGENTS

    tdmpc2 = AGENTS.get("tdmpc2")(specs.load("tdmpc2", TINY), 5, 2)
    assert tdmpc2.acting_view().stochastic_value
    mrsq = AGENTS.get("mrq")(specs.load("mrsq_small", ["compile=off", "precision=fp32"]), 5, 2)
    assert not mrsq.acting_view().stochastic_value  # min over all members, deterministic policy
    sampled = AGENTS.get("mrq")(specs.load("mrsq_small", ["compile=off", "precision=fp32",
                                                          "aggregators.planner={type: min_of_k, k: 2}"]), 5, 2)
    assert sampled.acting_view().stochastic_value
