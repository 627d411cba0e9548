"""``mrsq sweep SWEEP.yaml``: presets x envs x seeds (x a grid of overrides), each run a Ray task.

The sweep file (validated before anything starts; unknown fields are errors)::

    presets: [mrq_small, mrsq_small, variants/my_variant.yaml]  # names or YAML paths (relative to this file)
    envs: [dmc:cartpole-swingup, gym:Hopper-v5]
    seeds: [0, 1, 2]                      # or n, meaning 0..n-1
    set: {train.steps: 20000}             # overrides of every run (keys as in `mrsq train --set`)
    grid: {critic.num_members: [2, 10]}   # optional: every combination is a variant
    resources: {cpus: 1, gpus: 0}         # what each run asks Ray for; its torch threads = cpus
    retries: 2                            # a failed run is resumed this many times
    out: runs/sweep                       # relative to the current folder; --out wins
    imports: [my_pkg.components]          # modules registering your own components (as --import)

Each run is an ordinary ``mrsq train`` run folder, ``OUT/<env>/<variant>/seed<k>/``, where
``<env>`` is the env id with ``:`` and ``/`` replaced by ``-`` and ``<variant>`` the preset name
(or YAML file stem) followed by ``__key=value`` for each grid key. The task runs ``mrsq train`` in
a subprocess, so a crash cannot take a Ray worker down. Rerunning the sweep skips complete runs,
resumes interrupted or failed ones from their checkpoint, and starts the others afresh.
``OUT/sweep.json`` lists the runs and how they ended, for scripts; ``mrsq plot OUT`` and
``mrsq compare OUT`` read the folder directly.

``imports`` are imported and contract-checked before anything starts (as ``mrsq train --import``
does), and every run gets ``--import`` for each. The runs' ``PYTHONPATH`` starts with the folder
each module was found in, so a module found through ``PYTHONPATH=.`` is still found by a Ray
worker that runs in another folder.

The package, by concern: :mod:`~mrsq.sweep.file` (the schema and its expansion),
:mod:`~mrsq.sweep.folders` (what a run folder holds), :mod:`~mrsq.sweep.task` (the Ray task),
:mod:`~mrsq.sweep.display` (progress and summary), :mod:`~mrsq.sweep.driver` (Ray), and here the
command line; every public name is importable from ``mrsq.sweep`` as before.
"""

from __future__ import annotations

import argparse
import collections
import sys

from mrsq.sweep.common import (LOG_FILE, RESERVED, STDERR_TAIL, STOP_GRACE_S, SWEEP_JSON, TRAIN_DIRS,  # noqa: F401
                               TRAIN_FILES, TRAIN_GLOBS, SweepError)
from mrsq.sweep.display import Display, _fmt_duration, _fmt_return, summary, write_sweep_json  # noqa: F401
from mrsq.sweep.driver import _capacity, _finish, _start_ray, _stop_all, execute  # noqa: F401
from mrsq.sweep.common import Run  # noqa: F401
from mrsq.sweep.file import Resources, Sweep, SweepFile, load_sweep  # noqa: F401
from mrsq.sweep.folders import (_differences, _start_state, clean_for_fresh_start, is_complete,  # noqa: F401
                                is_resumable, read_progress)
from mrsq.sweep.task import _error_line, _signal_name, _stop, child_env, run_train, train_command  # noqa: F401
import time  # noqa: F401,E402  (sweep.time: tests fake the clock of the display through it)

# ---------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP.yaml",
                   help="sweep file: presets, envs, seeds, set, grid, resources, retries, out, imports")
    p.add_argument("--address", help="an existing Ray cluster (e.g. 10.0.0.1:6379 or ray://host:10001); OUT must "
                                     "then be on a filesystem every node shares, at the same path, and mrsq be "
                                     "installed on every node (default: a local Ray started for this sweep)")
    p.add_argument("--max-parallel", type=int, metavar="N", help="at most N runs at a time")
    p.add_argument("--out", help="output folder (default: the file's `out`, else runs/<file stem>)")
    p.add_argument("--retries", type=int, metavar="K", help="resume a failed run up to K times (default: the file's "
                                                            "`retries`, else 2)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and what each would do; start nothing")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    p.add_argument("--progress-every", type=float, default=60.0, metavar="SECONDS",
                   help="plain lines (--no-progress, or no terminal): a line per running run this often, with its "
                        "steps/s and ETA (default 60)")


def main(args) -> int:
    if args.max_parallel is not None and args.max_parallel < 1:
        raise SweepError(f"--max-parallel {args.max_parallel}: must be at least 1")
    if args.retries is not None and args.retries < 0:
        raise SweepError(f"--retries {args.retries}: must be at least 0")
    sweep = load_sweep(args.sweep, args.out)
    if args.retries is not None:
        sweep.config.retries = args.retries
    n = len(sweep.runs)
    if args.dry_run:
        width = max(len(r.folder) for r in sweep.runs)
        for r in sweep.runs:
            print(f"{r.folder:<{width}}  {r.start}")
        counts = collections.Counter(r.start for r in sweep.runs)
        print(f"mrsq: {n} run{'s' * (n != 1)} in {sweep.out}: " + ", ".join(f"{counts[s]} {s}" for s in
                                                          ("fresh", "resume", "skip", "diverged") if counts[s]),
              file=sys.stderr)
        return 0
    if all(r.start == "skip" for r in sweep.runs):
        print(f"mrsq: all {n} runs complete in {sweep.out}; nothing to do", file=sys.stderr)
        return 0
    if all(r.start in ("skip", "diverged") for r in sweep.runs):
        print(f"mrsq: nothing to run in {sweep.out}: every run is complete or diverged "
              "(delete a diverged run's folder to retry it)", file=sys.stderr)
        return 1
    counts = collections.Counter(r.start for r in sweep.runs)
    print(f"mrsq: sweep {sweep.file}: {n} run{'s' * (n != 1)} ({counts['fresh']} to start, {counts['resume']} to resume, "
          f"{counts['skip']} complete) -> {sweep.out}/", file=sys.stderr, flush=True)
    if args.progress_every <= 0:
        raise SweepError(f"--progress-every {args.progress_every}: must be positive (seconds)")
    return execute(sweep, args.address, args.max_parallel, progress=not args.no_progress,
                   progress_every=args.progress_every)


def _standalone(argv: list[str] | None = None) -> int:
    """``python -m mrsq.sweep ...``: the same as ``mrsq sweep ...``."""
    from mrsq.errors import UsageError
    from mrsq.errors import user_errors as _user_errors

    p = argparse.ArgumentParser(prog="mrsq sweep", description="run a sweep of mrsq train runs on Ray")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return main(args)
    except (*_user_errors(), SweepError, UsageError) as exc:
        print(f"mrsq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrsq: interrupted", file=sys.stderr)
        return 130
