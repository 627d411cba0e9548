"""The small environment interface used on the training loop's hot path.

Environments are named by a prefixed id, ``<prefix>:<name>``, e.g. ``gym:HalfCheetah-v5`` or
``dmc:cheetah-run``. The prefix picks a factory registered in :data:`mrsq.registry.ENVS`
(``factory(name: str, seed: int) -> Env``); :func:`make_env` splits the id and calls it.

Everything here is plain numpy (no TensorDict): observations are flat vectors (``float32``, or
``uint8`` pixels: a stack of ``frame_stack`` RGB frames, channel-major, oldest first, so that
``obs.reshape(obs_shape)`` is the ``[3 * frame_stack, size, size]`` image) and the agent always acts
in ``[-1, 1]^action_dim``; each wrapper rescales to its env's bounds.
"""

from __future__ import annotations

import abc

import numpy as np

from mrsq.registry import ENVS, unknown_message

EXAMPLES = "e.g. gym:HalfCheetah-v5, dmc:cheetah-run"


class EnvError(ValueError):
    """A user-facing environment problem (bad id, unsupported spaces, ...); one-line message."""


class Env(abc.ABC):
    """A single continuous-control environment with flat observations.

    Attributes:
        env_id: the prefixed id it was made from (``gym:HalfCheetah-v5``).
        obs_dim: length of the observation vector.
        action_dim: length of the action vector; actions are in ``[-1, 1]``.
        max_episode_steps: the episode length in agent steps (after any action repeat).
        obs_dtype: ``np.float32`` (state vectors) or ``np.uint8`` (pixels).
        frame_stack: frames per observation (pixels; 0 for state vectors). A pixel observation
            is ``frame_stack`` frames of ``obs_dim // frame_stack`` values, oldest first, and
            the next observation within an episode drops the oldest and appends one frame
            (what :class:`mrsq.replay.FrameStorage` relies on to store each frame once).
    """

    env_id: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    obs_dtype: type = np.float32
    frame_stack: int = 0

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """The observation's natural shape (``(obs_dim,)``; pixels: ``(3 * frame_stack, size, size)``)."""
        return (self.obs_dim,)

    @property
    def pixels(self) -> bool:
        return self.frame_stack > 0

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode and return the first observation (``obs_dtype``, shape ``[obs_dim]``)."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """Act with ``action`` in ``[-1, 1]`` (clipped); return ``(obs, reward, terminated, truncated)``."""

    def close(self) -> None:
        """Release simulator resources (a no-op unless the wrapper needs it)."""

    def rng_state(self) -> dict:
        """The environment's own random state, as JSON-serialisable values (exact resume).

        Together with the actions taken since, the state captured just before a ``reset`` lets
        :func:`replay_episode` rebuild a cut episode bit for bit in a new process: a fresh env
        with this state restored, reset and stepped through the same actions, is the same
        simulation (MuJoCo is deterministic on one machine). Wrappers of simulators that cannot do
        this leave it unimplemented; such runs still train, only ``--resume`` refuses them."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its random state (exact resume)")

    frame_rate: float = 30.0  # frames per second of this env's videos (its agent steps per simulated second)

    def physics_handles(self):
        """``(mujoco.MjModel, mujoco.MjData, camera)`` for :mod:`mrsq.render` (videos); envs
        without MuJoCo physics leave it unimplemented and cannot be recorded."""
        raise NotImplementedError("it exposes no MuJoCo physics to render (videos need dm_control or Gym MuJoCo)")

    def set_rng_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`rng_state`; the next ``reset`` draws from it."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its random state (exact resume)")

    def __enter__(self) -> "Env":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.env_id!r}, obs_dim={self.obs_dim}, "
                f"action_dim={self.action_dim}, max_episode_steps={self.max_episode_steps})")


class ActionScaler:
    """Maps agent actions in ``[-1, 1]`` to ``[low, high]`` (clipping first).

    When the bounds already are ``[-1, 1]`` (most MuJoCo/DMC tasks) it only clips.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, dtype=np.float32) -> None:
        low = np.asarray(low, dtype=np.float64).ravel()
        high = np.asarray(high, dtype=np.float64).ravel()
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise EnvError("only bounded (finite) action spaces are supported for now")
        self.dtype = dtype
        self.identity = bool(np.all(low == -1.0) and np.all(high == 1.0))
        self.center = ((high + low) / 2).astype(dtype)
        self.half_range = ((high - low) / 2).astype(dtype)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=self.dtype), -1.0, 1.0)
        return a if self.identity else self.center + self.half_range * a


def replay_episode(env: Env, rng_state: dict, actions) -> np.ndarray:
    """Rebuild an episode cut by a checkpoint: restore ``rng_state`` (taken before the episode's
    reset), reset, and take ``actions`` ``[n, action_dim]`` again. Returns the observation reached.

    Replaying the actions, rather than saving the simulator state, needs nothing of each
    simulator but its RNG, and it is exact: MuJoCo's warm-start and contact caches are rebuilt by
    the same calls that built them (``mj_getState`` would not carry them all)."""
    env.set_rng_state(rng_state)
    obs = env.reset()
    for action in actions:
        obs, *_ = env.step(np.asarray(action, dtype=np.float32))
    return obs


def fill_with_random_actions(env: Env, replay, steps: int, seed: int = 0) -> np.ndarray:
    """``steps`` transitions of uniform random actions (numpy generator ``seed``) added to
    ``replay``, resetting at episode ends; returns the observation to act from next. The warm-up
    data of benches, FLOP counts and contract checks."""
    rng = np.random.default_rng(seed)
    obs = env.reset()
    for _ in range(steps):
        a = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        nxt, r, term, trunc = env.step(a)
        replay.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if term or trunc else nxt
    return obs


def parse_env_id(env_id: str) -> tuple[str, str]:
    """Split ``'gym:HalfCheetah-v5'`` into ``('gym', 'HalfCheetah-v5')``.

    Raises :class:`EnvError` when the prefix is missing or unknown.
    """
    prefix, sep, name = str(env_id).partition(":")
    if not sep:
        raise EnvError(f"env id {env_id!r} has no prefix; write <prefix>:<name> with prefix one of "
                       f"{', '.join(ENVS.names())} ({EXAMPLES}){_guess_prefix(env_id)}")
    if prefix not in ENVS:
        raise EnvError(f"{unknown_message('env prefix', prefix, ENVS.names())} in {env_id!r}; "
                       f"write <prefix>:<name> ({EXAMPLES})")
    if not name:
        raise EnvError(f"env id {env_id!r} has an empty name after the prefix ({EXAMPLES})")
    return prefix, name


def make_env(env_id: str, seed: int) -> Env:
    """Build the environment named by a prefixed id, seeded with ``seed``."""
    prefix, name = parse_env_id(env_id)
    return ENVS.get(prefix)(name, seed)


def _guess_prefix(name: str) -> str:
    """Suggest a prefixed id for an id given without one (``'; did you mean ...?'`` or ``''``).

    A factory may carry a ``knows(name) -> bool`` attribute; the first that knows the name wins.
    """
    for prefix in ENVS.names():
        knows = getattr(ENVS.get(prefix), "knows", None)
        if knows is not None and knows(name):
            return f"; did you mean '{prefix}:{name}'?"
    return ""
