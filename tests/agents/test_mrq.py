"""MR.Q agent (mrsq.agents.mrq): targets, losses, gradient isolation, schedule, LAP, checkpoints.

A tiny agent (widths 16, batch 8) and hand-made ReplayBatch objects keep every test fast and
make the expected numbers computable by hand.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.agents.base import alive_before as _alive_before
from mrsq.agents.mrq import MRQ
from mrsq.replay import LAPReplay, ReplayBatch

OBS_DIM, ACTION_DIM = 4, 2
TINY = ["encoder.zs_dim=16", "encoder.za_dim=8", "encoder.zsa_dim=16", "encoder.hidden_dim=16",
        "critic.hidden_dim=16", "policy.hidden_dim=16", "batch_size=8", "target_update_every=3",
        "warmup_steps=0"]


def make_spec(*overrides: str):
    return specs.load("mrq_small", [*TINY, *overrides])


def make_agent(*overrides: str, seed: int = 0) -> MRQ:
    torch.manual_seed(seed)
    return MRQ(make_spec(*overrides), OBS_DIM, ACTION_DIM)


def make_batch(B: int, H: int, terminated=None, reward=None, seed: int = 0) -> ReplayBatch:
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(B, H) if terminated is None else torch.as_tensor(terminated, dtype=torch.float32).expand(B, H).clone()
    rew = torch.randn(B, H, generator=g) if reward is None else torch.as_tensor(reward, dtype=torch.float32).expand(B, H).clone()
    return ReplayBatch(
        obs=torch.randn(B, H, OBS_DIM, generator=g),
        action=torch.rand(B, H, ACTION_DIM, generator=g) * 2 - 1,
        reward=rew,
        next_obs=torch.randn(B, H, OBS_DIM, generator=g),
        terminated=term,
        indices=torch.arange(B),
    )


def replace(batch: ReplayBatch, **kw) -> ReplayBatch:
    d = {k: getattr(batch, k).clone() for k in ("obs", "action", "reward", "next_obs", "terminated", "indices")}
    d.update(kw)
    return ReplayBatch(**d)


def snapshot(agent: MRQ) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in agent.named_parameters()}


def changed(agent: MRQ, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in agent.named_parameters() if not torch.equal(p, before[n])}


def names(agent: MRQ, prefix: str) -> set[str]:
    return {n for n, _ in agent.named_parameters() if n.startswith(prefix + ".")}


def fill_replay(n: int = 120, capacity: int = 200, seed: int = 0, episode_len: int = 30,
                terminate: bool = True, min_priority: float = 1.0) -> LAPReplay:
    """Random transitions; rewards alternate -2, +4 so the mean |reward| is exactly 3."""
    rng = np.random.default_rng(seed)
    replay = LAPReplay(OBS_DIM, ACTION_DIM, capacity=capacity, horizon=5, seed=seed, min_priority=min_priority)
    for i in range(n):
        end = (i + 1) % episode_len == 0
        replay.add(rng.standard_normal(OBS_DIM), rng.uniform(-1, 1, ACTION_DIM), -2.0 if i % 2 == 0 else 4.0,
                   rng.standard_normal(OBS_DIM), terminated=end and terminate, truncated=end and not terminate)
    return replay


# ------------------------------------------------------------------ alive mask / n-step target
def test_alive_before_masks_steps_after_the_first_termination():
    term = torch.tensor([[0., 0., 0.], [0., 1., 0.], [1., 0., 0.], [0., 0., 1.], [1., 1., 1.]])
    expected = torch.tensor([[1., 1., 1.], [1., 1., 0.], [1., 0., 0.], [1., 1., 1.], [1., 0., 0.]])
    assert torch.equal(_alive_before(term), expected)


def _constant_target_critic(agent: MRQ, values: list[float]) -> None:
    """Make every target-critic member output a constant: zero last weights, bias = value."""
    with torch.no_grad():
        agent.critic_target.weights[-1].zero_()
        for i, v in enumerate(values):
            agent.critic_target.biases[-1][i].fill_(v)


def test_value_target_multi_step_hand_computed():
    agent = make_agent("target_policy_noise=0")
    c = 1.5
    _constant_target_critic(agent, [c, c + 5.0])  # min aggregator -> Qbar = c
    agent.reward_scale, agent.target_reward_scale = 2.0, 3.0
    rewards = [1.0, 2.0, 4.0]
    terminated = torch.tensor([[0., 0., 0.],    # no termination: full return + bootstrap
                               [0., 1., 0.],    # terminal at step 1: r0 + g r1, no bootstrap
                               [1., 0., 0.],    # terminal at step 0: r0 only
                               [0., 0., 1.],    # terminal at the last step: full return, no bootstrap
                               [1., 1., 1.]])   # flags after the first one are ignored
    batch = make_batch(5, 3, reward=rewards)
    batch = replace(batch, terminated=terminated)
    target = agent.value_target(batch)
    assert target.shape == (5, 1)
    full = 1.0 + 0.99 * 2.0 + 0.99**2 * 4.0  # 6.9004
    assert full == pytest.approx(6.9004)
    boot = 0.970299 * c * 3.0  # gamma^3 * Qbar * target_reward_scale
    expected = torch.tensor([[(6.9004 + boot) / 2.0],   # 5.63337275
                             [(1.0 + 0.99 * 2.0) / 2.0],  # 1.49
                             [1.0 / 2.0],
                             [6.9004 / 2.0],
                             [1.0 / 2.0]])
    assert expected[0, 0].item() == pytest.approx(5.63337275, rel=1e-6)
    torch.testing.assert_close(target, expected, rtol=1e-6, atol=1e-6)


def test_value_target_ignores_data_after_termination_and_uses_last_next_obs():
    agent = make_agent("target_policy_noise=0")
    agent.reward_scale, agent.target_reward_scale = 1.0, 1.0
    batch = make_batch(6, 3, terminated=[0., 1., 0.], seed=1)
    base = agent.value_target(batch)
    garbage = replace(batch, reward=batch.reward.clone().index_fill_(1, torch.tensor([2]), 1e3),
                      next_obs=batch.next_obs + 10.0,
                      terminated=batch.terminated.clone().index_fill_(1, torch.tensor([2]), 1.0))
    torch.testing.assert_close(agent.value_target(garbage), base, rtol=0, atol=0)
    # without termination, the bootstrap reads Qbar at next_obs[:, -1] (only that one)
    alive = make_batch(6, 3, seed=1)
    t0 = agent.value_target(alive)
    moved_early = replace(alive, next_obs=alive.next_obs.clone().index_fill_(1, torch.tensor([0, 1]), 5.0))
    torch.testing.assert_close(agent.value_target(moved_early), t0, rtol=0, atol=0)
    moved_last = replace(alive, next_obs=alive.next_obs.clone().index_fill_(1, torch.tensor([2]), 5.0))
    assert not torch.allclose(agent.value_target(moved_last), t0)


def test_value_target_uses_target_networks_and_min_over_members():
    agent = make_agent("target_policy_noise=0")
    agent.reward_scale, agent.target_reward_scale = 1.0, 1.0
    batch = make_batch(4, 3, reward=[0.0, 0.0, 0.0], seed=2)
    with torch.no_grad():
        zs = agent.encoder_target.zs(batch.next_obs[:, -1])
        a = agent.policy_target.act(zs)
        q = agent.critic_target(agent.encoder_target.zsa(zs, a))  # [2, B, 1]
    torch.testing.assert_close(agent.value_target(batch), 0.970299 * q.amin(0), rtol=1e-6, atol=1e-6)
    # online networks do not enter the target
    with torch.no_grad():
        for p in [*agent.critic.parameters(), *agent.policy.parameters(), *agent.encoder.parameters()]:
            p.add_(1.0)
    torch.testing.assert_close(agent.value_target(batch), 0.970299 * q.amin(0), rtol=1e-6, atol=1e-6)


def test_target_policy_noise_is_clipped(monkeypatch):
    agent = make_agent("target_policy_noise=100", "noise_clip=0.3")
    agent.reward_scale = agent.target_reward_scale = 1.0
    batch = make_batch(64, 3, reward=[0.0, 0.0, 0.0], seed=3)
    seen = []
    real_zsa = agent.encoder_target.zsa

    def spy(zs, a):
        seen.append(a)
        return real_zsa(zs, a)

    monkeypatch.setattr(agent.encoder_target, "zsa", spy)
    agent.value_target(batch)
    with torch.no_grad():
        clean = agent.policy_target.act(agent.encoder_target.zs(batch.next_obs[:, -1]))
    diff = (seen[0] - clean).abs()
    assert (seen[0].abs() <= 1).all()
    # the noise is clipped to 0.3 (then the action to [-1, 1]): never more than 0.3 away
    assert diff.max().item() <= 0.3 + 1e-6
    assert diff.max().item() > 0.2  # std 100: clipping is active


# ------------------------------------------------------------------ gradient isolation
ALL = ("encoder", "critic", "policy", "encoder_target", "critic_target", "policy_target")


def test_targets_never_require_grad():
    agent = make_agent()
    replay = fill_replay()
    for _ in range(2):
        agent.update(replay)
    for name in ("encoder_target", "critic_target", "policy_target"):
        assert not any(p.requires_grad for p in getattr(agent, name).parameters()), name
        assert all(p.grad is None for p in getattr(agent, name).parameters()), name
    for name in ("encoder", "critic", "policy"):  # `frozen` restored the online nets
        assert all(p.requires_grad for p in getattr(agent, name).parameters()), name


def test_encoder_step_changes_only_the_encoder():
    agent = make_agent()
    agent.env_terminates = True
    before = snapshot(agent)
    agent.encoder_step(make_batch(8, 5, terminated=[0, 0, 1, 0, 0]))
    assert changed(agent, before) == names(agent, "encoder")
    for name in ALL[1:]:
        assert all(p.grad is None for p in getattr(agent, name).parameters()), name


def test_critic_step_changes_only_the_critic():
    agent = make_agent()
    agent.reward_scale = agent.target_reward_scale = 1.0
    before = snapshot(agent)
    agent.critic_step(make_batch(8, 3))
    assert changed(agent, before) == names(agent, "critic")
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is None for p in agent.policy.parameters())
    assert all(p.grad is not None for p in agent.critic.parameters())


def test_policy_step_changes_only_the_policy():
    agent = make_agent()
    zs, _, _ = agent.critic_step(make_batch(8, 3))
    for p in [*agent.critic.parameters(), *agent.encoder.parameters()]:
        p.grad = None
    before = snapshot(agent)
    agent.policy_step(zs)
    assert changed(agent, before) == names(agent, "policy")
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is not None for p in agent.policy.parameters())


def test_policy_loss_hand_formula():
    agent = make_agent("losses.pre_activation=0.5")
    zs = torch.randn(8, 16)
    loss, metrics = agent.policy_loss(zs)
    with torch.no_grad():
        a, pre = agent.policy(zs)
        q = agent.critic(agent.encoder.zsa(zs, a))  # [2, B, 1]
        expected = -q.mean(0).mean() + 0.5 * pre.pow(2).mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert metrics["policy/pre_activation"].item() == pytest.approx(pre.pow(2).mean().item())


def test_critic_loss_is_huber_of_every_member_against_the_target():
    agent = make_agent("target_policy_noise=0")
    agent.reward_scale, agent.target_reward_scale = 2.0, 1.0
    batch = make_batch(8, 3, seed=4)
    loss, q, target, zs = agent.critic_loss(batch)
    with torch.no_grad():
        zs_ref = agent.encoder.zs(batch.obs[:, 0])
        q_ref = agent.critic(agent.encoder.zsa(zs_ref, batch.action[:, 0]))
    torch.testing.assert_close(zs, zs_ref)
    torch.testing.assert_close(q.detach(), q_ref)
    d = (q_ref - agent.value_target(batch)).abs()
    huber = torch.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    torch.testing.assert_close(loss.detach(), huber)


# ------------------------------------------------------------------ encoder loss
def reference_encoder_loss(agent: MRQ, batch: ReplayBatch, env_terminates: bool) -> torch.Tensor:
    """MR.Q's public train_encoder, with prev_not_done from the earlier steps."""
    w = agent.spec.losses
    H = batch.action.shape[1]
    with torch.no_grad():
        targets = [agent.encoder_target.zs(batch.next_obs[:, t]) for t in range(H)]
        zs = agent.encoder.zs(batch.obs[:, 0])
        prev_not_done = torch.ones(batch.action.shape[0], 1)
        total = torch.zeros(())
        for t in range(H):
            d, zs, r = agent.encoder.model_all(zs, batch.action[:, t])
            dyn = ((zs - targets[t]) ** 2 * prev_not_done).mean()
            rew = (agent.two_hot.cross_entropy(r, batch.reward[:, t]).unsqueeze(-1) * prev_not_done).mean()
            total = total + w.dynamics * dyn + w.reward * rew
            if env_terminates:
                total = total + w.termination * ((d - batch.terminated[:, t:t + 1]) ** 2 * prev_not_done).mean()
            prev_not_done = prev_not_done * (1 - batch.terminated[:, t:t + 1])
    return total


