"""TD3, SAC/REDQ and TD-MPC2: gradient isolation of every loss, target updates, spec validation,
free composition, real environment steps through the Trainer and checkpoint round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.envs import make_env
from mrsq.replay import LAPReplay
from mrsq.specs import SpecError
from mrsq.testing import PointEnv
from mrsq.training.checkpoint import load_checkpoint
from mrsq.training.loop import Trainer, build_agent

SMALL = {
    "td3": ["critic.hidden_dim=32", "policy.hidden_dim=32", "batch_size=16"],
    "sac": ["critic.hidden_dim=32", "policy.hidden_dim=32", "batch_size=16"],
    "tdmpc2": ["encoder.zs_dim=32", "encoder.za_dim=16", "encoder.zsa_dim=32", "encoder.hidden_dim=32",
               "critic.hidden_dim=32", "policy.hidden_dim=32", "batch_size=16", "planner.num_samples=32",
               "planner.num_elites=4", "planner.num_policy_trajectories=4", "planner.iterations=2"],
}
COMMON = ["compile=off", "precision=fp32", "train.device=cpu"]


def small(preset: str, *extra: str):
    spec = specs.load(preset, [*COMMON, *extra])
    return specs.load(preset, [*COMMON, *SMALL[spec.type], *extra])


def filled_replay(env, horizon: int, n: int = 200, terminate: bool = False) -> LAPReplay:
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=n + 10, horizon=horizon, seed=0, prioritized=False)
    rng = np.random.default_rng(0)
    obs = env.reset()
    for i in range(n):
        a = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        nxt, r, term, trunc = env.step(a)
        term = term or (terminate and i % 17 == 16)
        replay.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if term or trunc else nxt
    return replay


def agent_for(preset: str, *extra: str, env=None):
    env = env or PointEnv(dim=2, max_episode_steps=30)
    spec = small(preset, *extra)
    agent = build_agent(spec, env, torch.device("cpu"))
    replay = filled_replay(env, agent.replay_horizon, terminate=True)
    agent.prepare(replay)
    return agent, replay


def grads(module) -> dict[str, bool]:
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in module.named_parameters()}


def assert_grads(agent, loss, receive: tuple[str, ...], none: tuple[str, ...]) -> None:
    agent.zero_grad(set_to_none=True)
    loss.backward()
    for name in receive:
        g = grads(getattr(agent, name))
        assert g and all(g.values()), f"{name} gets no gradient: {[k for k, v in g.items() if not v]}"
    for name in none:
        g = grads(getattr(agent, name))
        assert not any(g.values()), f"{name} gets a gradient: {[k for k, v in g.items() if v]}"


# ------------------------------------------------------------------ gradient isolation
@pytest.mark.parametrize("preset", ["td3", "sac"])
@pytest.mark.parametrize("with_encoder", [False, True])
def test_model_free_critic_loss_trains_only_the_critic_and_encoder(preset, with_encoder):
    extra = ("encoder={hidden_dim: 16, feature_dim: 8}",) if with_encoder else ()
    agent, replay = agent_for(preset, *extra)
    b = replay.sample(16, horizon=1)
    loss, *_ = agent.critic_loss_terms(b.obs[:, 0], b.action[:, 0], b.reward, b.terminated, b.next_obs[:, -1],
                                       agent.target_noise(16))
    receive = ("critic", "encoder") if with_encoder else ("critic",)
    none = ("policy", "critic_target") + (("encoder_target",) if with_encoder else ())
    assert_grads(agent, loss, receive, none)


@pytest.mark.parametrize("preset", ["td3", "sac"])
def test_model_free_policy_loss_trains_only_the_policy(preset):
    agent, replay = agent_for(preset, "encoder={hidden_dim: 16, feature_dim: 8}")
    features = agent.features(replay.sample(16, horizon=1).obs[:, 0])
    from mrsq.agents.base import frozen

    with frozen(agent.critic):
        loss, *_ = agent.policy_loss_terms(features)
        assert_grads(agent, loss, ("policy",), ("critic", "encoder", "critic_target"))


def test_sac_temperature_moves_towards_the_entropy_target():
    agent, replay = agent_for("sac")
    # a log-prob far above -target (entropy too low) must raise alpha, and the other way round
    before = agent.temperature.log_alpha.item()
    agent.after_policy_update(torch.full((16, 1), 5.0))
    assert agent.temperature.log_alpha.item() > before
    before = agent.temperature.log_alpha.item()
    agent.after_policy_update(torch.full((16, 1), -20.0))
    assert agent.temperature.log_alpha.item() < before


def test_tdmpc2_model_loss_trains_model_and_critics_not_the_policy():
    # (with TD-MPC2's zero-initialised last critic layer the hidden layers get exactly zero
    # gradient on the very first step, so the check runs without it)
    agent, replay = agent_for("tdmpc2", "critic.zero_init_last=false")
    b = replay.sample(16, horizon=agent.spec.horizon)
    loss, *_ = agent.model_loss_terms(b.obs, b.action, b.reward, b.next_obs, b.terminated)
    assert_grads(agent, loss, ("encoder", "critic"), ("policy", "critic_target"))


def test_tdmpc2_policy_loss_trains_only_the_policy():
    agent, replay = agent_for("tdmpc2")
    b = replay.sample(16, horizon=agent.spec.horizon)
    *_, latents, _, alive = agent.model_loss_terms(b.obs, b.action, b.reward, b.next_obs, b.terminated)
    from mrsq.agents.base import frozen

    with frozen(agent.critic):
        loss, *_ = agent.policy_loss_terms(latents.detach(), alive)
        assert_grads(agent, loss, ("policy",), ("critic", "encoder", "critic_target"))


def test_tdmpc2_value_target_is_the_min_of_two_sampled_target_members():
    """The TD target uses exactly min_of_k (k=2) over the target critics, at a' ~ pi(z')."""
    # zero_init_last off: TD-MPC2's zero-initialised last layers make every member equal at first
    agent, replay = agent_for("tdmpc2", "critic.num_members=4", "critic.zero_init_last=false")
    calls = []
    original = agent.target_aggregate

    def spy(values):
        out = original(values)
        calls.append((values.detach().clone(), out.detach().clone()))
        return out

    agent.target_aggregate = spy
    b = replay.sample(16, horizon=agent.spec.horizon)
    for _ in range(5):
        agent.model_loss_terms(b.obs, b.action, b.reward, b.next_obs, b.terminated)
    assert [v.shape for v, _ in calls] == [torch.Size([4, 16 * agent.spec.horizon, 1])] * 5
    assert agent.spec.aggregators.target.type == "min_of_k" and agent.spec.aggregators.target.k == 2
    # each output is the min over one pair of distinct members (drawn per call: not min over all 4, not the mean)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    drawn = []
    for values, out in calls:
        match = [p for p in pairs if torch.equal(out, values[list(p)].amin(0))]
        assert match, "the target is not the min of any two members"
        drawn.append(match[0])
    assert len(set(drawn)) > 1  # a fresh pair per call
    assert any(not torch.equal(out, values.amin(0)) for values, out in calls)


# ------------------------------------------------------------------ target updates
def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_td3_moves_targets_only_with_the_delayed_policy_update():
    agent, replay = agent_for("td3")
    tau = agent.spec.tau
    critic_t0, policy_t0 = _flat(agent.critic_target).clone(), _flat(agent.policy_target).clone()
    policy0 = _flat(agent.policy).clone()
    agent.update(replay)  # critic update 1 of 2: no policy update, no target update
    assert torch.equal(_flat(agent.critic_target), critic_t0) and torch.equal(_flat(agent.policy), policy0)
    agent.update(replay)  # critic update 2: policy update, then soft target updates
    torch.testing.assert_close(_flat(agent.critic_target), torch.lerp(critic_t0, _flat(agent.critic), tau))
    torch.testing.assert_close(_flat(agent.policy_target), torch.lerp(policy_t0, _flat(agent.policy), tau))


def test_sac_soft_updates_after_every_critic_update_and_redq_runs_g_of_them():
    agent, replay = agent_for("sac")
    t0 = _flat(agent.critic_target).clone()
    agent.update(replay)
    torch.testing.assert_close(_flat(agent.critic_target), torch.lerp(t0, _flat(agent.critic), agent.spec.tau))
    redq, replay = agent_for("redq", "updates_per_step=5", "policy_delay=5")
    policy0 = _flat(redq.policy).clone()
    redq.update(replay)
    assert redq.critic_updates == 5 and not torch.equal(_flat(redq.policy), policy0)
    policy1 = _flat(redq.policy).clone()
    redq.update(replay)
    assert redq.critic_updates == 10 and not torch.equal(_flat(redq.policy), policy1)


def test_tdmpc2_soft_updates_the_target_critics():
    agent, replay = agent_for("tdmpc2", "pretrain=false")
    t0 = _flat(agent.critic_target).clone()
    agent.update(replay)
    torch.testing.assert_close(_flat(agent.critic_target), torch.lerp(t0, _flat(agent.critic), agent.spec.tau))


def test_tdmpc2_plans_with_separately_sampled_policy_rollouts():
    """TD-MPC2 rolls out its stochastic policy once per policy trajectory (24 different plans);
    a deterministic policy without noise gives one rollout that stands for all of them."""
    agent, _ = agent_for("tdmpc2", "planner.num_policy_trajectories=6", "planner.iterations=1")
    obs = torch.zeros(1, agent.obs_dim)
    seen = []
    original = agent.planner._policy_rollout

    def spy(model, z0, horizon, noise):
        actions, values = original(model, z0, horizon, noise)
        seen.append(actions)
        return actions, values

    agent.planner._policy_rollout = spy
    agent.act(obs.numpy()[0], explore=True, first=True)
    assert seen[-1].shape[0] == 6 and not torch.allclose(seen[-1][0], seen[-1][1])


def test_tdmpc2_state_encoder_learns_at_the_scaled_rate():
    agent, _ = agent_for("tdmpc2")
    groups = agent.model_optim.param_groups
    assert groups[0]["lr"] == pytest.approx(3e-4 * 0.3) and groups[1]["lr"] == pytest.approx(3e-4)
    encoder_f = {id(p) for p in agent.encoder.f.parameters()}
    assert {id(p) for p in groups[0]["params"]} == encoder_f | {id(p) for p in agent.encoder.zs_norm.parameters()}
    assert {id(p) for p in agent.encoder.g.parameters()} <= {id(p) for p in groups[1]["params"]}


def test_tdmpc2_first_update_runs_the_pretraining_burst():
    """TD-MPC2 does seed_steps updates when seeding ends, then one per step. The loop's first
    update comes with warmup + 1 transitions stored, so the burst is replay.size - 1 updates."""
    agent, replay = agent_for("tdmpc2")
    agent.training_steps = 0  # as in a real run (agent_for's prepare() marks the burst done, as benches need)
    param = next(agent.critic.parameters())
    agent.update(replay)
    assert int(agent.model_optim.state[param]["step"]) == replay.size - 1
    agent.update(replay)
    assert int(agent.model_optim.state[param]["step"]) == replay.size


def test_tdmpc2_critic_dropout_only_in_the_losses():
    agent, _ = agent_for("tdmpc2", "critic.dropout=0.5", "critic.zero_init_last=false")
    z, a = torch.rand(64, agent.spec.encoder.zs_dim), torch.rand(64, 2) * 2 - 1
    assert torch.equal(agent.q_values(z, a), agent.q_values(z, a))  # planning, diagnostics
    assert torch.equal(agent.q_values(z, a, target=True, dropout=True), agent.q_values(z, a, target=True))
    assert not torch.equal(agent.q_values(z, a, dropout=True), agent.q_values(z, a, dropout=True))


# ------------------------------------------------------------------ specs
@pytest.mark.parametrize("agent", ["td3", "sac", "redq"])
def test_model_free_agents_reject_search_with_an_error_naming_the_field(agent):
    with pytest.raises(SpecError, match=r"planner: .*model-free.*'mppi'"):
        specs.load(agent, ["planner.type=mppi"])


def test_entropy_agents_reject_a_deterministic_policy():
    for preset in ("sac", "tdmpc2"):
        with pytest.raises(SpecError, match=r"policy: 'tanh' has no log-probabilities"):
            specs.load(preset, ["policy.type=tanh"])


def test_partial_mappings_keep_the_agents_defaults():
    spec = specs.load("td3", ["critic.num_members=5"])
    assert spec.critic.num_members == 5 and spec.critic.hidden_dim == 256 and spec.critic.layer_norm is False
    spec = specs.validate({"type": "tdmpc2", "aggregators": {"target": "min"}, "replay": {"capacity": 10}})
    assert spec.aggregators.planner.type == "mean_of_k" and spec.replay.prioritized is False
    # the same type stated explicitly merges too; nested partial mappings merge field by field
    spec = specs.validate({"type": "td3", "critic": {"type": "ensemble", "num_members": 10}})
    assert (spec.critic.num_members, spec.critic.hidden_dim, spec.critic.activation) == (10, 256, "relu")
    spec = specs.validate({"type": "tdmpc2", "aggregators": {"target": {"k": 3}}})
    assert (spec.aggregators.target.type, spec.aggregators.target.k) == ("min_of_k", 3)
    # another type replaces the default mapping
    spec = specs.validate({"type": "td3", "critic": {"type": "twohot_ensemble"}})
    assert spec.critic.hidden_dim == 512 and spec.critic.num_bins == 101


def test_published_settings():
    td3 = specs.load("td3")
    assert (td3.critic.num_members, td3.policy_delay, td3.target_policy_noise, td3.noise_clip,
            td3.exploration_noise, td3.tau, td3.warmup_steps) == (2, 2, 0.2, 0.5, 0.1, 0.005, 25_000)
    assert (td3.aggregators.target.type, td3.aggregators.policy.type) == ("min", "first")
    redq = specs.load("redq")
    assert (redq.critic.num_members, redq.updates_per_step, redq.aggregators.target.k) == (10, 20, 2)
    assert redq.aggregators.policy.type == "mean" and redq.warmup_steps == 5000
    tdmpc2, fixed = specs.load("tdmpc2"), specs.load("tdmpc2_ens10_min")
    assert (tdmpc2.critic.num_members, tdmpc2.aggregators.target.type, tdmpc2.aggregators.planner.type) == \
        (5, "min_of_k", "mean_of_k")
    assert (fixed.critic.num_members, fixed.aggregators.target.type, fixed.aggregators.planner.type) == \
        (10, "min", "min")
    assert specs.load("td3_ens10_min").critic.num_members == specs.load("sac_ens10_min").critic.num_members == 10


# ------------------------------------------------------------------ composition + real env
COMPOSED = {
    "td3_5_mean_minus_std.yaml": """
