"""Cost of train.loggers per train.csv row, and as a share of a training step.

    python benchmarks/logger_overhead.py [--rows 200] [--step-ms 26.5] [--log-every 1000]

Times ``Loggers.log`` on rows with train.csv's columns (MR.Q's metrics) for each backend, offline
W&B included, in a temporary run folder. A row is written every ``train.log_every`` steps
(default 1000) and an evaluation row every ``eval_every``; the share of a step is
``ms per row / (log_every * step ms)``. ``--step-ms``: the env-step time to compare with
(default: ``mrsq_small`` on gym:Hopper-v5 at one thread, 37.7 env steps/s, the stack notes'
figure; pass your own from ``mrsq bench loop``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mrsq import specs
from mrsq.agents.mrq import MRQ
from mrsq.training.loggers import Loggers
from mrsq.training.loop import TRAIN_COLUMNS


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--step-ms", type=float, default=1e3 / 37.7)
    p.add_argument("--log-every", type=int, default=1000)
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    spec = specs.load("mrsq_small").model_dump(mode="json")
    columns = [c for c in (*TRAIN_COLUMNS, *MRQ.METRICS) if c != "step"]
    print(f"| backends | start (s, once per process) | ms per row | share of a step (row every {args.log_every} "
          f"steps of {args.step_ms:.1f} ms) |")
    print("|---|---:|---:|---:|")
    for names in (["tensorboard"], ["wandb"], ["tensorboard", "wandb"]):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            log = Loggers(names, Path(tmp), spec, None)
            log.log("train", {c: 0.5 for c in columns}, 0)  # first row: lazy set-up
            started = time.perf_counter() - t0
            start = time.perf_counter()
            for i in range(1, args.rows + 1):
                log.log("train", {"step": i, **{c: float(i) / (j + 1) for j, c in enumerate(columns)}}, i * args.log_every)
            ms = 1e3 * (time.perf_counter() - start) / args.rows
            log.close()
        print(f"| {' + '.join(names)} | {started:.1f} | {ms:.2f} | {100 * ms / (args.log_every * args.step_ms):.4f}% |")


if __name__ == "__main__":
    main()
