"""Exact resume and no lost work (mrsq.training.loop, .checkpoint, mrsq.replay.store).

The end-to-end tests kill real ``mrsq train`` processes with SIGKILL (``MRSQ_FAILPOINT``) and
SIGTERM at several points, resume, and require the same ``eval.csv`` as an uninterrupted run
(every column but ``wall_time``, compared as text: bit for bit).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.replay import LAPReplay
from mrsq.replay import store
from mrsq.training import checkpoint as ckpt
from mrsq.training.logging import CSVLog, MetricMeans
from mrsq.training.loop import NonFiniteError, Trainer

# A CPU-cheap MRS.Q (planning, so the planner's warm start is part of what must resume) and MR.Q.
TINY = ["encoder.zs_dim=32", "encoder.za_dim=16", "encoder.zsa_dim=32", "encoder.hidden_dim=32",
        "critic.hidden_dim=32", "policy.hidden_dim=32", "batch_size=32", "warmup_steps=60",
        "target_update_every=40", "train.threads=1", "train.log_every=25", "train.eval_episodes=1",
        "train.device=cpu"]  # bit-for-bit needs the CPU: CUDA's index_put_ with duplicates is not deterministic
PLANNER = ["critic.num_members=3", "planner.num_samples=32", "planner.num_elites=8",
           "planner.num_policy_trajectories=4", "planner.iterations=2"]


def tiny_spec(preset: str, env: str, steps: int, **train):
    overrides = TINY + (PLANNER if preset == "mrsq_small" else []) + [f"train.env={env}", f"train.steps={steps}"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return specs.load(preset, overrides)


def run_cli(args: list[str], cwd: Path, failpoint: str | None = None, timeout: float = 300):
    env = dict(os.environ, MUJOCO_GL="disable", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("MRSQ_FAILPOINT", None)
    if failpoint:
        env["MRSQ_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "mrsq.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def eval_rows(path: Path) -> list[dict]:
    """eval.csv rows as text, without the wall clock (the only column two identical runs differ in)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.pop("wall_time")
    return rows


def train_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for clock in ("wall_time", "steps_per_s"):
            row.pop(clock)
    return rows


