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

from mrsq.envs.base import Env
from mrsq.registry import CRITICS, ENCODERS, ENVS, POLICIES

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
    return critic


def check_policy(name_or_spec, input_dim: int = 16, action_dim: int = ACTION_DIM, batch: int = BATCH):
    spec = _spec(POLICIES, name_or_spec)
    policy = POLICIES.get(spec.type)(spec, input_dim, action_dim)
    action, pre = policy(torch.randn(batch, input_dim))
    assert action.shape == (batch, action_dim) and pre.shape == (batch, action_dim)
    assert (action.abs() <= 1).all(), f"{spec.type}: actions leave [-1, 1]"
    _assert_finite(spec.type, action, pre)
    _assert_grads(spec.type, policy, action.sum() + pre.square().mean())
    return policy


CHECKS = {"encoder": check_encoder, "critic": check_critic, "policy": check_policy}


def check_component(family: str, name_or_spec, **kwargs):
    """Run the contract check of ``family`` ('encoder', 'critic' or 'policy') on a component."""
    if family not in CHECKS:
        raise ValueError(f"no contract check for family {family!r} (have: {', '.join(CHECKS)})")
    return CHECKS[family](name_or_spec, **kwargs)


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


@ENVS.register("fake", help="tiny deterministic test envs: fake:point<d> (e.g. fake:point2)")
def make_fake_env(name: str, seed: int) -> Env:
    from mrsq.envs.base import EnvError

    if not name.startswith("point") or not name[5:].isdigit():
        raise EnvError(f"unknown fake env {name!r}; use fake:point<d>, e.g. fake:point2")
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
