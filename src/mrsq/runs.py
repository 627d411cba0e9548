"""Reading run folders back: what ``mrsq plot`` and ``mrsq compare`` work from.

A run folder holds ``spec.yaml``, ``run.json`` and ``eval.csv`` (:mod:`mrsq.training.loop`). A
run's label is the preset it was trained from (``run.json``'s ``preset``); for folders written
before that was recorded, the folder name without its ``_s<seed>...`` tail. A run of a sweep
(``OUT/<env>/<variant>/seed<k>/`` below a folder holding ``sweep.json``, :mod:`mrsq.sweep`) is
labelled with its variant: the preset plus its grid overrides.

A path with no ``eval.csv`` that holds run folders below it (a sweep's output folder, or any
folder of runs) stands for those run folders, in sorted order.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml


SWEEP_JSON = "sweep.json"  # mrsq.sweep writes it in a sweep's output folder


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


def read_run_json(folder: Path) -> dict:
    """A run folder's ``run.json`` as a dict; ``{}`` when missing, unreadable or not a mapping."""
    try:
        info = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


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
        label = sweep_label(path)
    if label is None:
        label = read_run_json(path).get("preset") or re.sub(r"_s\d+(_.*)?$", "", path.name) or path.name
    return Run(path, label, env, seed, columns)


def find_run_folders(path: Path) -> list[Path]:
    """Run folders (holding ``eval.csv``) at any depth below ``path``, sorted; not below a run folder."""
    found = []
    for root, dirs, files in os.walk(path):
        if "eval.csv" in files and Path(root) != Path(path):
            found.append(Path(root))
            dirs.clear()
        dirs.sort()
    return sorted(found)


def expand_paths(paths: list[Path]) -> list[tuple[Path, bool]]:
    """Each path as itself when it is a run folder, else the run folders below it: ``[(folder,
    found_below)]``. A path that is neither is kept, so :func:`load_run` names what is wrong."""
    out = []
    for p in map(Path, paths):
        below = [] if (p / "eval.csv").is_file() or not p.is_dir() else find_run_folders(p)
        out += [(f, True) for f in below] if below else [(p, False)]
    return out


def _sweep_root(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        if (parent / SWEEP_JSON).is_file():
            return parent
    return None


def sweep_label(path: Path) -> str | None:
    """The variant name of a sweep's run folder (``OUT/<env>/<variant>/seed<k>``): from the
    sweep's ``sweep.json``, else from the folder layout; None when ``path`` is not in a sweep."""
    root = _sweep_root(Path(path))
    if root is None:
        return None
    rel = Path(path).resolve().relative_to(root)
    try:
        info = json.loads((root / SWEEP_JSON).read_text())
        for run in info.get("runs", []):
            if run.get("folder") == rel.as_posix() and run.get("variant"):
                return str(run["variant"])
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    if len(rel.parts) == 3 and re.fullmatch(r"seed\d+", rel.parts[2]):
        return rel.parts[1]
    return None


def load_runs(paths: list[Path], labels: list[str] | None = None) -> list[Run]:
    expanded = expand_paths(paths)
    if labels:
        for p in map(Path, paths):
            below = [] if (p / "eval.csv").is_file() or not p.is_dir() else find_run_folders(p)
            if below:
                raise RunFolderError(f"--label: labels are per run folder, and {p} is a folder of "
                                     f"{len(below)} runs (their labels come from their presets); "
                                     "drop --label or give run folders")
        if len(labels) != len(paths):
            raise RunFolderError(f"--label given {len(labels)} times for {len(paths)} runs")
    runs = []
    for i, (p, below) in enumerate(expanded):
        if below and not _has_eval_rows(p):  # a run of a sweep still before its first evaluation
            print(f"mrsq: skipping {p}: no evaluation rows yet", file=sys.stderr)
            continue
        runs.append(load_run(p, labels[i] if labels else None))
    if not runs:
        raise RunFolderError(f"{', '.join(map(str, paths))}: no run has evaluation rows yet")
    return runs


def _has_eval_rows(path: Path) -> bool:
    try:
        with (path / "eval.csv").open() as f:
            return sum(1 for line in f if line.strip()) > 1
    except OSError:
        return False


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
