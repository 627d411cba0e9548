"""The cheap-pessimism mechanisms (issue 17) inside agents: every preset and port passes the agent
contract, each new loss changes only what it should, the distilled head is what the planner
scores with, the TQC target is built from truncated atoms, and a run resumes bit for bit."""

from __future__ import annotations

import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.agents.mrq import MRQ
from mrsq.testing import check_agent

from tests.agents.test_mrq import ACTION_DIM, OBS_DIM, TINY, changed, fill_replay, make_batch, names, snapshot

SMALL_PLANNER = ["planner.num_samples=16", "planner.num_elites=4", "planner.num_policy_trajectories=2",
                 "planner.iterations=2"]
CHEAP_PRESETS = ["mrsq_trunk_small", "mrsq_trunk3_small", "mrsq_plan_k_small", "mrsq_tqc_small", "mrsq_distill_small",
                 "mrsq_droq_small"]


def tiny(preset: str, *overrides: str):
    # restate the critic width per preset: a changed critic type keeps none of TINY's dotted fields
    return specs.load(preset, [*TINY, *SMALL_PLANNER, "target_update_every=5", "compile=off", "precision=fp32",
                               *overrides])


@pytest.mark.parametrize("preset", CHEAP_PRESETS)
def test_cheap_presets_pass_the_agent_contract(preset):
    check_agent(tiny(preset), steps=12)


# the mechanisms ported to the other agents that take a critic
PORTS = {
    "td3_tqc": ("td3", ["critic={type: quantile_ensemble, num_members: 2, num_quantiles: 5, hidden_dim: 32, "
                        "num_hidden: 2, activation: relu, layer_norm: false}",
                        "aggregators.target={type: truncated_mean, drop: 1}", "aggregators.policy=mean"]),
    "td3_trunk_subset": ("td3", ["critic={type: shared_trunk, num_members: 5, shared_layers: 1, hidden_dim: 32, "
                                 "num_hidden: 2, activation: relu, layer_norm: false}",
                                 "aggregators.target={type: subset, k: 2}",
                                 "aggregators.policy={type: subset, k: 1, reduce: mean}"]),
    "sac_tqc": ("sac", ["critic={type: quantile_ensemble, num_members: 2, num_quantiles: 5, hidden_dim: 32, "
                        "num_hidden: 2, activation: relu, layer_norm: false}",
                        "aggregators.target={type: truncated_mean, drop: 2}"]),
    "tdmpc2_trunk_plan_subset": ("tdmpc2", ["critic.shared_layers=1", "aggregators.planner={type: subset, k: 2}"]),
}


@pytest.mark.parametrize("case", sorted(PORTS))
def test_mechanisms_compose_with_the_other_agents(case):
    agent_type, overrides = PORTS[case]
    check_agent(agent_type, steps=12, overrides=tuple(overrides))


# ------------------------------------------------------------------------------ gradient isolation
def test_critic_step_with_distill_changes_only_the_critic_and_the_head():
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_distill_small"), OBS_DIM, ACTION_DIM)
    agent.reward_scale = agent.target_reward_scale = 1.0
    before = snapshot(agent)
    _, metrics, _ = agent.critic_step(make_batch(8, 3))
    assert changed(agent, before) == names(agent, "critic") | names(agent, "distill_head")
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is None for p in agent.policy.parameters())
    assert torch.isfinite(metrics["distill/loss"])


def test_distill_loss_trains_the_head_alone_toward_the_ensemble_min():
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_distill_small"), OBS_DIM, ACTION_DIM)
    zsa = torch.randn(32, agent.spec.encoder.zsa_dim)
    q = agent.critic(zsa).detach()
    (loss,) = agent.distill_loss_terms(zsa, q)
    # exactly Huber(head(zsa), min over the members): not the mean, not rescaled
    torch.testing.assert_close(loss, torch.nn.functional.smooth_l1_loss(agent.distill_head(zsa)[0], q.amin(0)))
    loss.backward()
    assert all(p.grad is None for m in (agent.encoder, agent.critic, agent.policy) for p in m.parameters())
    assert all(p.grad is not None for p in agent.distill_head.parameters())
    # its target is the min over the members; a few hundred steps on a fixed batch fit it
    zsa = zsa.detach()
    first = float(agent.distill_loss_terms(zsa, q)[0].detach())
    for _ in range(300):
        agent.distill_step(zsa, q)
    last = float(agent.distill_loss_terms(zsa, q)[0].detach())
    assert last < 0.2 * first