@pytest.mark.parametrize("env_terminates", [False, True])
def test_encoder_loss_matches_reference(env_terminates):
    agent = make_agent("losses.dynamics=2.0", "losses.reward=0.3", "losses.termination=0.7")
    with torch.no_grad():  # targets different from the online encoder
        for p in agent.encoder_target.parameters():
            p.mul_(0.5)
    agent.env_terminates = env_terminates
    term = torch.zeros(8, 5)
    term[0, 1] = term[1, 3] = term[2, 0] = term[3, 4] = 1.0
    batch = replace(make_batch(8, 5, seed=5), terminated=term)
    loss, metrics = agent.encoder_loss(batch)
    torch.testing.assert_close(loss.detach(), reference_encoder_loss(agent, batch, env_terminates), rtol=1e-5, atol=1e-6)
    assert ("encoder/termination" in metrics) == env_terminates
    expected = 2.0 * metrics["encoder/dynamics"] + 0.3 * metrics["encoder/reward"]
    if env_terminates:
        expected = expected + 0.7 * metrics["encoder/termination"]
    torch.testing.assert_close(metrics["encoder/loss"], expected)


def test_encoder_loss_ignores_steps_after_a_termination():
    agent = make_agent()
    agent.env_terminates = True
    t = 1  # termination at step 1 of 5 in every window
    batch = make_batch(8, 5, terminated=[0., 1., 0., 0., 0.], seed=6)
    base, _ = agent.encoder_loss(batch)
    after = slice(t + 1, None)
    reward, next_obs, term, action = (batch.reward.clone(), batch.next_obs.clone(),
                                      batch.terminated.clone(), batch.action.clone())
    reward[:, after] = 100.0
    next_obs[:, after] += 7.0
    term[:, after] = 1.0 - term[:, after]
    action[:, after] = -action[:, after]
    other, _ = agent.encoder_loss(replace(batch, reward=reward, next_obs=next_obs, terminated=term, action=action))
    torch.testing.assert_close(other, base, rtol=0, atol=0)
    # ...but the terminal step itself counts (so the test above can fail)
    reward_t = batch.reward.clone()
    reward_t[:, t] = 100.0
    changed_loss, _ = agent.encoder_loss(replace(batch, reward=reward_t))
    assert changed_loss.item() > base.item() + 1e-3
    next_obs_t = batch.next_obs.clone()
    next_obs_t[:, t] += 7.0
    changed_loss, _ = agent.encoder_loss(replace(batch, next_obs=next_obs_t))
    assert not torch.allclose(changed_loss, base)


