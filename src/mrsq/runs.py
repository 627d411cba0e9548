"""Reading run folders back: what ``mrsq plot`` and ``mrsq compare`` work from.

A run folder holds ``spec.yaml``, ``run.json`` and ``eval.csv`` (:mod:`mrsq.training.loop`). A
run's label is the preset it was trained from (``run.json``'s ``preset``); for folders written
before that was recorded, the folder name without its ``_s<seed>...`` tail.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml


class RunFolderError(ValueError):
    """A path given as a run folder is not one (one-line message)."""


@dataclass
class Run:
    path: Path
    label: str
    env: str
    seed: int
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # eval.csv, one array per column

    @property
    def steps(self) -> np.ndarray:
        return self.columns["step"]

    def has(self, column: str) -> bool:
        values = self.columns.get(column)
        return values is not None and bool(np.isfinite(values).any())

    def at(self, column: str, steps: np.ndarray) -> np.ndarray:
        """``column`` at ``steps`` (each must be an evaluated step)."""
        index = {int(s): i for i, s in enumerate(self.steps)}
        return np.array([self.columns[column][index[int(s)]] for s in steps])


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def load_run(path: Path, label: str | None = None) -> Run:
    path = Path(path)
    eval_csv = path / "eval.csv"
    if not eval_csv.is_file():
        raise RunFolderError(f"{path}: no eval.csv (is it a run folder?)")
    with eval_csv.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RunFolderError(f"{eval_csv}: no evaluation rows yet")
    columns = {k: np.array([_float(r.get(k) or "") for r in rows]) for k in rows[0]}
    env, seed = "?", 0
    spec_file = path / "spec.yaml"
    if spec_file.is_file():
        try:
            train = (yaml.safe_load(spec_file.read_text()) or {}).get("train", {})
            env, seed = str(train.get("env", env)), int(train.get("seed", seed))
        except (yaml.YAMLError, AttributeError, TypeError, ValueError):
            raise RunFolderError(f"{spec_file}: unreadable spec") from None
    if label is None:
        info = {}
        if (path / "run.json").is_file():
            try:
                info = json.loads((path / "run.json").read_text())
            except json.JSONDecodeError:
                info = {}
        label = info.get("preset") or re.sub(r"_s\d+(_.*)?$", "", path.name) or path.name
    return Run(path, label, env, seed, columns)


def load_runs(paths: list[Path], labels: list[str] | None = None) -> list[Run]:
    if labels and len(labels) != len(paths):
        raise RunFolderError(f"--label given {len(labels)} times for {len(paths)} runs")
    return [load_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]


def group(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{env: {label: [runs over seeds]}}`` in first-seen order."""
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        out[r.env][r.label].append(r)
    return {e: dict(v) for e, v in out.items()}


def common_steps(runs: list[Run]) -> np.ndarray:
    """Evaluation steps every run in ``runs`` reached (runs of one group may have stopped at
    different points)."""
    steps = set(runs[0].steps.astype(int).tolist())
    for r in runs[1:]:
        steps &= set(r.steps.astype(int).tolist())
    return np.array(sorted(steps))
