"""Running a sweep on Ray: start or join a cluster, submit what is not complete, retry, stop cleanly."""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from typing import Any

from mrsq.runs import read_run_json
from mrsq.sweep.common import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER, LOG_FILE, STOP_GRACE_S, SweepError
from mrsq.sweep.display import Display, summary, write_sweep_json
from mrsq.sweep.common import Run
from mrsq.sweep.file import Sweep, _error
from mrsq.sweep.folders import clean_for_fresh_start, is_complete, is_resumable, read_progress
from mrsq.sweep.task import _error_line, _signal_name, child_env, run_train, train_command

# ---------------------------------------------------------------------------------- the driver
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _start_ray(sweep: Sweep, address: str | None, max_parallel: int | None):
    import logging
    import warnings

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", module="ray")
    import ray

    res = sweep.config.resources
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"--address {address}: cannot connect to a Ray cluster there "
                             f"({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})") from None
    else:
        cpus = os.cpu_count() or 1
        if res.cpus > cpus:
            raise _error(sweep.file, "resources.cpus", f"{res.cpus} per run, but this machine has {cpus} CPUs")
        if max_parallel:
            cpus = min(cpus, max(res.cpus, max_parallel * res.cpus))
        ray.init(address="local", num_cpus=cpus, object_store_memory=100 * 1024 ** 2, **quiet)
    return ray


def _capacity(ray, sweep: Sweep) -> int:
    """How many runs the cluster holds at once (refuses a request no node can ever grant)."""
    res = sweep.config.resources
    total = ray.cluster_resources()
    n = int(total.get("CPU", 0) // res.cpus)
    if n < 1:
        raise _error(sweep.file, "resources.cpus", f"{res.cpus} per run, but the Ray cluster has {total.get('CPU', 0):g} CPUs")
    if res.gpus > 0:
        g = int(total.get("GPU", 0) // res.gpus)
        if g < 1:
            raise _error(sweep.file, "resources.gpus", f"{res.gpus:g} per run, but the Ray cluster has "
                                                       f"{total.get('GPU', 0):g} GPUs")
        n = min(n, g)
    return n


def execute(sweep: Sweep, address: str | None = None, max_parallel: int | None = None,
            progress: bool = True, progress_every: float = 60.0) -> int:
    """Run what is not complete; 0 when every run completed, 1 when any failed or diverged, 130
    when stopped by Ctrl-C or SIGTERM."""
    todo = [r for r in sweep.runs if r.start in ("fresh", "resume")]
    for r in sweep.runs:
        r.step, r.last_return = read_progress(r.path) if r.start != "fresh" else (0, None)
        if r.start == "skip":
            r.state, r.step = "skipped", r.steps
        elif r.start == "diverged":
            r.state, r.error = "diverged", "diverged before (delete the folder to retry)"
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # a sweep started in the background inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    ray = _start_ray(sweep, address, max_parallel)
    if main_thread:  # ray.init replaces the driver's SIGTERM handler
        signal.signal(signal.SIGTERM, _raise_interrupt)
    display = None
    stopped = False
    try:
        limit = _capacity(ray, sweep)
        if max_parallel:
            limit = min(limit, max_parallel)
        res = sweep.config.resources
        task = ray.remote(run_train).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)
        write_sweep_json(sweep)
        display = Display(sweep, fancy=progress and sys.stderr.isatty(), every=progress_every)
        pending = collections.deque(todo)
        inflight: dict[Any, Run] = {}

        def submit(r: Run) -> None:
            resume = is_resumable(r.path)
            if not resume and r.path.is_dir():
                clean_for_fresh_start(r.path)
            r.path.mkdir(parents=True, exist_ok=True)
            r.attempts += 1
            r.error = None
            if r.attempts > 1:
                r.state = f"retry {r.attempts - 1}"
            else:
                r.state = "resumed" if resume else "running"
            inflight[task.remote(train_command(r, sweep, resume), child_env(sweep), str(r.path / LOG_FILE))] = r
            display.update(r)

        last_poll = 0.0
        try:
            while pending or inflight:
                while pending and len(inflight) < limit:
                    submit(pending.popleft())
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    r = inflight.pop(ref)
                    if _finish(ray, ref, r, sweep) == "retry":
                        pending.appendleft(r)
                    display.update(r)
                if time.monotonic() - last_poll >= 1.0:
                    last_poll = time.monotonic()
                    for r in inflight.values():
                        r.step, r.last_return = read_progress(r.path)
                        display.update(r)
        except KeyboardInterrupt:
            stopped = True
            _stop_all(ray, inflight, display)
            for r in pending:
                r.state = "not started"
    except KeyboardInterrupt:  # before the loop ran
        stopped = True
    finally:
        if display is not None:
            display.close()
        ray.shutdown()
    write_sweep_json(sweep)
    print(summary(sweep), file=sys.stderr)
    print(f"mrsq: results in {sweep.out}/; compare with: mrsq compare {sweep.out}", file=sys.stderr)
    if stopped:
        print(f"mrsq: stopped; rerun `mrsq sweep {sweep.file} --out {sweep.out}` to continue", file=sys.stderr)
        return 130
    ok = all(r.state in ("done", "skipped") for r in sweep.runs)
    return 0 if ok else 1


def _finish(ray, ref, r: Run, sweep: Sweep) -> str:
    """Record how a task ended: "final" or "retry"."""
    from ray.exceptions import RayError, TaskCancelledError

    try:
        result = ray.get(ref)
        rc, tail = result["rc"], result["tail"]
        error = _error_line(tail)
    except TaskCancelledError:
        rc, error = EXIT_INTERRUPTED, "cancelled"
    except RayError as exc:  # the worker or its node died
        rc, error = None, f"Ray: {str(exc).strip().splitlines()[0][:200]}"
    r.step, r.last_return = read_progress(r.path)
    if rc == EXIT_OK:
        r.state, r.error, r.step = "done", None, max(r.step, r.steps)
        return "final"
    if rc == EXIT_USER:
        r.state, r.error = "failed", error or "mrsq train: user error (status 2)"
        return "final"
    if rc == EXIT_DIVERGED:
        r.state, r.error = "diverged", error or "non-finite loss"
        return "final"
    if rc is not None and rc < 0:
        error = f"killed by {_signal_name(rc)}" + (" (out of memory?)" if rc == -signal.SIGKILL else "")
    elif rc == EXIT_INTERRUPTED:
        error = "interrupted (SIGINT/SIGTERM from outside the sweep)"
    elif rc is not None:
        error = f"exit status {rc}: {error}" if error else f"exit status {rc}"
    r.error = error
    if r.attempts <= sweep.config.retries:
        r.state = "retrying"
        return "retry"
    r.state = "failed"
    return "final"


def _stop_all(ray, inflight: dict, display: Display | None) -> None:
    """Ctrl-C: cancel the running tasks (their runs get SIGTERM and write a final checkpoint) and
    wait for them; a second Ctrl-C stops waiting."""
    print(f"\nmrsq: stopping: {len(inflight)} running runs write a final checkpoint "
          "(Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
    for ref in inflight:
        ray.cancel(ref, force=False)
    try:
        if inflight:
            ray.wait(list(inflight), num_returns=len(inflight), timeout=STOP_GRACE_S + 10)
    except KeyboardInterrupt:
        pass
    for r in inflight.values():
        r.step, r.last_return = read_progress(r.path)
        status = read_run_json(r.path).get("status")
        r.state = "done" if is_complete(r.path) else "interrupted"
        r.error = None if r.state == "done" else f"stopped (run.json: {status or 'none'}); rerun the sweep to resume"