def test_termination_term_only_when_env_terminates():
    agent = make_agent()
    batch = make_batch(8, 5, terminated=[0., 0., 1., 0., 0.], seed=7)
    agent.env_terminates = False
    loss_off, m_off = agent.encoder_loss(batch)
    assert "encoder/termination" not in m_off
    torch.testing.assert_close(loss_off, m_off["encoder/dynamics"] + 0.1 * m_off["encoder/reward"])
    agent.env_terminates = True
    loss_on, m_on = agent.encoder_loss(batch)
    assert m_on["encoder/termination"].item() > 0
    torch.testing.assert_close(loss_on.detach(), loss_off.detach() + 0.1 * m_on["encoder/termination"])


# ------------------------------------------------------------------ update() schedule
def test_update_schedule_targets_scales_and_encoder_burst(monkeypatch):
    agent = make_agent()  # target_update_every = 3
    replay = fill_replay()
    assert replay.reward_scale() == pytest.approx(3.0)
    calls = []
    real_encoder_step = agent.encoder_step

    def counting(batch):
        calls.append(batch.action.shape)
        return real_encoder_step(batch)

    monkeypatch.setattr(agent, "encoder_step", counting)
    online_before = {k: {n: p.detach().clone() for n, p in getattr(agent, k).named_parameters()}
                     for k in ("encoder", "critic", "policy")}

    agent.update(replay)  # training_steps 0 -> 1: copy, refresh scales, burst of 3
    assert agent.training_steps == 1
    assert len(calls) == 3
    assert all(shape == (8, 5, ACTION_DIM) for shape in calls)  # encoder horizon 5
    assert agent.env_terminates is True
    assert agent.target_reward_scale == 1.0  # previous reward_scale (MR.Q starts at 1)
    assert agent.reward_scale == pytest.approx(3.0)  # mean |reward| of the replay
    for k in ("encoder", "critic", "policy"):
        target = dict(getattr(agent, k + "_target").named_parameters())
        online = dict(getattr(agent, k).named_parameters())
        for n, p in online_before[k].items():
            assert torch.equal(target[n], p), f"{k}_target.{n} is not the pre-burst copy"
            assert not torch.equal(online[n], p), f"{k}.{n} was not trained"
    targets_after_first = {n: p.detach().clone() for n, p in agent.named_parameters() if "_target." in n}

    agent.update(replay)  # 1 -> 2: no copy, no burst
    agent.update(replay)  # 2 -> 3
    assert len(calls) == 3
    assert agent.reward_scale == pytest.approx(3.0) and agent.target_reward_scale == 1.0
    for n, p in agent.named_parameters():
        if "_target." in n:
            assert torch.equal(p, targets_after_first[n]), n

    replay.add(np.zeros(OBS_DIM), np.zeros(ACTION_DIM), 30.0, np.zeros(OBS_DIM), False, False)
    scale_now = replay.reward_scale()
    online_now = {n: p.detach().clone() for n, p in agent.named_parameters() if "_target." not in n}
    agent.update(replay)  # 3 -> 4: (4 - 1) % 3 == 0 -> copy + burst again
    assert len(calls) == 6
    assert agent.target_reward_scale == pytest.approx(3.0)
    assert agent.reward_scale == pytest.approx(scale_now)
    params = dict(agent.named_parameters())
    for n, p in online_now.items():
        k, rest = n.split(".", 1)
        assert torch.equal(params[f"{k}_target.{rest}"], p), n


