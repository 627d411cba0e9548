"""Evaluation videos: `train.video_every` and `mrsq eval --video` write mp4s that read back with
the right length and frame size; no renderer is one line (exit 2 for eval, a warning for train);
recording never changes the run.

The recording tests run MuJoCo offscreen through OSMesa in subprocesses (MuJoCo picks its GL
backend once per process, and the suite's own process is headless). CI installs libosmesa6
(.ci/run), so there they always run; elsewhere they skip with the fix when the library is missing.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrsq import render
from mrsq.render import NO_RENDERER, RenderError, read_video

pytestmark = pytest.mark.slow

HAVE_OSMESA = render._find_osmesa() is not None
needs_osmesa = pytest.mark.skipif(not HAVE_OSMESA and not os.environ.get("MRSQ_CI"),
                                  reason="needs OSMesa: apt-get install -y libosmesa6 (CI installs it)")
MRSQ = [sys.executable, "-m", "mrsq.cli"]
TINY = ["--env", "gym:InvertedPendulum-v5", "--steps", "40", "--set", "warmup_steps=20", "--set", "train.eval_every=20",
        "--set", "train.eval_episodes=1", "--set", "compile=off", "--set", "batch_size=16", "--set", "train.threads=1",
        "--no-progress"]


def _run(*argv, gl="osmesa"):
    env = {**os.environ, "MUJOCO_GL": gl}
    return subprocess.run([*MRSQ, *map(str, argv)], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    with_video = _run("train", "mrq_small", *TINY, "--set", "train.video_every=1", "--set", "train.video_size=64",
                      "--out", root / "with", gl="disable")  # "disable" is mrsq's headless default: it picks OSMesa
    return root, with_video


@needs_osmesa
def test_training_writes_a_video_per_evaluation_that_reads_back(recorded):
    root, proc = recorded
    assert proc.returncode == 0, proc.stderr
    videos = sorted((root / "with" / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["step_0.mp4", "step_20.mp4", "step_40.mp4"]
    for video in videos:
        frames, size, fps = read_video(video)
        assert size == (64, 64) and fps == 25.0 and frames >= 2  # InvertedPendulum: dt 0.04 s


@needs_osmesa
def test_eval_video_has_one_frame_per_step_plus_the_first(recorded, tmp_path):
    root, _ = recorded
    out = tmp_path / "deep" / "eval.mp4"
    proc = _run("eval", root / "with" / "checkpoint.pt", "--episodes", "1", "--video", out, "--video-size", "48",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("mrsq: wrote")][0]
    steps = int(line.split("episode of ")[1].split(" steps")[0])
    frames, size, fps = read_video(out)
    assert (frames, size) == (steps + 1, (48, 48)) and f"{frames} frames of 48x48" in line


@needs_osmesa
def test_recording_does_not_change_the_run(recorded):
    root, proc = recorded
    assert proc.returncode == 0, proc.stderr
    plain = _run("train", "mrq_small", *TINY, "--out", root / "without", gl="disable")
    assert plain.returncode == 0, plain.stderr

    def rows(folder):
        with open(folder / "eval.csv") as f:
            return [(r["step"], r["return_mean"], r["value_bias"]) for r in csv.DictReader(f)]

    assert rows(root / "with") == rows(root / "without")


@needs_osmesa
def test_a_dm_control_video_lasts_the_whole_episode(tmp_path):
    """dm_control episodes are 500 agent steps: 501 frames, at 50 fps (control step 0.01 s x 2)."""
    code = ("from mrsq.envs import make_env\nfrom mrsq.render import FrameRenderer, VideoWriter\n"
            "import numpy as np\nenv = make_env('dmc:cartpole-swingup', 0); env.reset()\n"
            "r = FrameRenderer(env, 32); w = VideoWriter(r'%s', 32, env.frame_rate); w.write(r.render())\n"
            "done = False\nwhile not done:\n    *_, te, tr = env.step(np.zeros(1, np.float32)); w.write(r.render()); done = te or tr\n"
            "w.close()\n" % (tmp_path / "c.mp4"))
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MUJOCO_GL": "osmesa"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert read_video(tmp_path / "c.mp4") == (501, (32, 32), 50.0)


# ------------------------------------------------------------------------------ no renderer
@pytest.fixture
def no_renderer(monkeypatch):
    monkeypatch.setattr(render, "_find_osmesa", lambda: None)
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)  # as a fresh process, before MuJoCo loads
    monkeypatch.setenv("MUJOCO_GL", "disable")


def test_no_renderer_is_one_line_naming_the_fix(no_renderer):
    with pytest.raises(RenderError) as info:
        render.ensure_backend()
    assert str(info.value) == NO_RENDERER and "libosmesa6" in NO_RENDERER and "MUJOCO_GL" in NO_RENDERER
    assert os.environ["MUJOCO_GL"] == "disable"


def test_a_chosen_backend_is_kept(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    assert render.ensure_backend() == "egl"


def test_eval_video_without_a_renderer_exits_2(no_renderer, mrsq_main, tmp_path):
    code, _, err = mrsq_main("eval", tmp_path / "missing.pt", "--video", tmp_path / "v.mp4")
    assert code == 2 and "libosmesa6" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = mrsq_main("eval", tmp_path / "missing.pt", "--video", tmp_path / "v.gif")
    assert code == 2 and "mp4" in err


def test_training_without_a_renderer_warns_before_work_and_trains(no_renderer, tmp_path, capsys):
    from mrsq import specs
    from mrsq.testing import PointEnv  # noqa: F401  (registers fake:)
    from mrsq.training.loop import Trainer

    spec = specs.load("mrq_small", ["train.env=fake:point2", "warmup_steps=10", "train.steps=20",
                                    "train.eval_every=10", "train.eval_episodes=1", "compile=off",
                                    "batch_size=8", "train.video_every=1"])
    trainer = Trainer(spec, tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "warning: train.video_every=1 but" in err and "training without videos" in err
    trainer.run()
    assert (tmp_path / "run" / "eval.csv").exists() and not (tmp_path / "run" / "videos").exists()
