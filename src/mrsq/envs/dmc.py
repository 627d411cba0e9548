"""DeepMind Control suite tasks, registered under the ``dmc`` prefix (``dmc:cheetah-run``).

Follows the MR.Q protocol: action repeat 2, episodes of 1000 frames (500 agent steps), rewards
summed over the repeated frames (so an episode's return is still at most 1000). The observation
dict is flattened into one float32 vector in the task's (fixed) key order.

dm_control is used directly rather than through torchrl wrappers to keep the step loop lean.
"""

from __future__ import annotations

import difflib
import os

import numpy as np

from mrsq.envs.base import ActionScaler, Env, EnvError
from mrsq.registry import ENVS

ACTION_REPEAT = 2
FRAMES_PER_EPISODE = 1000


def _suite():
    """Import ``dm_control.suite`` lazily (it is slow), headless unless the user chose a GL backend."""
    os.environ.setdefault("MUJOCO_GL", "disable")
    from absl import logging as absl_logging
    from dm_control import suite

    # dm_control's XML loader warns through absl on every load of some tasks ("settotalmass is
    # deprecated"): a dm_control/MuJoCo version note, not something a user can act on
    absl_logging.set_verbosity(absl_logging.ERROR)
    return suite


def _task_names() -> list[str]:
    return [f"{domain}-{task}" for domain, task in _suite().ALL_TASKS]


def _split(name: str) -> tuple[str, str]:
    """``'ball_in_cup-catch'`` -> ``('ball_in_cup', 'catch')``; unknown tasks raise :class:`EnvError`."""
    known = _task_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EnvError(f"unknown dm_control task {name!r} (dmc:{name}, written domain-task){hint} "
                       f"(e.g. dmc:cheetah-run, dmc:ball_in_cup-catch)")
    domain, _, task = name.partition("-")  # domains may hold underscores, never '-'
    return domain, task


class DMCEnv(Env):
    """A dm_control suite task with action repeat, behind the :class:`~mrsq.envs.base.Env` interface."""

    def __init__(self, name: str, seed: int) -> None:
        domain, task = _split(name)
        self.env_id = f"dmc:{name}"
        self._env = _suite().load(domain, task, task_kwargs={"random": seed})
        self.frame_rate = 1.0 / (self._env.control_timestep() * ACTION_REPEAT)  # one frame per agent step
        spec = self._env.action_spec()
        self._scale = ActionScaler(spec.minimum, spec.maximum, dtype=np.float64)
        self._obs_keys = tuple(self._env.observation_spec())
        self.obs_dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.action_dim = int(np.prod(spec.shape))
        self.max_episode_steps = FRAMES_PER_EPISODE // ACTION_REPEAT
        self._steps = 0

    def _flatten(self, observation) -> np.ndarray:
        # Scalars (e.g. walker's height) become length-1 pieces; 2-D arrays are raveled.
        return np.concatenate([np.asarray(observation[k], dtype=np.float32).ravel()
                               for k in self._obs_keys])

    def reset(self, seed: int | None = None) -> np.ndarray:
        # The task RNG was seeded at load time and carries over between episodes; an explicit
        # seed restarts it.
        if seed is not None:
            self._env.task.random.seed(seed)
        self._steps = 0
        return self._flatten(self._env.reset().observation)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        action = self._scale(action)
        reward = 0.0
        for _ in range(ACTION_REPEAT):
            time_step = self._env.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        self._steps += 1
        # Suite tasks have no terminal states, but a LAST step with discount 0 is one.
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = not terminated and (time_step.last() or self._steps >= self.max_episode_steps)
        return self._flatten(time_step.observation), float(reward), terminated, bool(truncated)

    def rng_state(self) -> dict:
        # the task's RandomState draws every episode's initial state
        name, keys, pos, has_gauss, cached = self._env.task.random.get_state()
        return {"random": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}

    def set_rng_state(self, state: dict) -> None:
        name, keys, pos, has_gauss, cached = state["random"]
        self._env.task.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

    def physics_handles(self):
        physics = self._env.physics
        return physics.model.ptr, physics.data.ptr, 0  # camera 0: each task's tracking camera

    def close(self) -> None:
        self._env.close()


@ENVS.register("dmc", help="dm_control suite task domain-task, action repeat 2 (dmc:cheetah-run)")
def make_dmc(name: str, seed: int) -> Env:
    """Build ``dmc:<domain>-<task>`` with its task RNG seeded by ``seed``."""
    return DMCEnv(name, seed)


make_dmc.knows = lambda name: name in _task_names()  # lets ids without a prefix get a suggestion