extends: td3
critic: {num_members: 5}
aggregators: {target: {type: mean_minus_std, beta: 0.5}}
""",
    "tdmpc2_cem.yaml": """
extends: tdmpc2
planner: {type: cem, num_samples: 32, num_elites: 4, num_policy_trajectories: 4, iterations: 2}
""",
    "sac_encoder_nstep.yaml": """
extends: sac
encoder: {hidden_dim: 32, feature_dim: 16}
value_horizon: 3
replay: {prioritized: true}
""",
    "mrq_gaussian_cem.yaml": """
extends: mrq_small
policy: {type: tanh_gaussian, hidden_dim: 32, layer_norm: true}
planner: {type: cem, num_samples: 32, num_elites: 4, num_policy_trajectories: 4, iterations: 2}
""",
}


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_composed_yaml_builds_trains_and_resumes_from_its_checkpoint(tmp_path, name):
    """A freely composed spec runs a few hundred real gym steps through the Trainer, and its
    checkpoint restores an agent that acts like the trained one."""
    pytest.importorskip("mujoco")
    path = tmp_path / name
    path.write_text(COMPOSED[name])
    base = specs.load(path)
    sizes = SMALL.get(base.type, ["encoder.zs_dim=32", "encoder.za_dim=16", "encoder.zsa_dim=32",
                                  "encoder.hidden_dim=32", "critic.hidden_dim=32", "batch_size=16",
                                  "target_update_every=50"])
    if base.type == "tdmpc2":
        sizes = [s for s in sizes if not s.startswith("planner.")]
    spec = specs.load(path, [*COMMON, *sizes, "train.env=gym:InvertedPendulum-v5", "train.steps=300",
                             "train.eval_every=300", "train.eval_episodes=1", "warmup_steps=100",
                             "train.threads=1", "train.log_every=100"])
    trainer = Trainer(spec, tmp_path / "run", progress=False)
    result = trainer.run()
    assert result.steps == 300 and len(result.evals) == 2
    header = (tmp_path / "run" / "train.csv").read_text().splitlines()[0].split(",")
    assert "critic/loss" in header
    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    env = make_env(spec.train.env, 0)
    restored = build_agent(specs.from_yaml(payload["spec"]), env, torch.device("cpu"))
    restored.load_training_state(payload["agent"])
    for k, v in trainer.agent.state_dict().items():
        assert torch.equal(v, restored.state_dict()[k]), k
    obs = env.reset()
    torch.manual_seed(3)
    x = trainer.agent.act(obs, explore=False, first=True)
    torch.manual_seed(3)
    y = restored.act(obs, explore=False, first=True)
    np.testing.assert_allclose(x, y, atol=1e-6)
