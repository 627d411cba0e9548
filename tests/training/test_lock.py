"""One writer per run folder (mrsq.training.lock) and --fresh-replay.

The lock: a second writer (a resume, a fresh run into the same folder, a retried sweep task)
stops with one line naming the holder, before writing; a lock left by a SIGKILLed process is
taken over; the exclusive-file fallback (filesystems without locks) decides staleness by pid on
the same host and refuses, with the file to delete, for another host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrsq.training import lock
from mrsq.training.loop import Trainer

from test_resume import TINY, eval_rows, run_cli, tiny_spec

HOLD = "import sys, time; from mrsq.training.lock import acquire; acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def holder(folder: Path) -> subprocess.Popen:
    """A process that takes ``folder``'s lock and sleeps (killed by the test)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = holder(tmp_path / "run")
    try:
        with pytest.raises(lock.RunLockedError, match=rf"pid {proc.pid} on {socket.gethostname()}"):
            lock.acquire(tmp_path / "run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    notes = []
    held = lock.acquire(tmp_path / "run", warn=notes.append)  # the kernel dropped the dead one's flock
    assert held.mode == "flock" and held.took_over["pid"] == proc.pid
    assert len(notes) == 1 and f"pid {proc.pid}" in notes[0] and "no longer running" in notes[0]
    assert lock.acquire(tmp_path / "run") is held and held.count == 2  # re-entrant in one process
    held.release()
    assert (tmp_path / "run" / lock.LOCK_NAME).exists()
    held.release()
    assert not (tmp_path / "run" / lock.LOCK_NAME).exists()  # nothing left in the run folder


def test_exclusive_file_fallback_where_the_filesystem_cannot_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "_acquire_flock", lambda folder: None)
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / lock.LOCK_NAME
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": "then"}))
    held = lock.acquire(folder)
    assert held.mode == "exclusive-file" and held.took_over["pid"] == int(dead.stdout)
    held.release()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live holder on this host
        path.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "since": "now"}))
        with pytest.raises(lock.RunLockedError, match=f"pid {proc.pid}"):
            lock.acquire(folder)
    finally:
        proc.kill()
        proc.wait()
    path.write_text(json.dumps({"pid": 1, "host": "another-node", "since": "now"}))  # cannot be checked
    with pytest.raises(lock.RunLockedError, match=f"another-node.*delete {path}"):
        lock.acquire(folder)


@pytest.mark.slow
def test_two_writers_the_second_exits_2_and_the_first_run_is_undisturbed(tmp_path):
    steps, train = 240, {"eval_every": 80, "checkpoint_every": 40}
    reference = tmp_path / "reference"
    Trainer(tiny_spec("mrq_small", "gym:InvertedPendulum-v5", steps, **train), reference, progress=False).run()
    out = tmp_path / "run"
    args = ["train", "mrq_small", "--env", "gym:InvertedPendulum-v5", "--steps", str(steps), "--no-progress",
            "--out", str(out)]
    args += [a for o in TINY for a in ("--set", o)] + [a for k, v in train.items() for a in ("--set", f"train.{k}={v}")]
    env = dict(os.environ, MUJOCO_GL="disable", OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", "mrsq.cli", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # paused mid-run, lock held, while the second writers try
        assert first.poll() is None, "the first run ended before the second writer could try"
        for second in (["train", "--resume", str(out), "--no-progress"], args):  # a resume; a fresh run into it
            result = run_cli(second, tmp_path)
            assert result.returncode == 2, result.stderr
            line = result.stderr.strip().splitlines()
            assert len(line) == 1 and f"pid {first.pid}" in line[0] and "writing this run folder" in line[0], line
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert eval_rows(out / "eval.csv") == eval_rows(reference / "eval.csv")
    assert not (out / lock.LOCK_NAME).exists()


@pytest.mark.slow
def test_fresh_replay_continues_a_run_whose_replay_is_gone(tmp_path, mrsq_main):
    out = tmp_path / "run"
    spec = tiny_spec("mrq_small", "gym:InvertedPendulum-v5", 200, eval_every=100, checkpoint_every=40)
    stop = lambda event: not (event["kind"] == "train" and event["step"] >= 120)  # noqa: E731
    result = Trainer(spec, out, progress=False).run(callback=stop)  # stopped as by SIGTERM: checkpointed
    assert result.interrupted
    cut = json.loads((out / "run.json").read_text())["step"]
    for segment in (out / "replay").iterdir():
        segment.write_bytes(b"damaged")
    code, _, err = mrsq_main("train", "--resume", str(out), "--no-progress")
    assert code == 2 and "no usable checkpoint" in err and "--fresh-replay" in err
    assert (out / "checkpoint.pt").exists() and not (out / "checkpoint.pt.corrupt").exists()  # nothing renamed
    code, _, err = mrsq_main("train", "--resume", str(out), "--no-progress", "--fresh-replay", "50")
    assert code == 0, err
    assert "fresh replay buffer (50 warm-up steps" in err and "no longer an exact continuation" in err
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done" and info["step"] == 200 and info["fresh_replay"] == [{"step": cut, "refill": 50}]
    assert [int(r["step"]) for r in eval_rows(out / "eval.csv")] == [0, 100, 200]
    code, _, err = mrsq_main("train", "--resume", str(out), "--no-progress")  # and an ordinary resume after it
    assert code == 0 and "already complete" in err
    code, _, err = mrsq_main("train", "mrq_small", "--fresh-replay")
    assert code == 2 and "use it with --resume" in err
