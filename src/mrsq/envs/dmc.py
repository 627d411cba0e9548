"""DeepMind Control suite tasks: ``dmc:cheetah-run`` (state vectors), ``dmcpix:cheetah-run`` (pixels).

Follows the MR.Q protocol: action repeat 2, episodes of 1000 frames (500 agent steps), rewards
summed over the repeated frames (so an episode's return is still at most 1000). The observation
dict is flattened into one float32 vector in the task's (fixed) key order.

``dmcpix:<domain>-<task>[@<size>]`` observes pixels instead, as MR.Q's public code does for its
visual DMC tasks (MRQ/env_preprocessing.py, ``DmcHyperparameters`` and ``DmcPreprocessing``):
84x84 RGB (``image_size = 84``), the last 3 frames stacked (``visual_history = 3``; the reset
frame fills the stack, lines "for _ in range(self.history): self.history_queue.append(obs)"),
camera 0 except quadruped's camera 2 (``render``), one frame per agent step, taken after the
action repeat. ``@64`` gives TD-MPC2's 64x64 frames (its envs/wrappers/pixels.py: 3 frames, same
cameras). ``+lite`` (``dmcpix:cartpole-balance@32+lite``) drops shadows and reflections, most of
OSMesa's time per frame: for tests and quick checks, not MR.Q's frames. The observation is uint8, flat: ``[3 * 3 * size * size]``, frames oldest first, so
``obs.reshape(9, size, size)`` is MR.Q's ``[history * 3, H, W]`` state. Frames come from MuJoCo's
renderer on the task's physics (:class:`mrsq.render.FrameRenderer`, the renderer of videos;
dm_control's ``physics.render`` draws the same scene through a second context), so pixel tasks
need a GL backend: OSMesa on a CPU machine (``apt-get install -y libosmesa6``), EGL on a GPU one.

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
PIXEL_SIZE = 84  # MR.Q: DmcHyperparameters.image_size
PIXEL_FRAMES = 3  # MR.Q: DmcHyperparameters.visual_history (TD-MPC2: num_frames=3)
CAMERAS = {"quadruped": 2}  # MR.Q's render() and TD-MPC2's dmcontrol.py; camera 0 elsewhere
LITE = "+lite"  # dmcpix:<task>[@size]+lite: no shadows or reflections (not MR.Q's frames)


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
        self.domain = domain
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
        # camera 0: each task's tracking camera (quadruped's camera 2, as MR.Q and TD-MPC2 render it)
        return physics.model.ptr, physics.data.ptr, CAMERAS.get(self.domain, 0)

    def close(self) -> None:
        self._env.close()


def _split_size(name: str) -> tuple[str, int, bool]:
    """``'cartpole-swingup@64+lite'`` -> ``('cartpole-swingup', 64, True)``; no ``@``: MR.Q's 84."""
    name, lite = (name[: -len(LITE)], True) if name.endswith(LITE) else (name, False)
    task, sep, size = name.partition("@")
    if not sep:
        return task, PIXEL_SIZE, lite
    if not size.isdigit() or not 16 <= int(size) <= 512:
        raise EnvError(f"dmcpix:{name}: the image size after '@' must be a number of pixels in 16..512 "
                       f"(e.g. dmcpix:{task}@64)")
    return task, int(size), lite


class DMCPixelEnv(DMCEnv):
    """A dm_control task observed through its camera: the last 3 RGB frames, uint8, flat."""

    obs_dtype = np.uint8
    frame_stack = PIXEL_FRAMES

    def __init__(self, name: str, seed: int) -> None:
        from mrsq import render

        task, self.size, lite = _split_size(name)
        try:
            render.ensure_backend()  # before dm_control imports MuJoCo
            super().__init__(task, seed)
            self.env_id = f"dmcpix:{name}"
            self.obs_dim = PIXEL_FRAMES * 3 * self.size * self.size
            self._renderer = render.FrameRenderer(self, self.size)
        except render.RenderError as exc:
            raise EnvError(f"dmcpix:{name} observes pixels, and {exc}") from None
        if lite:
            # shadows and reflections are most of OSMesa's time per frame (~10x here at 32x32);
            # a cheap rendering for tests and quick checks, not the frames MR.Q learns from
            import mujoco

            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                self._renderer.renderer.scene.flags[flag] = False
        self._stack: list[np.ndarray] = []

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (3 * PIXEL_FRAMES, self.size, self.size)

    def _frame(self) -> np.ndarray:
        # [H, W, 3] -> channel-major [3 * H * W] (MR.Q: .transpose(2, 0, 1))
        return np.ascontiguousarray(self._renderer.render().transpose(2, 0, 1)).ravel()

    def _observe(self) -> np.ndarray:
        return np.concatenate(self._stack)

    def reset(self, seed: int | None = None) -> np.ndarray:
        super().reset(seed)
        self._stack = [self._frame()] * PIXEL_FRAMES  # the first frame fills the stack (MR.Q, TD-MPC2)
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        _, reward, terminated, truncated = super().step(action)
        self._stack = self._stack[1:] + [self._frame()]
        return self._observe(), reward, terminated, truncated

    def close(self) -> None:
        self._renderer.close()
        super().close()


@ENVS.register("dmc", help="dm_control suite task domain-task, action repeat 2 (dmc:cheetah-run)")
def make_dmc(name: str, seed: int) -> Env:
    """Build ``dmc:<domain>-<task>`` with its task RNG seeded by ``seed``."""
    return DMCEnv(name, seed)


make_dmc.knows = lambda name: name in _task_names()  # lets ids without a prefix get a suggestion


@ENVS.register("dmcpix", help="dm_control task from pixels: 3 stacked 84x84 RGB frames, uint8, as MR.Q "
                              "(dmcpix:cartpole-swingup; @64 for 64x64); needs a renderer (libosmesa6)")
def make_dmc_pixels(name: str, seed: int) -> Env:
    """Build ``dmcpix:<domain>-<task>[@<size>]`` with its task RNG seeded by ``seed``."""
    return DMCPixelEnv(name, seed)