def test_update_returns_metrics_and_sets_priorities(monkeypatch):
    agent = make_agent("target_policy_noise=0")  # duplicate starts in a batch get equal errors
    replay = fill_replay(min_priority=1e-3)
    seen = {}
    real_update_priority = replay.update_priority

    def capture(indices, td_error):
        seen["indices"], seen["td"] = indices.clone(), td_error.clone()
        real_update_priority(indices, td_error)

    monkeypatch.setattr(replay, "update_priority", capture)
    monkeypatch.setattr(type(replay), "priorities", property(lambda self: pytest.fail("update() read all priorities")))
    metrics = agent.update(replay)
    monkeypatch.undo()
    for key in ("encoder/loss", "encoder/dynamics", "encoder/reward", "encoder/termination",
                "critic/loss", "critic/q_mean", "critic/grad_norm", "policy/loss", "policy/pre_activation"):
        assert key in metrics and torch.isfinite(metrics[key]), key
        assert not metrics[key].requires_grad
    assert seen["indices"].shape == (8,) and seen["td"].shape == (8,)
    assert (seen["td"] > 1e-3).all() and seen["td"].unique().numel() > 1
    torch.testing.assert_close(replay.priorities[seen["indices"]], seen["td"].pow(0.4))


# ------------------------------------------------------------------ LAP priorities
def test_lap_td_error_is_max_over_members_on_replay_actions():
    agent = make_agent("target_policy_noise=0", "critic.num_members=3")
    agent.reward_scale, agent.target_reward_scale = 0.5, 1.0
    batch = make_batch(8, 3, seed=8)
    with torch.no_grad():
        target = agent.value_target(batch)
        zs = agent.encoder.zs(batch.obs[:, 0])
        q_replay = agent.critic(agent.encoder.zsa(zs, batch.action[:, 0]))  # [3, B, 1]
        q_pi = agent.critic(agent.encoder.zsa(zs, agent.policy.act(zs)))
    expected = (q_replay - target).abs().amax(0).reshape(-1)
    _, _, td = agent.critic_step(batch)
    assert td.shape == (8,)
    torch.testing.assert_close(td, expected)
    # not the public code's |Q(s, pi(s)) - target| and not the min over members
    assert not torch.allclose(td, (q_pi - target).abs().amax(0).reshape(-1))
    assert not torch.allclose(td, (q_replay - target).abs().amin(0).reshape(-1))


