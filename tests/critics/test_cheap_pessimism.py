"""The cheap-pessimism components (issue 17): the shared-trunk critic, member-subset evaluation,
quantile critics with truncation (TQC) and their hand-computed values, and the FLOPs they save."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq.bench import count_flops
from mrsq.critics import (EnsembleCritic, EnsembleCriticSpec, QuantileEnsembleCritic, QuantileEnsembleCriticSpec,
                          SharedTrunkCritic, SharedTrunkCriticSpec, build_aggregator, draw_members)
from mrsq.critics.aggregators import SubsetSpec, TruncatedMeanSpec, truncated_atoms
from mrsq.registry import AGGREGATORS


def _x(batch=5, dim=12):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------------------ shared trunk
def test_shared_trunk_with_nothing_shared_is_the_ensemble_value_for_value():
    torch.manual_seed(0)
    ens = EnsembleCritic(EnsembleCriticSpec(num_members=4, hidden_dim=16), 12)
    torch.manual_seed(0)
    trunk = SharedTrunkCritic(SharedTrunkCriticSpec(num_members=4, hidden_dim=16, shared_layers=0), 12)
    x = _x()
    assert torch.equal(ens(x), trunk(x))
    for a, b in zip(ens.parameters(), trunk.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shared", [1, 2, 3])
def test_shared_trunk_members_share_their_first_layers(shared):
    spec = SharedTrunkCriticSpec(num_members=3, hidden_dim=16, num_hidden=3, shared_layers=shared)
    critic = SharedTrunkCritic(spec, 12)
    shapes = [tuple(w.shape) for w in critic.weights]
    assert [s[0] for s in shapes] == [1] * shared + [3] * (4 - shared)  # the trunk is stored once
    x = _x()
    q = critic(x)
    for i in range(3):  # each member is the plain MLP trunk + its own head
        torch.testing.assert_close(critic.member(i)(x), q[i])
    assert not torch.allclose(q[0], q[1])  # heads are initialised independently
    # the trunk's gradient gathers every head's loss; a head's only its own
    loss = q[1].sum()
    loss.backward()
    assert critic.weights[0].grad.abs().sum() > 0
    head_grad = critic.weights[-1].grad
    assert head_grad[1].abs().sum() > 0 and head_grad[0].abs().sum() == 0 and head_grad[2].abs().sum() == 0


@pytest.mark.parametrize("shared", [0, 1, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_shared_trunk_by_hand_with_member_subsets(shared, affine):
    # an independent per-member MLP from the stored weights: layer l uses slice 0 in the trunk
    # (l < shared) and the member's own slice after it; LN (+ affine) and ELU after every hidden layer
    import torch.nn.functional as F

    spec = SharedTrunkCriticSpec(num_members=4, hidden_dim=16, num_hidden=3, shared_layers=shared,
                                 hidden_layer_norm_affine=affine)
    critic = SharedTrunkCritic(spec, 12)
    if affine:  # non-trivial scales and shifts, so a wrong slice shows
        with torch.no_grad():
            for p in [*critic.ln_weights, *critic.ln_biases]:
                p.normal_()
    x = _x()

    def by_hand(i, inp):
        h = inp
        for layer, (w, b) in enumerate(zip(critic.weights, critic.biases)):
            j = 0 if layer < shared else i
            h = h @ w[j] + b[j]
            if layer < len(critic.weights) - 1:
                h = F.layer_norm(h, h.shape[-1:])
                if affine:
                    h = h * critic.ln_weights[layer][j] + critic.ln_biases[layer][j]
                h = F.elu(h)
        return h

    q = critic(x)
    for i in range(4):
        torch.testing.assert_close(q[i], by_hand(i, x))
    members = torch.tensor([3, 1])
    torch.testing.assert_close(critic(x, members), q[members])  # only the drawn heads, same values
    per_member = torch.randn(2, 5, 12)  # [k, B, D] inputs, one per drawn member
    sub = critic(per_member, members)
    for row, i in enumerate(members.tolist()):
        torch.testing.assert_close(sub[row], by_hand(i, per_member[row]))
    # with a trunk, a subset saves only the heads' FLOPs
    big = SharedTrunkCritic(SharedTrunkCriticSpec(num_members=10, shared_layers=2), 512)
    xb = torch.randn(64, 512)
    ratio = count_flops(lambda: big(xb, torch.arange(3))) / count_flops(lambda: big(xb))
    assert ratio == pytest.approx((2 + 3) / 12, rel=0.01)


def test_shared_trunk_flops_fall_as_counted():
    x = torch.randn(64, 512)
    full = EnsembleCritic(EnsembleCriticSpec(num_members=10), 512)
    trunk = SharedTrunkCritic(SharedTrunkCriticSpec(num_members=10, shared_layers=2), 512)
    ratio = count_flops(lambda: trunk(x)) / count_flops(lambda: full(x))
    # matmuls 512x512 per layer: 2 + 10 of 30 (plus the 10 output columns, ~0.2%)
    assert ratio == pytest.approx(12 / 30, rel=0.01)


# ------------------------------------------------------------------------------ member subsets
def test_subset_evaluates_only_the_drawn_members():
    critic = EnsembleCritic(EnsembleCriticSpec(num_members=6, hidden_dim=16), 12)
    agg = build_aggregator(SubsetSpec(k=2, reduce="min"))
    torch.manual_seed(5)
    members = draw_members(agg, 6)
    torch.manual_seed(5)
    expected = torch.rand(6).argsort()[:2]  # the draw: k smallest of N uniforms (global generator)
    assert torch.equal(members, expected) and len(set(members.tolist())) == 2
    x = _x()
    q = critic(x)
    torch.testing.assert_close(critic.aggregate(x, agg, members), q[members].amin(0))
    mean = build_aggregator(SubsetSpec(k=2, reduce="mean"))
    torch.testing.assert_close(critic.aggregate(x, mean, members), q[members].mean(0))
    # FLOPs fall by k/N (the ensemble's matmuls are all the work)
    big = EnsembleCritic(EnsembleCriticSpec(num_members=10), 512)
    xb = torch.randn(64, 512)
    agg3 = build_aggregator(SubsetSpec(k=3))
    ratio = count_flops(lambda: big.aggregate(xb, agg3, draw_members(agg3, 10))) / count_flops(lambda: big(xb))
    assert ratio == pytest.approx(0.3, rel=1e-6)


def test_subset_refuses_all_members_values():
    agg = build_aggregator(SubsetSpec(k=2))
    with pytest.raises(ValueError, match="expected the k=2 drawn ones"):
        agg(torch.randn(5, 3, 1))
    with pytest.raises(ValueError, match="k=2 members to draw from a critic of 1 members"):
        draw_members(agg, 1)
    assert draw_members(build_aggregator(AGGREGATORS.spec("min")()), 5) is None  # no draw, no random numbers


def test_subset_draws_once_per_planning_call_and_once_per_update_batch(monkeypatch):
    from mrsq import specs
    from mrsq.agents.mrq import MRQ
    from mrsq.replay import LAPReplay
    from mrsq.testing import PointEnv

    spec = specs.load("mrsq_small", [
        "aggregators.planner={type: subset, k: 2}", "aggregators.target={type: subset, k: 3}",
        "encoder.zs_dim=16", "encoder.za_dim=8", "encoder.zsa_dim=16", "encoder.hidden_dim=16",
        "critic.hidden_dim=16", "policy.hidden_dim=16", "planner.num_samples=16", "planner.num_elites=4",
        "planner.num_policy_trajectories=2", "planner.iterations=3", "batch_size=8", "target_update_every=5"])
    env = PointEnv(dim=2, max_episode_steps=20, seed=0)
    agent = MRQ(spec, env.obs_dim, env.action_dim)
    draws = []
    original = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: draws.append(a[0]) or original(*a, **k))
    obs = env.reset()
    agent.act(obs, explore=True, first=True)
    assert draws == [5]  # one draw for the whole 3-iteration search
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=200, horizon=agent.replay_horizon, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        nxt, r, term, trunc = env.step(a)
        replay.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if term or trunc else nxt
    agent.update(replay)  # the first update also runs the encoder burst (no critic draws there)
    draws.clear()
    agent.update(replay)
    # one draw of 5 uniforms for the TD target of the batch (the policy's mean draws nothing; the
    # replay's own torch.rand draws the batch's 8 indices)
    assert draws.count(5) == 1 and set(draws) <= {5, 8}


def test_model_free_subsets_draw_once_per_critic_batch_and_once_per_policy_update(monkeypatch):
    # TD3 with G = 3 critic updates per env step and the policy after every second one: three
    # target draws and one policy draw of the 5 members per update, never one per member call
    from mrsq import specs
    from mrsq.registry import AGENTS
    from mrsq.replay import LAPReplay
    from mrsq.testing import PointEnv

    spec = specs.load("td3", [
        "critic={type: ensemble, num_members: 5, hidden_dim: 16, num_hidden: 2, activation: relu, layer_norm: false}",
        "aggregators.target={type: subset, k: 2}", "aggregators.policy={type: subset, k: 1, reduce: mean}",
        "policy.hidden_dim=16", "batch_size=8", "updates_per_step=3", "policy_delay=2", "compile=off"])
    env = PointEnv(dim=2, max_episode_steps=20, seed=0)
    agent = AGENTS.get("td3")(spec, env.obs_dim, env.action_dim)
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=200, horizon=agent.replay_horizon, seed=0)
    rng, obs = np.random.default_rng(0), env.reset()
    for _ in range(40):
        a = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        nxt, r, term, trunc = env.step(a)
        replay.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if term or trunc else nxt
    draws = []
    original = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: draws.append(a[0]) or original(*a, **k))
    agent.update(replay)  # critic updates 1-3: the policy after the 2nd
    assert draws.count(5) == 3 + 1 and set(draws) <= {5, 8}


# ------------------------------------------------------------------------------ TQC
def test_truncated_mean_by_hand():
    # two members, three quantiles each, one sample: pooled 1 2 3 4 5 6, drop 1 per member = top 2
    atoms = torch.tensor([[[1.0, 5.0, 3.0]], [[2.0, 4.0, 6.0]]])
    assert torch.equal(truncated_atoms(atoms, 1), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    agg = build_aggregator(TruncatedMeanSpec(drop=1))
    assert agg.pools_atoms
    torch.testing.assert_close(agg(atoms), torch.tensor([[2.5]]))
    torch.testing.assert_close(build_aggregator(TruncatedMeanSpec(drop=0))(atoms), torch.tensor([[3.5]]))
    with pytest.raises(ValueError, match="leaves nothing"):
        truncated_atoms(atoms, 3)


def test_quantile_huber_loss_by_hand():
    critic = QuantileEnsembleCritic(QuantileEnsembleCriticSpec(num_members=1, num_quantiles=2, hidden_dim=8), 4)
    assert critic.taus.tolist() == [0.25, 0.75]
    pred = torch.tensor([[[0.0, 1.0]]])  # [N=1, B=1, M=2]
    target = torch.tensor([[0.5]])  # one atom
    # delta = 0.5 - 0 = 0.5 >= 0: weight tau 0.25, huber 0.125; delta = 0.5 - 1 = -0.5 < 0: weight
    # |0.75 - 1| = 0.25, huber 0.125; mean of the two = 0.03125
    torch.testing.assert_close(critic.regression_loss(pred, target), torch.tensor(0.03125))
    # beyond kappa the loss is linear: delta = 3 for both quantiles of a 0-valued pred
    far = critic.regression_loss(torch.zeros(1, 1, 2), torch.tensor([[3.0]]))
    torch.testing.assert_close(far, torch.tensor((0.25 * 2.5 + 0.75 * 2.5) / 2))


def test_quantile_huber_loss_by_hand_two_members_two_target_atoms():
    # mean over target atoms (not the sum) and over members (not the sum): N=2, M=2, K=2, B=1
    critic = QuantileEnsembleCritic(QuantileEnsembleCriticSpec(num_members=2, num_quantiles=2, hidden_dim=8), 4)
    pred = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]])  # [N=2, B=1, M=2]
    target = torch.tensor([[0.5, 3.0]])  # two atoms
    # member 0: (tau .25, pred 0): atom .5 -> .25 * .125, atom 3 -> .25 * 2.5
    #           (tau .75, pred 1): atom .5 -> |.75 - 1| * .125, atom 3 -> .75 * 1.5 (delta 2, linear)
    m0 = (0.25 * 0.125 + 0.25 * 2.5 + 0.25 * 0.125 + 0.75 * 1.5) / 4
    # member 1 (both quantiles 0): atom .5 -> tau * .125, atom 3 -> tau * 2.5, for tau .25 and .75
    m1 = (0.25 * 0.125 + 0.25 * 2.5 + 0.75 * 0.125 + 0.75 * 2.5) / 4
    torch.testing.assert_close(critic.regression_loss(pred, target), torch.tensor((m0 + m1) / 2))
    torch.testing.assert_close(critic.regression_loss(pred, target, over_members="sum"), torch.tensor(m0 + m1))
    # kappa 2: the quadratic part reaches |delta| = 2, and the loss is divided by kappa
    wide = QuantileEnsembleCritic(QuantileEnsembleCriticSpec(num_members=1, num_quantiles=2, hidden_dim=8,
                                                             huber_kappa=2.0), 4)
    # pred 0, atom 3: |delta| 3 > 2: kappa * (3 - kappa / 2) = 4, divided by kappa = 2; tau .25 and .75
    torch.testing.assert_close(wide.regression_loss(torch.zeros(1, 1, 2), torch.tensor([[3.0]])),
                               torch.tensor((0.25 * 2.0 + 0.75 * 2.0) / 2))
    # pred 0, atom 1: |delta| 1 <= 2: 0.5 * 1 / kappa = 0.25
    torch.testing.assert_close(wide.regression_loss(torch.zeros(1, 1, 2), torch.tensor([[1.0]])),
                               torch.tensor((0.25 * 0.25 + 0.75 * 0.25) / 2))


def test_quantile_critic_targets_and_values():
    spec = QuantileEnsembleCriticSpec(num_members=2, num_quantiles=5, hidden_dim=16)
    critic = QuantileEnsembleCritic(spec, 12)
    x = _x()
    atoms = critic.atoms(x)
    assert atoms.shape == (2, 5, 5)
    torch.testing.assert_close(critic(x), atoms.mean(-1, keepdim=True))  # a member's value: its mean quantile
    trunc = build_aggregator(TruncatedMeanSpec(drop=2))
    target = critic.td_atoms(x, trunc)
    assert target.shape == (5, 2 * (5 - 2))
    pooled = atoms.permute(1, 0, 2).reshape(5, 10).sort(-1).values
    torch.testing.assert_close(target, pooled[:, :6])
    torch.testing.assert_close(critic.aggregate(x, trunc), pooled[:, :6].mean(-1, keepdim=True))
    # any other aggregator bootstraps from the members' values (one atom)
    mn = build_aggregator(AGGREGATORS.spec("min")())
    torch.testing.assert_close(critic.td_atoms(x, mn), critic(x).amin(0))
    # the policy's mean of all quantiles of all members
    mean = build_aggregator(AGGREGATORS.spec("mean")())
    torch.testing.assert_close(critic.aggregate(x, mean), atoms.mean(dim=(0, 2)).unsqueeze(-1))
