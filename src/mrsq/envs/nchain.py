"""The N-chain (the paper's Figure 2): ``nchain:<A>-<n>``, ``A`` choices per step, ``n`` steps,
exactly one rewarded sequence.

The agent's action is one number in [-1, 1], split into ``A`` equal bins (bin ``i`` covers
``[-1 + 2i/A, -1 + 2(i+1)/A)``; +1 falls in the last bin), so a uniform action picks each choice
with probability ``1/A``. The rewarded sequence is fixed by ``(A, n)`` (not by the seed, so the
training and evaluation envs of a run agree on it). Every episode lasts
exactly ``n`` steps and ends by termination; the last step pays 1 if every choice so far matched
the rewarded sequence, else 0. Observation: the one-hot step index (``n + 1``) and a 0/1 flag
"still on the rewarded path".

:class:`NChainModel` is the same chain as a :class:`~mrsq.planners.base.PlanningModel` (the true
model, batched), for searching it with mrsq's planners.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from mrsq.envs.base import Env, EnvError
from mrsq.registry import ENVS


def choice_of(action, num_actions: int):
    """Continuous action(s) in [-1, 1] -> choice index in ``0..A-1`` (numpy or torch)."""
    if isinstance(action, torch.Tensor):
        return ((action.clamp(-1, 1) + 1) * (num_actions / 2)).floor().clamp(max=num_actions - 1).long()
    return np.minimum(np.floor((np.clip(action, -1, 1) + 1) * (num_actions / 2)), num_actions - 1).astype(np.int64)


def rewarded_sequence(num_actions: int, length: int) -> np.ndarray:
    """The one rewarded choice sequence of ``nchain:<A>-<n>`` -> ``[n]`` ints (fixed by A and n)."""
    return np.random.default_rng([num_actions, length]).integers(0, num_actions, size=length)


class NChainEnv(Env):
    def __init__(self, num_actions: int, length: int, seed: int = 0) -> None:
        self.num_actions, self.length = num_actions, length
        self.env_id = f"nchain:{num_actions}-{length}"
        self.obs_dim, self.action_dim, self.max_episode_steps = length + 2, 1, length
        self.target = rewarded_sequence(num_actions, length)
        self._t, self._on_path = 0, True

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.obs_dim, np.float32)
        obs[self._t] = 1.0
        obs[-1] = float(self._on_path)
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._t, self._on_path = 0, True
        return self._obs()

    def step(self, action):
        choice = int(choice_of(np.asarray(action, np.float64).reshape(-1)[:1], self.num_actions)[0])
        self._on_path = self._on_path and choice == self.target[self._t]
        self._t += 1
        done = self._t >= self.length
        reward = float(done and self._on_path)
        return self._obs(), reward, done, False

    def rng_state(self) -> dict:
        return {}  # deterministic: nothing random to restore

    def set_rng_state(self, state: dict) -> None:
        pass


class NChainModel:
    """The true N-chain as a batched :class:`~mrsq.planners.base.PlanningModel`.

    Latent ``z = [t, on_path]``; ``step`` follows the env exactly; the policy acts 0 and the
    terminal value is 0 (a search over the whole chain needs no value), unless ``value`` is
    given: ``value(z, a) -> [B, 1]`` (for instance an imperfect, learned one)."""

    discount, episodic, action_dim = 1.0, True, 1

    def __init__(self, target: np.ndarray, num_actions: int, value=None) -> None:
        self.target = torch.as_tensor(target, dtype=torch.long)
        self.num_actions, self.length, self._value = num_actions, len(target), value

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.reshape(obs.shape[0], -1)
        return torch.stack([obs[:, :-1].argmax(-1).float(), obs[:, -1]], -1)

    def step(self, z, a):
        t, on_path = z[:, 0].long(), z[:, 1]
        right = choice_of(a[:, 0], self.num_actions) == self.target[t.clamp(max=self.length - 1)]
        on_path = on_path * right.float() * (t < self.length).float()
        last = (t == self.length - 1).float()
        return (last * on_path)[:, None], last[:, None], torch.stack([(t + 1).float(), on_path], -1)

    def policy(self, z):
        return torch.zeros(z.shape[0], 1)

    def value(self, z, a):
        return torch.zeros(z.shape[0], 1) if self._value is None else self._value(z, a)


_ID = re.compile(r"^(\d+)-(\d+)$")


@ENVS.register("nchain", help="N-chain: A choices x n steps, one rewarded sequence (nchain:4-3)")
def make_nchain(name: str, seed: int) -> Env:
    m = _ID.match(name)
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 1:
        raise EnvError(f"bad N-chain id nchain:{name!r}; use nchain:<A>-<n> with A >= 2 choices and n >= 1 steps, "
                       "e.g. nchain:4-3")
    return NChainEnv(int(m.group(1)), int(m.group(2)), seed)
