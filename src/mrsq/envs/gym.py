"""Gymnasium environments, registered under the ``gym`` prefix (``gym:HalfCheetah-v5``).

MR.Q runs the raw env: ``gymnasium.make(id)`` with its default wrappers (so the spec's
``TimeLimit`` stays and its truncation is passed through), no reward or observation scaling.
Only flat continuous ``Box`` observation and action spaces are supported.
"""

from __future__ import annotations

import difflib

import numpy as np

from mrsq.envs.base import ActionScaler, Env, EnvError
from mrsq.registry import ENVS

DEFAULT_MAX_EPISODE_STEPS = 1000


def _gym_ids() -> list[str]:
    import gymnasium

    return list(gymnasium.registry.keys())


def _make_raw(name: str):
    """``gymnasium.make(name)``, turning unknown ids and missing extras into :class:`EnvError`."""
    import gymnasium

    ids = _gym_ids()
    if name not in ids:
        close = difflib.get_close_matches(name, ids, n=3, cutoff=0.6)
        hint = f"; close gymnasium ids: {', '.join(close)}" if close else ""
        if not close:  # perhaps the user's own env, registered by a module of theirs
            hint = (f"; an env registered with gymnasium.register in your own module needs --import MODULE "
                    f"(or `imports:` in a sweep file)")
        raise EnvError(f"unknown gymnasium id {name!r} (gym:{name}){hint}")
    try:
        return gymnasium.make(name)
    except gymnasium.error.Error as exc:  # e.g. DependencyNotInstalled for Box2D envs
        raise EnvError(f"cannot create gym:{name}: {exc}") from None


def _check_spaces(name: str, env) -> None:
    """Reject image, dict and discrete spaces with one clear message."""
    from gymnasium import spaces

    def flat_box(space) -> bool:
        return (isinstance(space, spaces.Box) and len(space.shape) == 1
                and np.issubdtype(space.dtype, np.floating))

    def describe(space) -> str:  # short: printing a Box lists all its bounds
        return f"Box{space.shape}" if isinstance(space, spaces.Box) else str(space).replace("\n", " ")

    if not (flat_box(env.observation_space) and flat_box(env.action_space)):
        raise EnvError(f"gym:{name} has observation space {describe(env.observation_space)} and "
                       f"action space {describe(env.action_space)}; only continuous flat Box "
                       "observation/action spaces are supported for now")


class GymEnv(Env):
    """A raw gymnasium env behind the :class:`~mrsq.envs.base.Env` interface."""

    def __init__(self, name: str, seed: int) -> None:
        self.env_id = f"gym:{name}"
        self._env = _make_raw(name)
        try:
            _check_spaces(name, self._env)
        except EnvError:
            self._env.close()
            raise
        space = self._env.action_space
        self._scale = ActionScaler(space.low, space.high, dtype=space.dtype)
        self.obs_dim = int(self._env.observation_space.shape[0])
        self.action_dim = int(space.shape[0])
        spec_steps = self._env.spec.max_episode_steps if self._env.spec else None
        self.max_episode_steps = int(spec_steps or DEFAULT_MAX_EPISODE_STEPS)
        self._seed = seed
        self._seeded = False

    def physics_handles(self):
        u = self._env.unwrapped
        if not (hasattr(u, "model") and hasattr(u, "data")):
            raise NotImplementedError(f"{type(u).__name__} is not a MuJoCo env (videos need MuJoCo physics)")
        return u.model, u.data, (0 if u.model.ncam > 0 else -1)  # the task's camera ('track'), else the free one

    @property
    def frame_rate(self) -> float:
        return 1.0 / float(getattr(self._env.unwrapped, "dt", 1 / 30))

    def reset(self, seed: int | None = None) -> np.ndarray:
        # Seed on the first reset (with the factory seed unless given one); later resets without
        # a seed continue the env's RNG so successive episodes differ.
        if seed is None and not self._seeded:
            seed = self._seed
        if seed is not None:
            self._env.action_space.seed(seed)
            self._seeded = True
        obs, _ = self._env.reset(seed=seed)
        return np.asarray(obs, dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        obs, reward, terminated, truncated, _ = self._env.step(self._scale(action))
        return np.asarray(obs, dtype=np.float32), float(reward), bool(terminated), bool(truncated)

    def rng_state(self) -> dict:
        # before the first reset the env is unseeded and that reset seeds it with the factory seed
        if not self._seeded:
            return {"seeded": False}
        return {"seeded": True, "np_random": self._env.unwrapped.np_random.bit_generator.state,
                "action_space": self._env.action_space.np_random.bit_generator.state}

    def set_rng_state(self, state: dict) -> None:
        self._seeded = bool(state["seeded"])
        if self._seeded:
            self._env.unwrapped.np_random = _generator(state["np_random"])
            self._env.action_space._np_random = _generator(state["action_space"])

    def close(self) -> None:
        self._env.close()


def _generator(state: dict) -> np.random.Generator:
    """A numpy Generator in exactly ``state`` (a ``bit_generator.state`` dict)."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


@ENVS.register("gym", help="gymnasium env by id, raw with its TimeLimit (gym:HalfCheetah-v5)")
def make_gym(name: str, seed: int) -> Env:
    """Build ``gym:<name>`` seeded with ``seed`` (applied on the first reset)."""
    return GymEnv(name, seed)


make_gym.knows = lambda name: name in _gym_ids()  # lets ids without a prefix get a suggestion