def test_planner_scores_with_the_distilled_head():
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_distill_small"), OBS_DIM, ACTION_DIM)
    agent.reward_scale = 2.5
    view = agent.acting_view()
    z = agent.encoder.zs(torch.randn(6, OBS_DIM))
    a = torch.rand(6, ACTION_DIM) * 2 - 1
    expected = agent.distill_head(agent.encoder.zsa(z, a))[0] * 2.5
    calls = []
    hook = agent.critic.register_forward_hook(lambda *_: calls.append(1))
    torch.testing.assert_close(view.value(z, a), expected)
    assert calls == []  # the planner's score never runs the ensemble
    hook.remove()
    obs, act = torch.randn(4, OBS_DIM), torch.rand(4, ACTION_DIM) * 2 - 1
    zsa = agent.encoder.zsa(agent.encoder.zs(obs), act)
    torch.testing.assert_close(agent.planner_value_estimate(obs, act), agent.distill_head(zsa)[0, :, 0] * 2.5)
    # value_estimate (value_bias) stays the TD target's min over the ensemble
    torch.testing.assert_close(agent.value_estimate(obs, act)[0], agent.critic(zsa).amin(0)[:, 0] * 2.5)


def test_tqc_value_target_is_the_truncated_atoms():
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_tqc_small"), OBS_DIM, ACTION_DIM)
    agent.reward_scale, agent.target_reward_scale = 2.0, 4.0
    batch = make_batch(8, 3)
    noise = torch.zeros(8, ACTION_DIM)
    target = agent.value_target(batch, noise)
    m, d = agent.spec.critic.num_quantiles, agent.spec.aggregators.target.drop
    assert target.shape == (8, 2 * (m - d))
    # by hand: the target networks' atoms at (s_3, pi(s_3)), pooled, sorted, top d*N dropped
    with torch.no_grad():
        zs = agent.encoder_target.zs(batch.next_obs[:, -1])
        a = agent.policy_target.act(zs).clamp(-1, 1)
        atoms = agent.critic_target.atoms(agent.encoder_target.zsa(zs, a))
        kept = atoms.permute(1, 0, 2).reshape(8, -1).sort(-1).values[:, : 2 * (m - d)]
        ret = (batch.reward * agent.gammas).sum(1, keepdim=True)
        expected = (ret + agent.bootstrap_discount * kept * 4.0) / 2.0
    torch.testing.assert_close(target, expected)
    loss, q, tgt, _ = agent.critic_loss(batch, noise)
    assert q.shape == (2, 8, m) and torch.isfinite(loss)


def test_tqc_value_target_masks_the_atoms_after_a_terminal_step():
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_tqc_small"), OBS_DIM, ACTION_DIM)
    agent.reward_scale = agent.target_reward_scale = 1.0
    reward = torch.tensor([1.0, 2.0, 4.0])
    # sample 0 ends at its first step: only r_0 counts and every atom equals it; sample 1 never ends
    batch = make_batch(2, 3, terminated=[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], reward=reward)
    target = agent.value_target(batch, torch.zeros(2, ACTION_DIM))
    torch.testing.assert_close(target[0], torch.full_like(target[0], 1.0))
    g = agent.spec.discount
    ret = 1.0 + g * 2.0 + g * g * 4.0
    assert not torch.allclose(target[1], torch.full_like(target[1], ret))  # bootstrapped atoms, sorted
    assert torch.all(target[1][1:] >= target[1][:-1])


def test_tqc_critic_step_changes_only_the_critic_and_the_policy_step_only_the_policy():
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_tqc_small"), OBS_DIM, ACTION_DIM)
    agent.reward_scale = agent.target_reward_scale = 1.0
    before = snapshot(agent)
    zs, _, _ = agent.critic_step(make_batch(8, 3))
    assert changed(agent, before) == names(agent, "critic")
    assert all(p.grad is None for m in (agent.encoder, agent.policy) for p in m.parameters())
    agent.critic.zero_grad(set_to_none=True)
    before = snapshot(agent)
    agent.policy_step(zs)  # the mean of all quantiles of all members
    assert changed(agent, before) == names(agent, "policy")
    assert all(p.grad is None for m in (agent.encoder, agent.critic) for p in m.parameters())