# ------------------------------------------------------------------ checkpoints
def test_training_state_round_trip_reproduces_actions_and_updates():
    agent = make_agent("target_update_every=2", seed=0)
    replay = fill_replay(seed=1)
    torch.manual_seed(1)
    for _ in range(2):
        agent.update(replay)
    buf = io.BytesIO()
    torch.save(agent.training_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    fresh = make_agent("target_update_every=2", seed=123)
    assert not torch.equal(fresh.policy.net.layers[0].weight, agent.policy.net.layers[0].weight)
    fresh.load_training_state(state)
    assert fresh.training_steps == 2 and fresh.env_terminates is True
    assert fresh.reward_scale == agent.reward_scale and fresh.target_reward_scale == agent.target_reward_scale
    for (n, p), (m, q) in zip(agent.state_dict().items(), fresh.state_dict().items()):
        assert n == m and torch.equal(p, q), n

    obs = np.random.default_rng(0).standard_normal((5, OBS_DIM)).astype(np.float32)
    for o in obs:
        np.testing.assert_array_equal(fresh.act(o, explore=False), agent.act(o, explore=False))
        torch.manual_seed(7)
        a = agent.act(o, explore=True)
        torch.manual_seed(7)
        np.testing.assert_array_equal(fresh.act(o, explore=True), a)

    replay_copy = LAPReplay(OBS_DIM, ACTION_DIM, capacity=200, horizon=5)
    replay_copy.load_state_dict(replay.state_dict())
    for step in range(2):  # step 3 is a copy + burst step (target_update_every=2), step 4 is not
        torch.manual_seed(100 + step)
        m1 = agent.update(replay)
        torch.manual_seed(100 + step)
        m2 = fresh.update(replay_copy)
        assert m1.keys() == m2.keys()
        for k in m1:
            torch.testing.assert_close(m2[k], m1[k], rtol=0, atol=0, msg=k)
    for (n, p), (_, q) in zip(agent.state_dict().items(), fresh.state_dict().items()):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=n)
    torch.testing.assert_close(replay_copy.priorities, replay.priorities, rtol=0, atol=0)


