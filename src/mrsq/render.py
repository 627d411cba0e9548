"""Offscreen rendering and evaluation videos (``mrsq eval --video``, ``train.video_every``).

Frames come from MuJoCo's own renderer (``mujoco.Renderer``) on the env's model and data, for
dm_control and Gym MuJoCo tasks alike (one code path; dm_control's render contexts would add a
second one with its own exit-time teardown). MuJoCo picks its GL backend from ``MUJOCO_GL`` when
it is first imported, so the backend is chosen before that (:func:`ensure_backend`): a user's
``egl`` / ``osmesa`` / ``glfw`` is kept; ``disable`` or nothing (mrsq's headless default) becomes
``osmesa`` when the OSMesa library is installed. Without any, the message names the fix.

Videos are mp4 (H.264, yuv420p) written by ``imageio-ffmpeg``, whose wheel ships its own ffmpeg
binary, so nothing is installed by hand besides the system's GL library.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

import numpy as np

NO_RENDERER = ("no offscreen renderer for videos: install OSMesa (apt-get install -y libosmesa6) and set "
               "MUJOCO_GL=osmesa, or MUJOCO_GL=egl on a machine with a GPU")
HEADLESS = ("", "disable")


class RenderError(RuntimeError):
    """Rendering is not possible in this process; the message names the fix (one line)."""


def _find_osmesa() -> str | None:
    return ctypes.util.find_library("OSMesa")


def ensure_backend() -> str:
    """Choose MuJoCo's GL backend for rendering before MuJoCo is imported -> its name.

    Raises :class:`RenderError` when no backend exists, or when MuJoCo was already imported
    headless in this process (its backend cannot change any more)."""
    chosen = os.environ.get("MUJOCO_GL", "").lower()
    if chosen not in HEADLESS:
        return chosen
    if "mujoco" in sys.modules:
        raise RenderError("MuJoCo was loaded headless (MUJOCO_GL=disable) before rendering was asked for; "
                          "start the process with MUJOCO_GL=osmesa (or egl on a GPU machine)")
    if _find_osmesa() is None:
        raise RenderError(NO_RENDERER)
    os.environ["MUJOCO_GL"] = "osmesa"
    os.environ["PYOPENGL_PLATFORM"] = "osmesa"
    return "osmesa"


class FrameRenderer:
    """``render() -> [H, W, 3] uint8`` of an :class:`mrsq.envs.Env` whose ``physics_handles()``
    gives ``(MjModel, MjData, camera)``; one MuJoCo renderer, reused for every frame."""

    def __init__(self, env, size: int) -> None:
        ensure_backend()
        try:
            model, data, camera = env.physics_handles()
        except NotImplementedError as exc:
            raise RenderError(f"{env.env_id} cannot render: {exc}") from None
        import mujoco

        self.data, self.camera = data, camera
        try:
            # the offscreen buffer must hold the frame (MuJoCo models default to 640x480)
            model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), size)
            model.vis.global_.offheight = max(int(model.vis.global_.offheight), size)
            self.renderer = mujoco.Renderer(model, size, size)
        except Exception as exc:  # noqa: BLE001 - any GL failure has the same fix
            raise RenderError(f"{NO_RENDERER} (MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=self.camera)
        return self.renderer.render()

    def close(self) -> None:
        """Free this renderer's GL objects in its own context.

        mujoco.Renderer.close frees its MjrContext in whichever GL context is current, and every
        renderer of one model numbers its framebuffers and textures alike: closing (or collecting)
        one env's renderer right after another rendered deleted the other's objects, whose frames
        were black from then on (OSMesa, mujoco 3.x). So this context is made current first."""
        renderer = getattr(self, "renderer", None)
        if renderer is None:
            return
        self.renderer = None
        context = getattr(renderer, "_gl_context", None)
        if context is not None and getattr(renderer, "_mjr_context", None) is not None:
            context.make_current()
        renderer.close()

    def __del__(self) -> None:  # an env dropped without close() frees the same way
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: GL may be gone already
            pass


class VideoWriter:
    """mp4 frames through imageio-ffmpeg: ``write(frame [H, W, 3] uint8)``, ``close()``."""

    def __init__(self, path: Path, size: int, fps: float) -> None:
        import imageio_ffmpeg

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # macro_block_size 1: any even size as asked (ffmpeg would otherwise pad to 16)
        self._gen = imageio_ffmpeg.write_frames(str(self.path), (size, size), fps=fps, codec="libx264",
                                                pix_fmt_out="yuv420p", macro_block_size=1, quality=7,
                                                ffmpeg_log_level="error")
        self._gen.send(None)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self._gen.send(np.ascontiguousarray(frame, dtype=np.uint8))
        self.frames += 1

    def close(self) -> None:
        self._gen.close()


def read_video(path) -> tuple[int, tuple[int, int], float]:
    """``(frames, (width, height), fps)`` of an mp4, decoded by imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = sum(1 for _ in reader)
    return frames, tuple(meta["size"]), float(meta["fps"])


def record_episode(agent, env, path, size: int = 256, seed: int | None = None) -> dict:
    """One deterministic episode of ``agent`` on ``env`` (a render-capable mrsq Env) written to
    ``path`` as mp4: the first observation's frame, then one per step. The agent's planner state
    and the torch RNG are restored afterwards, so recording never changes the training run.

    Returns ``{"path", "frames", "steps", "return", "size", "fps"}``."""
    import torch

    from mrsq.planners.base import state_kept

    frames = FrameRenderer(env, size)
    rng = torch.get_rng_state()
    writer = None
    try:
        with state_kept(agent.planner):
            obs = env.reset(seed)
            agent.planner.reset()
            writer = VideoWriter(path, size, getattr(env, "frame_rate", 30.0))
            writer.write(frames.render())
            total, steps, first, done = 0.0, 0, True, False
            while not done:
                action = agent.act(obs, explore=False, first=first)
                obs, reward, terminated, truncated = env.step(action)
                writer.write(frames.render())
                total, steps, first, done = total + reward, steps + 1, False, terminated or truncated
    finally:
        if writer is not None:
            writer.close()
        frames.close()
        torch.set_rng_state(rng)
    return {"path": str(path), "frames": writer.frames, "steps": steps, "return": total, "size": size,
            "fps": getattr(env, "frame_rate", 30.0)}