def test_a_quantile_critic_without_truncation_is_cautioned_not_refused():
    spec = tiny("mrsq_tqc_small", "aggregators.target=min")
    (line,) = spec.cautions()
    assert "not TQC" in line and "truncated_mean" in line and "'min'" in line
    assert tiny("mrsq_tqc_small").cautions() == [] and tiny("mrsq_small").cautions() == []


def test_model_free_quantile_loss_averages_over_members_as_tqc():
    from mrsq.registry import AGENTS

    agent_type, overrides = PORTS["sac_tqc"]
    spec = specs.load(agent_type, [*overrides, "compile=off", "precision=fp32"])
    agent = AGENTS.get(agent_type)(spec, OBS_DIM, ACTION_DIM)
    batch = make_batch(8, 1)
    noise = agent.target_noise(8)
    torch.manual_seed(1)
    loss, q, target, _ = agent.critic_loss_terms(batch.obs[:, 0], batch.action[:, 0], batch.reward,
                                                 batch.terminated, batch.next_obs[:, -1], noise)
    per_member = torch.stack([agent.critic.regression_loss(q[i:i + 1], target) for i in range(2)])
    torch.testing.assert_close(loss, per_member.mean())


# ------------------------------------------------------------------------------ a real run
RESUME_CASES = {
    # the distilled head (its optimiser in the checkpoint), a shared trunk, a TD-target subset draw
    "distill_trunk_subset": ("mrsq_distill_small", [
        "critic={type: shared_trunk, num_members: 3, hidden_dim: 32, shared_layers: 2}",
        "aggregators.target={type: subset, k: 2}", "distill.head.hidden_dim=16"]),
    # TQC's truncated target atoms, with a planner subset over the quantile critics' values
    "tqc_plan_subset": ("mrsq_tqc_small", [
        "critic={type: quantile_ensemble, num_members: 3, num_quantiles: 5, hidden_dim: 32}",
        "aggregators.planner={type: subset, k: 2}"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_cheap_mechanisms_resume_bit_for_bit(tmp_path, case):
    """A real Trainer run of the mechanisms, killed mid-run (SIGKILL) and resumed: eval.csv and
    train.csv equal the uninterrupted run's, the planner-value columns included."""
    from tests.training.test_resume import TINY as RESUME_TINY, eval_rows, run_cli, train_rows
    from mrsq.training.loop import Trainer

    preset, extra = RESUME_CASES[case]
    extra = [*extra, *SMALL_PLANNER]
    steps, env = 200, "gym:InvertedPendulum-v5"
    overrides = RESUME_TINY + extra + [f"train.env={env}", f"train.steps={steps}", "train.eval_every=100",
                                       "train.checkpoint_every=40"]
    reference = tmp_path / "reference"
    threads = torch.get_num_threads()
    try:
        Trainer(specs.load(preset, overrides), reference, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    rows = eval_rows(reference / "eval.csv")
    assert rows[-1]["planner_value_bias"] not in ("", "nan")
    out = tmp_path / "cut"
    args = ["train", preset, "--no-progress", "--out", str(out)]
    args += [a for o in overrides for a in ("--set", o)]
    killed = run_cli(args, tmp_path, failpoint="step:130")
    assert killed.returncode != 0
    resumed = run_cli(["train", "--resume", str(out), "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert train_rows(out / "train.csv") == train_rows(reference / "train.csv")
    assert eval_rows(out / "eval.csv") == rows


# ------------------------------------------------------------------------------ dropout critics
def test_a_dropout_critic_plans_and_distils_without_dropout():
    # DroQ-style critics keep dropout in their losses; the planner's values (and the distilled
    # head's target) are the deterministic ensemble, as TD-MPC2 plans without dropout
    torch.manual_seed(0)
    agent = MRQ(tiny("mrsq_droq_small", "critic.dropout=0.5"), OBS_DIM, ACTION_DIM)
    agent.reward_scale = 1.5
    view = agent.acting_view()
    z = agent.encoder.zs(torch.randn(6, OBS_DIM))
    a = torch.rand(6, ACTION_DIM) * 2 - 1
    zsa = agent.encoder.zsa(z, a)
    assert agent.critic.training
    torch.testing.assert_close(view.value(z, a), view.value(z, a))
    agent.critic.eval()
    expected = agent.critic(zsa).amin(0) * 1.5  # eval mode: no dropout
    agent.critic.train()
    torch.testing.assert_close(view.value(z, a), expected)
    assert not torch.allclose(agent.critic(zsa), agent.critic(zsa))  # the losses' forward keeps dropout
    obs, act = torch.randn(5, OBS_DIM), torch.rand(5, ACTION_DIM) * 2 - 1
    torch.testing.assert_close(agent.value_estimate(obs, act)[0], agent.value_estimate(obs, act)[0])
    torch.testing.assert_close(agent.planner_value_estimate(obs, act), agent.planner_value_estimate(obs, act))

    distill = MRQ(tiny("mrsq_droq_small", "critic.dropout=0.5", "distill={head: {type: ensemble, num_members: 1, hidden_dim: 16, num_hidden: 1}}"), OBS_DIM, ACTION_DIM)
    seen = {}
    distill.distill_step = lambda zsa, q: seen.update(zsa=zsa, q=q) or torch.zeros(())
    distill.critic_step(make_batch(8, 3))
    torch.testing.assert_close(seen["q"], distill.critic.atoms(seen["zsa"], dropout=False).detach())


def test_the_trainer_prints_a_caution_before_any_work(tmp_path, capsys):
    from mrsq.training.loop import Trainer

    spec = tiny("mrsq_tqc_small", "aggregators.target=min", "train.env=gym:InvertedPendulum-v5", "train.steps=5",
                "train.device=cpu")
    Trainer(spec, tmp_path / "run", progress=False)  # built, not run
    err = capsys.readouterr().err
    assert "mrsq: warning: critic.type quantile_ensemble with aggregators.target 'min'" in err
    assert not (tmp_path / "run" / "eval.csv").exists()


def test_user_critics_written_to_the_documented_signatures_still_plan():
    """Critics that override forward(zsa) alone (with a dropout spec) or aggregate(x, agg,
    members) without a dropout keyword get no keyword from the planner or the diagnostics."""
    from typing import Literal

    from mrsq.critics import EnsembleCritic, EnsembleCriticSpec
    from mrsq.registry import CRITICS

    class ForwardOnlySpec(EnsembleCriticSpec):
        type: Literal["test_forward_only"] = "test_forward_only"

    class ForwardOnly(EnsembleCritic):
        def forward(self, zsa, members=None):  # the documented override: no dropout keyword
            return super().forward(zsa, members) * 1.0

    class OwnAggregateSpec(EnsembleCriticSpec):
        type: Literal["test_own_aggregate"] = "test_own_aggregate"

    class OwnAggregate(EnsembleCritic):
        def aggregate(self, x, aggregate, members=None):
            return super().aggregate(x, aggregate, members)

    for name, cls, spec_cls in (("test_forward_only", ForwardOnly, ForwardOnlySpec),
                                ("test_own_aggregate", OwnAggregate, OwnAggregateSpec)):
        if name not in CRITICS.names():
            CRITICS.add(name, cls, spec=spec_cls)
    for critic in ("{type: test_forward_only, num_members: 3, hidden_dim: 16, dropout: 0.01}",
                   "{type: test_own_aggregate, num_members: 3, hidden_dim: 16}"):
        torch.manual_seed(0)
        agent = MRQ(tiny("mrsq_small", f"critic={critic}"), OBS_DIM, ACTION_DIM)
        assert agent.critic_eval_dropout is None
        obs = torch.randn(OBS_DIM).numpy()
        assert agent.act(obs, explore=False, first=True).shape == (ACTION_DIM,)
        q, _ = agent.value_estimate(torch.randn(4, OBS_DIM), torch.rand(4, ACTION_DIM) * 2 - 1)
        assert torch.isfinite(q).all()
    # mrsq's own ensembles take the keyword
    assert MRQ(tiny("mrsq_droq_small"), OBS_DIM, ACTION_DIM).critic_eval_dropout is False