def test_training_state_includes_optimizer_moments():
    agent = make_agent()
    agent.update(fill_replay())
    state = agent.training_state()
    for k in ("encoder_optim", "critic_optim", "policy_optim"):
        opt_state = state["optimizers"][k]["state"]
        assert opt_state and all("exp_avg" in s for s in opt_state.values()), k
    assert set(state["modules"]) == {"encoder", "encoder_target", "critic", "critic_target",
                                     "policy", "policy_target", "planner"}


def test_encoder_loss_unrolls_exactly_encoder_horizon_steps():
    """value_horizon > encoder_horizon: the replay's windows are 4 long, the encoder batch 2."""
    agent = make_agent("encoder_horizon=2", "value_horizon=4")
    replay = LAPReplay(OBS_DIM, ACTION_DIM, capacity=100, horizon=4, seed=0)
    rng = np.random.default_rng(0)
    for t in range(60):
        replay.add(rng.standard_normal(OBS_DIM), rng.uniform(-1, 1, ACTION_DIM), 1.0,
                   rng.standard_normal(OBS_DIM), False, t % 20 == 19)
    seen = []
    sample = replay.sample
    replay.sample = lambda b, horizon=None: seen.append(horizon) or sample(b, horizon=horizon)
    encoder_batches = []
    agent.encoder_step = lambda batch: encoder_batches.append(batch.obs.shape[1]) or {}
    agent.update(replay)  # first update: a burst of target_update_every encoder steps
    assert encoder_batches and set(encoder_batches) == {2}
    assert 4 in seen  # the critic's 4-step windows
