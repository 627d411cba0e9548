"""What every part of a sweep shares: the file names in an output folder, the limits, the error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrsq.specs import SpecError

SWEEP_JSON = "sweep.json"
LOG_FILE = "sweep.log"  # the run's mrsq train output, appended per attempt (not a file mrsq train writes)
STDERR_TAIL = 20  # lines of a run's stderr kept for its error report
STOP_GRACE_S = 120  # how long a stopped run may take to write its final checkpoint before SIGKILL

# `mrsq train` exit codes (mrsq.cli)
EXIT_OK, EXIT_USER, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130

# what `mrsq train` writes in a run folder: removed (and nothing else) before a fresh start
TRAIN_FILES = ("eval.csv", "train.csv", "spec.yaml", "run.json", "run.json.tmp")
TRAIN_GLOBS = ("checkpoint*",)
TRAIN_DIRS = ("replay",)

# keys the sweep sets itself
RESERVED = {"train.env": "envs", "train.seed": "seeds", "train.threads": "resources.cpus"}


class SweepError(SpecError):
    """A user-caused problem with a sweep file or its output folder (one line naming file and
    field). A :class:`~mrsq.specs.SpecError`, so the CLI reports it like a bad spec (status 2)."""


@dataclass
class Run:
    folder: str  # relative to OUT: <env>/<variant>/seed<k>
    path: Path  # absolute
    preset: str  # as written in the sweep file
    source: str  # what `mrsq train` gets: a preset name or an absolute YAML path
    variant: str  # preset name or file stem + grid suffix: the label plot/compare use
    env: str
    seed: int
    overrides: list[str]  # set + grid (not env, seed, threads)
    steps: int  # train.steps
    start: str = "fresh"  # what the run would do now: fresh, resume, skip, diverged
    state: str = "pending"
    attempts: int = 0
    error: str | None = None
    step: int = 0
    last_return: float | None = None
    resumes: int = 0

    def record(self) -> dict:
        return {"folder": self.folder, "variant": self.variant, "preset": self.preset, "source": self.source,
                "env": self.env, "seed": self.seed, "overrides": self.overrides, "steps": self.steps,
                "state": self.state, "attempts": self.attempts, "error": self.error}