@pytest.fixture
def one_thread():
    """In-process runs set torch's thread count; give the rest of the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ replay store
def fill(buffer: LAPReplay, rng: np.random.Generator, count: int, episode_len: int) -> None:
    obs = rng.normal(size=buffer._obs_dim).astype(np.float32)
    for i in range(count):
        nxt = rng.normal(size=buffer._obs_dim).astype(np.float32)
        end = (buffer.num_added + 1) % episode_len == 0
        terminated = end and rng.random() < 0.5
        buffer.add(obs, rng.uniform(-1, 1, buffer._action_dim), float(rng.normal()), nxt, terminated, end and not terminated)
        obs = rng.normal(size=buffer._obs_dim).astype(np.float32) if end else nxt


@pytest.mark.parametrize("capacity", [1000, 97], ids=["no-wrap", "wraps"])
def test_replay_store_round_trip(tmp_path, capacity):
    """Segments written at several checkpoints, loaded into a fresh buffer: identical arrays,
    priorities and subsequent draws; a buffer that wrapped keeps only the segments it needs."""
    rng = np.random.default_rng(0)
    buffer = LAPReplay(5, 2, capacity=capacity, horizon=3, seed=1)
    folder, segments, saved = tmp_path / "replay", [], 0
    for count in (40, 1, 73, 120):
        fill(buffer, rng, count, episode_len=17)
        batch = buffer.sample(8)
        buffer.update_priority(batch.indices, torch.rand(8) * 3)
        segment = store.write_segment(buffer, folder, saved)
        segments = store.needed(segments + [segment], buffer.num_added, buffer.capacity)
        saved = buffer.num_added
    store.collect_garbage(folder, [segments])
    state = buffer.bookkeeping_state()
    copy = LAPReplay(5, 2, capacity=capacity, horizon=3, seed=99)
    copy.load_state_dict(state, arrays=False)
    store.load(copy, folder, segments)
    for key in ("obs", "action", "reward", "next_obs", "terminated", "valid"):
        np.testing.assert_array_equal(getattr(copy, f"_{key}"), getattr(buffer, f"_{key}"), err_msg=key)
    assert torch.equal(copy.priorities, buffer.priorities)
    a, b = buffer.sample(16), copy.sample(16)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.next_obs, b.next_obs)
    # compact: observations stored once, next_obs only at episode ends and segment ends
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 * len(segments)
    rows_per_segment = [len(np.load(folder / f"{a:012d}-{e:012d}.next.npy")) for a, e in segments]
    assert sum(rows_per_segment) < 0.2 * sum(e - a for a, e in segments)
    if capacity < 100:
        assert segments[0][0] > 0  # the oldest segments were no longer needed and were deleted


def test_replay_store_damaged_segment_is_a_clear_error(tmp_path):
    buffer = LAPReplay(3, 1, capacity=100, horizon=3, seed=0)
    fill(buffer, np.random.default_rng(0), 30, episode_len=10)
    segment = store.write_segment(buffer, tmp_path, 0)
    path = tmp_path / f"{segment[0]:012d}-{segment[1]:012d}.npy"
    path.write_bytes(path.read_bytes()[:100])
    copy = LAPReplay(3, 1, capacity=100, horizon=3, seed=0)
    copy.load_state_dict(buffer.bookkeeping_state(), arrays=False)
    with pytest.raises(store.ReplayStoreError, match="000000000000-000000000030.npy"):
        store.load(copy, tmp_path, [segment])


# ------------------------------------------------------------------------------ logs
def test_csv_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "eval.csv"
    log = CSVLog(path, ["step", "x"])
    for step in (0, 10, 20, 30):
        log.write({"step": step, "x": step / 3})
    log.close()
    with path.open("a") as f:
        f.write("40,1.2")  # a row cut short by a kill
    log = CSVLog(path, ["step", "x"], resume_at=20)
    log.write({"step": 30, "x": 7.0})
    log.close()
    assert path.read_text().splitlines() == ["step,x", "0,0", "10,3.33333", "20,6.66667", "30,7"]


def test_metric_means_finds_the_first_nonfinite_step():
    means = MetricMeans()
    means.add({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, step=1)
    means.add({"a": torch.tensor(3.0)}, step=2)
    assert means.first_nonfinite() is None
    means.add({"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))}, step=7)
    means.add({"a": torch.tensor(float("nan")), "b": torch.tensor(float("nan"))}, step=8)
    assert means.first_nonfinite() == ("b", 7)
    copy = MetricMeans()
    copy.load_state_dict(means.state_dict())
    assert copy.first_nonfinite() == ("b", 7)
    means = MetricMeans()
    means.add({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, step=1)
    means.add({"a": torch.tensor(3.0)}, step=2)
    assert means.pop() == {"a": 2.0, "b": 2.0}
    assert means.pop() == {}


# ------------------------------------------------------------------------------ checkpoint files
def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, spec_yaml="a: 1", agent_state={}, step=5, keep_previous=True)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(ckpt.CheckpointWriteError, match="No space left on device; the previous checkpoint"):
        ckpt.save_checkpoint(path, spec_yaml="a: 1", agent_state={}, step=9, keep_previous=True)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["step"] == 5
    assert not (tmp_path / "checkpoint.pt.tmp").exists()
    assert not (tmp_path / "checkpoint.prev.pt").exists()


def test_trainer_disk_full_mid_run(tmp_path, monkeypatch, one_thread):
    """Disk full at the third checkpoint: a one-line error naming the file, the second intact."""
    spec = tiny_spec("mrq_small", "gym:InvertedPendulum-v5", 120, eval_every=40)
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(ckpt.CheckpointWriteError) as info:
        Trainer(spec, tmp_path / "run", progress=False).run()
    assert "checkpoint.pt.tmp: No space left on device" in str(info.value) and "\n" not in str(info.value)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 40
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------------ fall back, divergence
@pytest.mark.slow
def test_truncated_checkpoint_falls_back_to_the_previous(tmp_path, one_thread):
    out = tmp_path / "run"
    spec = tiny_spec("mrq_small", "gym:InvertedPendulum-v5", 160, eval_every=80, checkpoint_every=40)
    Trainer(spec, out, progress=False).run()
    reference = eval_rows(out / "eval.csv")
    previous = (out / "checkpoint.prev.pt").read_bytes()
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    (out / "checkpoint.pt.tmp").write_bytes(b"stale")
    warnings = []
    trainer = Trainer.resume(out, progress=False, warn=warnings.append)
    assert len(warnings) == 1 and "checkpoint.pt: not a readable mrsq checkpoint" in warnings[0]
    assert trainer.state.step == 120 and trainer.resumed_from.name == "checkpoint.prev.pt"
    assert (out / "checkpoint.pt.corrupt").read_bytes() == data[: len(data) // 3]  # kept, not overwritten
    assert not (out / "checkpoint.pt.tmp").exists()
    trainer.run()
    assert eval_rows(out / "eval.csv") == reference
    assert (out / "checkpoint.prev.pt").read_bytes() == previous  # the good one it resumed from
    # both damaged: one line, nothing to resume from
    (out / "checkpoint.pt").write_bytes(b"garbage")
    (out / "checkpoint.prev.pt").write_bytes(b"garbage")
    result = run_cli(["train", "--resume", str(out)], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mrsq: error: ")
    assert "no usable checkpoint" in result.stderr


@pytest.mark.slow
def test_diverging_spec_stops_with_the_loss_and_step(tmp_path):
    """A huge learning rate: the run stops naming the metric and its first non-finite step,
    exit status 3, and the last checkpoint (before it) is finite."""
    out = tmp_path / "run"
    args = ["train", "mrq_small", "--env", "gym:InvertedPendulum-v5", "--steps", "400", "--eval-every", "100",
            "--no-progress", "--out", str(out)] + [a for o in TINY for a in ("--set", o)]
    args += ["--set", "optim.critic_lr=1e30", "--set", "optim.encoder_lr=1e30"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("mrsq: error: non-finite ") and " at step " in line and "Traceback" not in result.stderr
    assert "last good checkpoint" in line
    payload = ckpt.load_checkpoint(out / "checkpoint.pt")
    step = int(line.split(" at step ")[1].split(";")[0])
    assert payload["step"] < step
    for module in payload["agent"]["modules"].values():
        assert all(torch.isfinite(t).all() for t in module.values() if t.is_floating_point())
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"


# ------------------------------------------------------------------------------ exact resume
CASES = {
    # a planning agent on gym (episodes of varying length, terminations) and MR.Q on dm_control
    # (fixed 500-step episodes, so every cut is mid-episode)
    "gym": ("mrsq_small", "gym:InvertedPendulum-v5", ["step:95", "checkpoint:2", "SIGTERM"]),
    "dmc": ("mrq_small", "dmc:cartpole-balance", ["step:95", "rename:2", "step:230"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_three_times_then_resumed_matches_an_uninterrupted_run(tmp_path, case, one_thread):
    """SIGKILL before a step, SIGKILL half-way through a checkpoint write (or between writing it
    and renaming it), SIGTERM (or SIGKILL) mid-run: each time the run is resumed, and its eval.csv
    equals the uninterrupted run's, bit for bit; train.csv's losses too."""
    preset, env, interruptions = CASES[case]
    steps, train = 300, {"eval_every": 100, "checkpoint_every": 40}
    reference = tmp_path / "reference"
    Trainer(tiny_spec(preset, env, steps, **train), reference, progress=False).run()

    out = tmp_path / "cut"
    args = ["train", preset, "--env", env, "--steps", str(steps), "--no-progress", "--out", str(out)]
    args += [a for o in TINY + (PLANNER if preset == "mrsq_small" else []) for a in ("--set", o)]
    args += [a for k, v in train.items() for a in ("--set", f"train.{k}={v}")]
    for i, point in enumerate(interruptions):
        run_args = args if i == 0 else ["train", "--resume", str(out), "--no-progress"]
        if point == "SIGTERM":
            code, err = sigterm_mid_run(run_args, tmp_path, out)
            assert code == 130, err
            assert "Traceback" not in err
            payload = ckpt.load_checkpoint(out / "checkpoint.pt")
            last_train = train_rows(out / "train.csv")[-1]
            assert int(last_train["step"]) <= payload["step"]  # complete CSVs up to the final checkpoint
        else:
            result = run_cli(run_args, tmp_path, failpoint=point)
            assert result.returncode == -signal.SIGKILL, result.stderr
            assert (out / ".mrsq.lock").exists()  # left by the killed writer: stale, taken over by the resume
    if "checkpoint:2" in interruptions:
        assert not (out / "checkpoint.pt.tmp").exists()  # cleaned up by the resume after the kill
    trainer = Trainer.resume(out, progress=False)
    trainer.run()
    assert eval_rows(out / "eval.csv") == eval_rows(reference / "eval.csv")
    assert train_rows(out / "train.csv") == train_rows(reference / "train.csv")
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == len(interruptions)
    done = run_cli(["train", "--resume", str(out), "--no-progress"], tmp_path)
    assert done.returncode == 0 and "already complete" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_stopped_by_sigterm_resumes_to_the_end(tmp_path, one_thread):
    """The CUDA variant: SIGTERM mid-run, resume, done. Not bit for bit (CUDA's index_put_ with
    duplicate indices and atomics are nondeterministic), but every step and evaluation once."""
    out, steps = tmp_path / "cuda", 300
    args = ["train", "mrsq_small", "--env", "gym:InvertedPendulum-v5", "--steps", str(steps), "--no-progress",
            "--out", str(out), "--set", "train.eval_every=100", "--set", "train.checkpoint_every=40"]
    args += [a for o in TINY[:-1] + PLANNER + ["train.device=cuda"] for a in ("--set", o)]
    code, err = sigterm_mid_run(args, tmp_path, out)
    assert code == 130 and "Traceback" not in err, err
    trainer = Trainer.resume(out, progress=False)
    trainer.run()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == 1 and info["runtime"]["device"] == "cuda"
    assert [int(r["step"]) for r in eval_rows(out / "eval.csv")] == [0, 100, 200, 300]


def sigterm_mid_run(args: list[str], cwd: Path, out: Path) -> tuple[int, str]:
    """Start ``mrsq args``, send SIGTERM once train.csv has grown by two rows, return (code, stderr)."""
    log = out / "train.csv"
    rows = lambda: len(log.read_text().splitlines()) if log.exists() else 0  # noqa: E731
    rows_before = rows()
    env = dict(os.environ, MUJOCO_GL="disable", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("MRSQ_FAILPOINT", None)
    stderr = cwd / "sigterm.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mrsq.cli", *args], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                if rows() >= rows_before + 2:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, stderr.read_text()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, stderr.read_text()


def test_resume_refuses_spec_flags_and_missing_folders(tmp_path, mrsq_main):
    code, _, err = mrsq_main("train", "--resume", str(tmp_path / "nowhere"))
    assert code == 2 and "no such run folder" in err
    code, _, err = mrsq_main("train", "mrq_small", "--resume", str(tmp_path))
    assert code == 2 and "drop SOURCE" in err
    code, _, err = mrsq_main("train", "--resume", str(tmp_path))
    assert code == 2 and "no checkpoint.pt or checkpoint.prev.pt" in err


def test_checkpoints_by_time_and_by_steps(tmp_path, monkeypatch, one_thread):
    """``train.checkpoint_minutes`` bounds lost work by time, ``train.checkpoint_every`` by steps;
    the replay write is incremental (one segment per checkpoint that added transitions)."""
    written = []
    real = Trainer._checkpoint

    def counting(self, status):
        written.append(self.state.step)
        real(self, status)

    monkeypatch.setattr(Trainer, "_checkpoint", counting)
    clock = iter(range(0, 10**6, 7))  # 7 s per call of time.monotonic
    monkeypatch.setattr("mrsq.training.loop.time.monotonic", lambda: next(clock))
    spec = tiny_spec("mrq_small", "gym:InvertedPendulum-v5", 40, eval_every=40, checkpoint_minutes=0.25)
    Trainer(spec, tmp_path / "by_time", progress=False).run()
    # 15 s between checkpoints at 7 s per step: every third step or so, plus step 0 and the end
    assert 10 <= len(written) <= 16 and written[0] == 0 and written[-1] == 40
    monkeypatch.undo()
    written.clear()
    monkeypatch.setattr(Trainer, "_checkpoint", counting)
    spec = tiny_spec("mrq_small", "gym:InvertedPendulum-v5", 40, eval_every=40, checkpoint_every=15,
                     checkpoint_minutes=0)
    Trainer(spec, tmp_path / "by_steps", progress=False).run()
    assert written == [0, 15, 30, 40]
    segments = sorted(p.name for p in (tmp_path / "by_steps" / "replay").glob("*[0-9].npy"))
    assert segments == ["000000000000-000000000015.npy", "000000000015-000000000030.npy",
                        "000000000030-000000000040.npy"]
