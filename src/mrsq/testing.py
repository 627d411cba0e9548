"""Public test helpers: run mrsq's contract checks on your own components, with small fakes.

    from mrsq.testing import check_component
    def test_my_encoder():
        check_component("encoder", "my_encoder")        # registered name (or pass a spec)

Each check builds the component from its spec (default spec unless given), then asserts the
output shapes, that every output is finite and that gradients reach every parameter. The fakes
(:class:`PointEnv`, :class:`QuadraticModel`) are tiny, deterministic stand-ins for an
environment and for a latent model seen by a planner.
"""

from __future__ import annotations

import numpy as np
import torch

from mrsq.envs.base import Env, fill_with_random_actions
from mrsq.registry import AGENTS, CRITICS, ENCODERS, ENVS, POLICIES

OBS_DIM, ACTION_DIM, BATCH = 7, 3, 5


def _spec(registry, name_or_spec):
    if isinstance(name_or_spec, str):
        return registry.spec(name_or_spec)()
    return name_or_spec


def _assert_finite(name: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        assert torch.isfinite(t).all(), f"{name}: non-finite output"


def _assert_grads(name: str, module: torch.nn.Module, loss: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"{name}: no (finite) gradient reaches {missing}"
    dead = [n for n, p in module.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
    assert not dead, f"{name}: gradient is exactly zero for {dead}"


def check_encoder(name_or_spec, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM, batch: int = BATCH):
    spec = _spec(ENCODERS, name_or_spec)
    model = ENCODERS.get(spec.type)(spec, obs_dim, action_dim)
    obs, act = torch.randn(batch, obs_dim), torch.rand(batch, action_dim) * 2 - 1
    if getattr(spec, "pixels", None) is not None:  # pixels arrive as uint8 frames
        obs = torch.randint(0, 256, (batch, obs_dim), dtype=torch.uint8)
    zs = model.zs(obs)
    assert zs.shape == (batch, spec.zs_dim), f"{spec.type}: zs shape {tuple(zs.shape)}"
    zsa = model.zsa(zs, act)
    assert zsa.shape == (batch, spec.zsa_dim), f"{spec.type}: zsa shape {tuple(zsa.shape)}"
    done, next_zs, reward = model.model(zsa)
    assert done.shape == (batch, 1) and next_zs.shape == (batch, spec.zs_dim)
    assert reward.shape == (batch, spec.num_bins)
    _assert_finite(spec.type, zs, zsa, done, next_zs, reward)
    loss = zs.square().mean() + done.square().mean() + next_zs.square().mean() + reward.square().mean() + zsa.mean()
    _assert_grads(spec.type, model, loss)
    return model


def check_pixel_encoder(name_or_spec, frames: int = 3, batch: int = 4):
    """A pixel encoder (conv stack) inside an SEM latent model, at its spec's frame size with 4
    channels: the encoder contract on uint8 frame stacks, and its training-batch augmentation
    keeps shapes and dtype."""
    from mrsq.registry import PIXEL_ENCODERS

    spec = _spec(PIXEL_ENCODERS, name_or_spec).model_copy(update={"channels": 4})
    latent = ENCODERS.spec("sem").model_validate({"type": "sem", "zs_dim": 32, "za_dim": 16, "zsa_dim": 32,
                                                  "hidden_dim": 32, "pixels": spec.model_dump()})
    size = spec.DEFAULT_SIZE if spec.image_size == "auto" else spec.image_size
    obs_dim = 3 * frames * size**2
    model = check_encoder(latent, obs_dim=obs_dim, batch=batch)
    obs = torch.randint(0, 256, (batch, 2, obs_dim), dtype=torch.uint8)
    augmented = model.augment(obs)
    assert augmented.shape == obs.shape and augmented.dtype == obs.dtype, (
        f"{spec.type}: augment changed {tuple(obs.shape)} uint8 into {tuple(augmented.shape)} {augmented.dtype}")
    return model


def check_critic(name_or_spec, input_dim: int = 16, batch: int = BATCH):
    spec = _spec(CRITICS, name_or_spec)
    critic = CRITICS.get(spec.type)(spec, input_dim)
    q = critic(torch.randn(batch, input_dim))
    n = spec.num_members
    assert q.shape == (n, batch, 1), f"{spec.type}: values shape {tuple(q.shape)}, expected ({n}, {batch}, 1)"
    _assert_finite(spec.type, q)
    # Each member must depend on the parameters: with stacked parameters ([N, ...]) a member that
    # outputs a constant would otherwise pass the whole-tensor gradient check below.
    params = [p for p in critic.parameters() if p.requires_grad]
    for i in range(n):
        grads = torch.autograd.grad(q[i].square().mean(), params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), \
            f"{spec.type}: gradient is exactly zero for every parameter of member {i}"
    _assert_grads(spec.type, critic, q.square().mean())
    if hasattr(critic, "atoms"):  # the agent-facing methods of mrsq's ensembles (EnsembleCritic)
        _check_critic_methods(spec, critic, input_dim, batch)
    return critic


def _check_critic_methods(spec, critic, input_dim: int, batch: int) -> None:
    """atoms / members subset / aggregate / td_atoms / regression_loss, as the agents call them."""
    from mrsq.critics.aggregators import build_aggregator, evaluates_subsets
    from mrsq.registry import AGGREGATORS

    name, n = spec.type, spec.num_members
    x = torch.randn(batch, input_dim)
    critic.eval()  # no dropout: the subset must reproduce the full evaluation exactly
    try:
        q = critic(x)
        atoms = critic.atoms(x)
        assert atoms.dim() == 3 and atoms.shape[:2] == (n, batch), f"{name}: atoms shape {tuple(atoms.shape)}"
        if evaluates_subsets(type(critic)):  # forward(x, members): the subset aggregator's contract
            members = torch.tensor([n - 1, 0]) if n > 1 else torch.tensor([0])
            sub = critic(x, members)
            assert sub.shape == (len(members), batch, 1), \
                f"{name}: values of members {members.tolist()}: {tuple(sub.shape)}"
            torch.testing.assert_close(sub, q[members], msg=f"{name}: members {members.tolist()} evaluated alone differ")
        agg = build_aggregator(AGGREGATORS.spec("min")())
        torch.testing.assert_close(critic.aggregate(x, agg), q.float().amin(0), msg=f"{name}: aggregate(min)")
        target = critic.td_atoms(x, agg)
        assert target.dim() == 2 and target.shape[0] == batch, f"{name}: td_atoms shape {tuple(target.shape)}"
    finally:
        critic.train()
    pred = critic.atoms(x)
    loss = critic.regression_loss(pred, torch.randn(batch, 1))
    assert loss.dim() == 0 and torch.isfinite(loss), f"{name}: regression_loss {loss!r}"
    _assert_grads(name, critic, loss)
    td = critic.td_error(pred.detach(), torch.randn(batch, 1))
    assert td.shape == (batch,) and (td >= 0).all(), f"{name}: td_error shape {tuple(td.shape)}"


def check_policy(name_or_spec, input_dim: int = 16, action_dim: int = ACTION_DIM, batch: int = BATCH):
    spec = _spec(POLICIES, name_or_spec)
    policy = POLICIES.get(spec.type)(spec, input_dim, action_dim)
    action, pre = policy(torch.randn(batch, input_dim))
    assert action.shape == (batch, action_dim) and pre.shape == (batch, action_dim)
    assert (action.abs() <= 1).all(), f"{spec.type}: actions leave [-1, 1]"
    _assert_finite(spec.type, action, pre)
    _assert_grads(spec.type, policy, action.sum() + pre.square().mean())
    return policy


def _small_agent_spec(name_or_spec, overrides):
    """A registered agent's default spec made tiny (widths 32, batch 16, planner 32 samples) for
    a fast contract check; a spec object is used as given."""
    from mrsq import specs  # (the built-ins register on the first registry lookup)

    if not isinstance(name_or_spec, str):
        return name_or_spec
    data = {"type": name_or_spec, "batch_size": 16, "warmup_steps": 0, "compile": "off", "precision": "fp32"}
    defaults = AGENTS.spec(name_or_spec)().model_dump()
    for field, small in (("encoder", {"zs_dim": 32, "za_dim": 16, "zsa_dim": 32, "hidden_dim": 32}),
                         ("critic", {"hidden_dim": 32}), ("policy", {"hidden_dim": 32})):
        value = defaults.get(field)
        if isinstance(value, dict) and "type" in value:
            data[field] = {**value, **{k: v for k, v in small.items() if k in value}}
    planner = defaults.get("planner") or {}
    if "num_samples" in planner:
        small = {"num_samples": 32, "num_elites": 4, "num_policy_trajectories": 4, "iterations": 2}
        data["planner"] = {**planner, **{k: v for k, v in small.items() if k in planner}}
    if "target_update_every" in defaults:
        data["target_update_every"] = 5
    return specs.validate(specs.apply_overrides(data, overrides), where=f"agent {name_or_spec}")


def check_agent(name_or_spec, steps: int = 40, overrides: tuple[str, ...] = ()):
    """The agent interface the training loop relies on (:mod:`mrsq.agents.base`), on
    :class:`PointEnv` with a real replay: ``act`` gives finite actions in [-1, 1] of the right
    shape, ``update`` returns finite scalar tensors named in ``METRICS`` and changes the weights,
    ``value_estimate`` has the documented shapes, a model-free agent has no planning view, and
    ``training_state`` restores an agent that acts identically. Returns the trained agent."""
    from mrsq.agents.base import Agent
    from mrsq.replay import LAPReplay

    spec = _small_agent_spec(name_or_spec, overrides)
    env = PointEnv(dim=ACTION_DIM, max_episode_steps=15, seed=0)
    agent = AGENTS.get(spec.type)(spec, env.obs_dim, env.action_dim)
    name = spec.type
    assert isinstance(agent, Agent), f"{name}: must subclass mrsq.agents.Agent"
    horizon = agent.replay_horizon
    assert isinstance(horizon, int) and horizon >= 1, f"{name}: replay_horizon {horizon!r}"
    if type(spec).MODEL_FREE:
        assert agent.acting_view() is None, f"{name}: a model-free agent has no planning view"
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=steps + 64, horizon=horizon, seed=0,
                       prioritized=spec.replay.prioritized)
    # a little random data first, so every window length can be sampled
    obs = fill_with_random_actions(env, replay, 32)
    before = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    first = True
    for _ in range(steps):
        action = agent.act(obs, explore=True, first=first)
        assert isinstance(action, np.ndarray) and action.shape == (env.action_dim,), f"{name}: action {action!r}"
        assert np.isfinite(action).all() and (np.abs(action) <= 1).all(), f"{name}: action {action} leaves [-1, 1]"
        nxt, r, term, trunc = env.step(action)
        replay.add(obs, action, r, nxt, term, trunc)
        obs, first = (env.reset(), True) if term or trunc else (nxt, False)
        if first:
            agent.planner.reset()
        metrics = agent.update(replay)
        unknown = set(metrics) - set(agent.METRICS)
        assert not unknown, f"{name}: update returned {sorted(unknown)}, not in its METRICS {agent.METRICS}"
        for k, v in metrics.items():
            assert torch.is_tensor(v) and v.numel() == 1 and torch.isfinite(v).all(), f"{name}: metric {k} = {v!r}"
    changed = [k for k, v in agent.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, f"{name}: {steps} updates changed no weight"
    q, std = agent.value_estimate(torch.randn(6, env.obs_dim), torch.rand(6, env.action_dim) * 2 - 1)
    assert q.shape == (6,) and std.shape == (6,) and torch.isfinite(q).all(), f"{name}: value_estimate shapes"
    assert agent.pop_divergence(explore=True) >= 0
    # checkpoint round trip: a fresh agent loaded from training_state acts identically
    clone = AGENTS.get(spec.type)(spec, env.obs_dim, env.action_dim)
    clone.load_training_state(agent.training_state())
    for k, v in agent.state_dict().items():
        assert torch.equal(v, clone.state_dict()[k]), f"{name}: {k} differs after load_training_state"
    torch.manual_seed(7)
    a1 = agent.act(obs, explore=False, first=True)
    torch.manual_seed(7)
    a2 = clone.act(obs, explore=False, first=True)
    np.testing.assert_allclose(a1, a2, atol=1e-6, err_msg=f"{name}: restored agent acts differently")
    return agent


def check_aggregator(name_or_spec, members: int = 5, batch: int = BATCH):
    """An aggregator reduces the member dimension only: ``[N, B, 1] -> [B, 1]`` (a subset one
    gets its ``k`` drawn members, an atom-pooling one ``[N, B, M]``), finite, row ``b`` of the
    output depends on row ``b`` of the input alone, gradients flow back to the values (the policy
    loss differentiates through it), and a ``k`` field refuses ``k = 0``."""
    from pydantic import ValidationError

    from mrsq.critics.aggregators import build_aggregator, draw_members
    from mrsq.registry import AGGREGATORS

    spec = _spec(AGGREGATORS, name_or_spec)
    name = spec.type
    if "k" in type(spec).model_fields:
        try:
            type(spec)(**{**spec.model_dump(), "k": 0})
        except ValidationError:
            pass
        else:
            raise AssertionError(f"{name}: k=0 is accepted; give the field a lower bound (Field(..., ge=1))")
    agg = build_aggregator(spec)
    atoms = getattr(spec, "drop", 0) + 3 if agg.pools_atoms else 1
    drawn = draw_members(agg, members)
    rows = members if drawn is None else len(drawn)
    torch.manual_seed(0)
    values = torch.randn(rows, batch, atoms, requires_grad=True)
    out = agg(values)
    assert isinstance(out, torch.Tensor) and out.shape == (batch, 1), (
        f"{name}: returned shape {tuple(getattr(out, 'shape', ()))} for values {tuple(values.shape)}; an aggregator "
        f"reduces the member dimension: [N, B, {atoms}] -> [B, 1]")
    _assert_finite(name, out)
    part = agg(values[:, :2].detach())
    assert torch.allclose(part, out[:2].detach(), atol=1e-5), f"{name}: output rows depend on other batch rows " \
                                                              "(reduce over dim 0, the members, only)"
    assert out.requires_grad, f"{name}: no gradient reaches the values (the policy loss differentiates through it)"
    out.sum().backward()
    assert values.grad is not None and torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0, (
        f"{name}: no gradient reaches the values (the policy loss differentiates through the aggregator)")
    return agg


def check_planner(name_or_spec, action_dim: int = 2, seed: int = 0):
    """A planner returns an action ``[A]`` in [-1, 1], finite, on a hand-written model
    (:class:`QuadraticModel`); the same seed gives the same action; ``reset`` forgets the warm
    start (a plan after reset equals the first plan under the same seed)."""
    from mrsq.registry import PLANNERS

    spec = _spec(PLANNERS, name_or_spec)
    name = spec.type
    planner = PLANNERS.get(spec.type)(spec, action_dim)
    model = QuadraticModel(a_star=[0.5, -0.3, 0.2, 0.0][:action_dim] + [0.0] * max(0, action_dim - 4))
    obs = torch.zeros(1, 2)

    def plan(first: bool, explore: bool = False) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return planner.plan(model, obs, first=first, explore=explore)

    planner.reset()
    first = plan(True)
    assert isinstance(first, torch.Tensor) and first.shape == (action_dim,), (
        f"{name}: plan returned {type(first).__name__} of shape {tuple(getattr(first, 'shape', ()))}, expected a "
        f"tensor [{action_dim}]")
    _assert_finite(name, first)
    assert bool((first.abs() <= 1).all()), f"{name}: action {first.tolist()} outside [-1, 1]"
    plan(False, explore=True)  # a later step of the episode, exploring
    planner.reset()
    again = plan(True)
    assert torch.equal(again, first), f"{name}: after reset() and the same seed the plan differs ({again.tolist()} " \
                                      f"vs {first.tolist()}): reset must clear every warm-start state"
    return planner


def plan_steps(planner, model, obs: torch.Tensor, calls: int) -> torch.Tensor:
    """``calls`` consecutive actions from ``obs`` (the first an episode start, so the later ones
    start warm) -> the last action: how a planner test lets the warm start converge."""
    action = None
    for i in range(calls):
        action = planner.plan(model, obs, first=i == 0)
    return action


def check_env(env_id: str, steps: int = 60, seed: int = 0):
    """An environment: reset and step return ``[obs_dim]`` observations of its ``obs_dtype``
    (float32; uint8 pixels), finite float
    rewards and bool flags; actions in [-1, 1] of ``action_dim`` are accepted; the same seed
    gives the same first observation."""
    from mrsq.envs import make_env

    env, twin = make_env(env_id, seed), make_env(env_id, seed)
    try:
        assert isinstance(env.obs_dim, int) and env.obs_dim >= 1 and isinstance(env.action_dim, int) and \
            env.action_dim >= 1, f"{env_id}: obs_dim / action_dim must be positive ints ({env.obs_dim!r}, " \
                                 f"{env.action_dim!r})"

        def check_obs(obs, where: str) -> None:
            obs = np.asarray(obs)
            assert obs.shape == (env.obs_dim,), f"{env_id}: {where} gave an observation of shape {obs.shape}, " \
                                               f"expected ({env.obs_dim},)"
            expected = np.dtype(getattr(env, "obs_dtype", np.float32))
            assert obs.dtype == expected, f"{env_id}: {where} gave {obs.dtype} observations, expected {expected}"
            assert np.isfinite(obs).all(), f"{env_id}: {where} gave a non-finite observation"

        obs = env.reset(seed=seed)
        check_obs(obs, "reset")
        assert np.array_equal(obs, twin.reset(seed=seed)), f"{env_id}: the same seed gave different first observations"
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            out = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
            assert isinstance(out, tuple) and len(out) == 4, f"{env_id}: step must return (obs, reward, terminated, " \
                                                             "truncated)"
            obs, reward, terminated, truncated = out
            check_obs(obs, "step")
            assert isinstance(reward, (float, int, np.floating)) and np.isfinite(reward), (
                f"{env_id}: reward {reward!r} is not a finite number")
            assert isinstance(terminated, (bool, np.bool_)) and isinstance(truncated, (bool, np.bool_)), (
                f"{env_id}: terminated / truncated must be bools, got {type(terminated).__name__} / "
                f"{type(truncated).__name__}")
            if terminated or truncated:
                check_obs(env.reset(), "reset after an episode end")
    finally:
        env.close()
        twin.close()
    return env


CHECKS = {"encoder": check_encoder, "pixel_encoder": check_pixel_encoder, "critic": check_critic, "policy": check_policy, "agent": check_agent,
          "aggregator": check_aggregator, "planner": check_planner, "env": check_env}


def check_component(family: str, name_or_spec, **kwargs):
    """Run the contract check of ``family`` on a component: 'encoder', 'critic', 'policy',
    'aggregator', 'planner' and 'agent' take a registered name or a spec, 'env' an env id such as
    ``'gym:Hopper-v5'`` or ``'myprefix:task'``."""
    if family not in CHECKS:
        raise ValueError(f"no contract check for family {family!r} (have: {', '.join(CHECKS)})")
    return CHECKS[family](name_or_spec, **kwargs)


def random_return(env_id: str, episodes: int, seed: int) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes of ``env_id`` (env
    and numpy generator seeded with ``seed``): the baseline learning tests must beat."""
    from mrsq.envs import make_env

    env = make_env(env_id, seed)
    rng = np.random.default_rng(seed)
    returns = []
    for _ in range(episodes):
        env.reset()
        done, total = False, 0.0
        while not done:
            _, reward, terminated, truncated = env.step(rng.uniform(-1, 1, env.action_dim))
            total += reward
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


# ------------------------------------------------------------------------------------ fakes
class PointEnv(Env):
    """A point in [-1, 1]^d pushed by the action; reward = -||x - goal||. Episodes last
    ``max_episode_steps`` (truncation); with ``terminate=True`` reaching the goal terminates."""

    def __init__(self, dim: int = 2, max_episode_steps: int = 50, seed: int = 0, terminate: bool = False) -> None:
        self.env_id, self.obs_dim, self.action_dim = f"fake:point{dim}", 2 * dim, dim
        self.max_episode_steps, self.terminate = max_episode_steps, terminate
        self._rng = np.random.default_rng(seed)
        self.goal = np.full(dim, 0.5, dtype=np.float32)
        self._x, self._t = np.zeros(dim, np.float32), 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._x, self.goal]).astype(np.float32)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._x = self._rng.uniform(-1, 1, self.action_dim).astype(np.float32)
        self._t = 0
        return self._obs()

    def step(self, action):
        self._x = np.clip(self._x + 0.2 * np.clip(action, -1, 1), -1, 1).astype(np.float32)
        self._t += 1
        dist = float(np.linalg.norm(self._x - self.goal))
        terminated = bool(self.terminate and dist < 0.05)
        return self._obs(), -dist, terminated, self._t >= self.max_episode_steps


class PixelPointEnv(PointEnv):
    """:class:`PointEnv` in 2-D seen as pixels, no renderer needed: each frame is a dark
    ``size x size`` RGB image with the point as a bright red square and the goal a green one;
    observations stack the last 3 frames (uint8, flat, oldest first) as ``dmcpix:`` does, the
    reset frame filling the stack. For testing pixel components and presets anywhere."""

    obs_dtype = np.uint8
    frame_stack = 3

    def __init__(self, size: int = 32, max_episode_steps: int = 50, seed: int = 0) -> None:
        super().__init__(dim=2, max_episode_steps=max_episode_steps, seed=seed)
        self.size = size
        self.env_id, self.obs_dim = f"fake:pixels{size}", 9 * size * size
        self._stack: list[np.ndarray] = []

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (9, self.size, self.size)

    def _frame(self) -> np.ndarray:
        s, frame = self.size, np.full((3, self.size, self.size), 20, np.uint8)
        for channel, where in ((0, self._x), (1, self.goal)):
            r, c = ((np.asarray(where) + 1) / 2 * (s - 3)).astype(int)
            frame[channel, r:r + 3, c:c + 3] = 255
        return frame.ravel()

    def reset(self, seed: int | None = None) -> np.ndarray:
        super().reset(seed)
        self._stack = [self._frame()] * 3
        return np.concatenate(self._stack)

    def step(self, action):
        _, reward, terminated, truncated = super().step(action)
        self._stack = self._stack[1:] + [self._frame()]
        return np.concatenate(self._stack), reward, terminated, truncated


@ENVS.register("fake", help="tiny deterministic test envs: fake:point<d> (e.g. fake:point2); fake:pixels<size> "
                            "(the 2-D point as 3 stacked RGB frames, no renderer)")
def make_fake_env(name: str, seed: int) -> Env:
    from mrsq.envs.base import EnvError

    if name.startswith("pixels") and name[6:].isdigit() and 16 <= int(name[6:]) <= 512:
        return PixelPointEnv(size=int(name[6:]), seed=seed)
    if not name.startswith("point") or not name[5:].isdigit():
        raise EnvError(f"unknown fake env {name!r}; use fake:point<d> (e.g. fake:point2) or fake:pixels<size> "
                       f"(e.g. fake:pixels32)")
    return PointEnv(dim=int(name[5:]), seed=seed)


class QuadraticModel:
    """A hand-written :class:`~mrsq.planners.base.PlanningModel` with a known optimum.

    Identity dynamics (``z' = z``), reward ``-||a - a_star||^2``, no termination, terminal value
    from ``values(z, a) -> [N, B, 1]`` (default: zeros for 2 members) through ``aggregate``.
    The best action sequence is ``a_star`` at every step.
    """

    def __init__(self, a_star, discount: float = 0.99, values=None, aggregate=None, obs_dim: int = 2) -> None:
        self.a_star = torch.as_tensor(a_star, dtype=torch.float32)
        self.action_dim, self.discount, self.episodic = self.a_star.numel(), discount, False
        self.values = values or (lambda z, a: torch.zeros(2, z.shape[0], 1))
        self.aggregate = aggregate or (lambda v: v.amin(0))
        self.obs_dim = obs_dim

    def encode(self, obs):
        return obs.reshape(obs.shape[0], -1).float()

    def step(self, z, a):
        reward = -(a - self.a_star).square().sum(-1, keepdim=True)
        return reward, torch.zeros_like(reward), z

    def policy(self, z):
        return torch.zeros(z.shape[0], self.action_dim)

    def value(self, z, a):
        return self.aggregate(self.values(z, a))
