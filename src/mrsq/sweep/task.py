"""The Ray task: one ``mrsq train`` in a subprocess, its command line, environment and error report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import collections
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mrsq.sweep.common import STDERR_TAIL, STOP_GRACE_S

if TYPE_CHECKING:
    from mrsq.sweep.common import Run
    from mrsq.sweep.file import Sweep

# ---------------------------------------------------------------------------------- the Ray task
def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """SIGTERM the run if the Ray worker that started it dies (Linux), so it checkpoints and stops."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_train(cmd: list[str], env: dict[str, str], log: str) -> dict:
    """Body of a sweep's Ray task: run ``cmd`` (``mrsq train``) and wait for it. A cancelled task
    (``ray.cancel``, which raises KeyboardInterrupt here) sends the run SIGTERM, so it writes a final
    checkpoint, and waits for it to stop. Returns ``{"rc", "tail"}``."""
    child_env = dict(os.environ, **env)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    cmd = [sys.executable, *cmd]
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as log_file:
        log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename} (Ray node "
                       f"{_ray_node()}): {' '.join(cmd)}\n")
        log_file.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.PIPE,
                                env=child_env, start_new_session=True,
                                preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)

        def pump():
            for raw in proc.stderr:
                line = raw.decode(errors="replace")
                log_file.write(line)
                log_file.flush()
                for part in line.replace("\r", "\n").splitlines():  # progress bars redraw with \r
                    if part.strip():
                        tail.append(part.rstrip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:  # cancelled: stop the run cleanly, then let Ray see the cancellation
            _stop(proc)
            raise
        reader.join(timeout=5)
    return {"rc": rc, "tail": list(tail)}


def _ray_node() -> str:
    """The Ray node id this task runs on (several nodes may share a host name), or '-' outside Ray."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only a label in the log
        return "-"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # a second cancellation: do not wait any longer
            break
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def train_command(run: Run, sweep: Sweep, resume: bool) -> list[str]:
    """Arguments after the Python executable."""
    if resume:
        return ["-m", "mrsq.cli", "train", "--resume", str(run.path), "--no-progress"]
    cmd = ["-m", "mrsq.cli", "train", run.source, "--env", run.env, "--seed", str(run.seed)]
    for module in sweep.config.imports:  # a resume re-imports what run.json recorded
        cmd += ["--import", module]
    for item in run.overrides:
        cmd += ["--set", item]
    return [*cmd, "--set", f"train.threads={sweep.config.resources.cpus}", "--no-progress", "--out", str(run.path)]


def child_env(sweep: Sweep) -> dict[str, str]:
    n = str(sweep.config.resources.cpus)
    env = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "MUJOCO_GL": "disable", "PYTHONUNBUFFERED": "1"}
    if not sweep.config.resources.gpus:  # Ray leaves every GPU visible to a task that asked for none
        env["CUDA_VISIBLE_DEVICES"] = ""
    if sweep.import_roots:  # absolute folders: a Ray worker's working folder is not the driver's
        inherited = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*sweep.import_roots, *inherited]))
    return env


def _error_line(tail: list[str]) -> str:
    for line in reversed(tail):
        if line.startswith("mrsq: error:"):
            return line.removeprefix("mrsq: error:").strip()
    for line in reversed(tail):
        if line.strip():
            return line.strip()[:300]
    return ""


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"
