"""What a sweep shows while it runs (progress bars, or plain lines) and what it writes at the end."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING

from mrsq.sweep.common import SWEEP_JSON

if TYPE_CHECKING:
    from mrsq.sweep.common import Run
    from mrsq.sweep.file import Sweep

# ---------------------------------------------------------------------------------- display
def _fmt_return(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


class Display:
    """An overall tqdm bar and one line per run on a terminal; otherwise one plain line per run
    state change."""

    def __init__(self, sweep: Sweep, fancy: bool, every: float = 60.0) -> None:
        self.sweep, self.fancy = sweep, fancy
        self.every = every  # plain mode: a progress line per running run this often (seconds)
        self.rates: dict[str, tuple[float, int]] = {}  # folder -> (time, step) of its last progress line
        self.width = max(len(r.folder) for r in sweep.runs)
        self.shown: dict[str, tuple] = {}
        self.total = sum(r.steps for r in sweep.runs)
        self.done_steps = sum(min(r.step, r.steps) for r in sweep.runs)
        if fancy:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done_steps, position=0, desc="sweep", unit="step",
                            file=sys.stderr, dynamic_ncols=True, leave=True)
            self.lines = {r.folder: tqdm(total=0, position=i + 1, bar_format="{desc}", file=sys.stderr, leave=True)
                          for i, r in enumerate(sweep.runs)}
        for r in sweep.runs:
            self.update(r)

    def line(self, r: Run) -> str:
        return (f"{r.folder:<{self.width}}  {r.state:<11} {min(r.step, r.steps):>8}/{r.steps:<8} "
                f"return {_fmt_return(r.last_return)}")

    def update(self, r: Run) -> None:
        if self.fancy:
            key = (r.state, r.step, r.last_return)
            if self.shown.get(r.folder) != key:
                self.shown[r.folder] = key
                self.lines[r.folder].set_description_str(self.line(r), refresh=True)
            done = sum(min(x.step, x.steps) for x in self.sweep.runs)
            if done > self.done_steps:  # (a run resumed from its previous checkpoint may step back)
                self.bar.update(done - self.done_steps)
                self.done_steps = done
        elif self.shown.get(r.folder) != (r.state,):
            self.shown[r.folder] = (r.state,)
            self.rates[r.folder] = (time.monotonic(), r.step)
            print(f"mrsq: {self.line(r)}" + (f"  ({r.error})" if r.error and r.state in ("failed", "diverged", "retrying") else ""),
                  file=sys.stderr, flush=True)
        elif r.state in ("running", "resumed") or r.state.startswith("retry"):
            self._progress_line(r)

    def _progress_line(self, r: Run) -> None:
        """Without a terminal: step, steps/s since the last line, last return and ETA of a
        running run, every ``every`` seconds (state changes alone would say nothing for hours)."""
        now = time.monotonic()
        then, step = self.rates.get(r.folder, (now, r.step))
        if now - then < self.every:
            return
        rate = (r.step - step) / max(now - then, 1e-9)
        left = max(r.steps - r.step, 0)
        eta = _fmt_duration(left / rate) if rate > 0 else "-"
        self.rates[r.folder] = (now, r.step)
        print(f"mrsq: {self.line(r)}  {rate:.1f} steps/s  ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.fancy:
            for bar in self.lines.values():
                bar.close()
            self.bar.close()


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def summary(sweep: Sweep) -> str:
    width = max(len("run"), *(len(r.folder) for r in sweep.runs))
    lines = [f"{'run':<{width}}  {'state':<11} {'steps':>17}  {'return':>8}  error",
             f"{'-' * width}  {'-' * 11} {'-' * 17}  {'-' * 8}  -----"]
    for r in sweep.runs:
        steps = f"{min(r.step, r.steps)}/{r.steps}"
        lines.append(f"{r.folder:<{width}}  {r.state:<11} {steps:>17}  {_fmt_return(r.last_return):>8}  {r.error or ''}")
    return "\n".join(lines)


def write_sweep_json(sweep: Sweep) -> None:
    info = {"sweep": str(sweep.file.resolve()), "out": str(sweep.out), "resources": sweep.config.resources.model_dump(),
            "retries": sweep.config.retries, "imports": sweep.config.imports,
            "runs": [r.record() for r in sweep.runs]}
    sweep.out.mkdir(parents=True, exist_ok=True)
    tmp = sweep.out / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(sweep.out / SWEEP_JSON)
