"""Run folders as a sweep sees them: complete, resumable, another spec, progress so far."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mrsq.runs import read_run_json
from mrsq.sweep.common import TRAIN_DIRS, TRAIN_FILES, TRAIN_GLOBS, Run, SweepError

# ---------------------------------------------------------------------------------- run folders


def is_complete(path: Path) -> bool:
    return read_run_json(path).get("status") == "done" and (path / "checkpoint.pt").is_file()


def is_resumable(path: Path) -> bool:
    return not is_complete(path) and any((path / c).is_file() for c in ("checkpoint.pt", "checkpoint.prev.pt"))


def _start_state(run: Run, expected: dict) -> str:
    """fresh, resume, skip (complete) or diverged (stopped by a non-finite loss: rerunning it would
    diverge again; delete the folder to retry). Refuses a folder holding a run of another spec."""
    path = run.path
    if not (is_complete(path) or is_resumable(path)):
        return "fresh"
    spec_file = path / "spec.yaml"
    if spec_file.is_file():
        try:
            found = yaml.safe_load(spec_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            found = None
        if isinstance(found, dict):
            expected = yaml.safe_load(yaml.safe_dump(expected))  # the same value types as the file
            # the description is words, not settings (and a variant's is derived, so it changes
            # with how mrsq words it): never a reason to refuse a run folder
            diff = [d for d in _differences(expected, found) if not d.startswith("description")]
            if diff:
                raise SweepError(f"{path}: holds a run of another spec ({'; '.join(diff[:3])}); delete the folder "
                                 "or give another --out")
    if is_complete(path):
        return "skip"
    if read_run_json(path).get("status") == "diverged":
        return "diverged"
    return "resume"


def _differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (keys present on one side only are ignored: fields added
    or removed by another mrsq version)."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in expected.keys() & found.keys():
            out += _differences(expected[key], found[key], f"{prefix}{key}.")
        return sorted(out)
    if expected != found:
        return [f"{prefix[:-1]}: {found!r} there, {expected!r} here"]
    return []


def clean_for_fresh_start(path: Path) -> None:
    """Remove what ``mrsq train`` writes in ``path``, and nothing else."""
    for name in TRAIN_FILES:
        (path / name).unlink(missing_ok=True)
    for pattern in TRAIN_GLOBS:
        for p in path.glob(pattern):
            if p.is_file():
                p.unlink()
    for name in TRAIN_DIRS:
        if (path / name).is_dir():
            shutil.rmtree(path / name)


def _last_line(path: Path) -> tuple[list[str], list[str]] | None:
    """(header, last row) of a CSV file, reading only its start and end."""
    try:
        with path.open("rb") as f:
            header = f.readline().decode(errors="replace").strip().split(",")
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if len(lines) < 2 and (not lines or lines[-1].split(",") == header):
        return None
    row = lines[-1].split(",")
    if row == header or len(row) != len(header):
        return None
    return header, row


def _column(table: tuple[list[str], list[str]] | None, name: str) -> float | None:
    if table is None or name not in table[0]:
        return None
    try:
        return float(table[1][table[0].index(name)])
    except ValueError:
        return None


def read_progress(path: Path) -> tuple[int, float | None]:
    """(last step reached, last evaluation return) from the run folder's files."""
    ev = _last_line(path / "eval.csv")
    steps = [_column(_last_line(path / "train.csv"), "step"), _column(ev, "step"), read_run_json(path).get("step")]
    step = max((int(s) for s in steps if isinstance(s, (int, float)) and math.isfinite(s)), default=0)
    return step, _column(ev, "return_mean")
