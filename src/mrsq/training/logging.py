"""CSV logs that are complete after every row (flushed), and metric averaging without host syncs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable

import torch


class CSVLog:
    """Append rows with fixed columns (``\n`` line ends); each row is flushed so an interrupted run
    keeps every row.

    ``resume_at=K`` continues an existing file: rows with ``step > K`` (written after the
    checkpoint being resumed) are dropped first, so a resumed run never duplicates a row. The
    shortened file replaces the old one atomically."""

    def __init__(self, path: Path, columns: Iterable[str], resume_at: int | None = None) -> None:
        self.path, self.columns = Path(path), list(columns)
        resuming = resume_at is not None and self.path.is_file()
        if resuming:
            self._truncate_after(resume_at)
        self._file = self.path.open("a" if resuming else "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore",
                                      lineterminator="\n")
        if not resuming:
            self._writer.writeheader()
            self._file.flush()

    def _truncate_after(self, step: int) -> None:
        with self.path.open(newline="") as f:
            lines = f.read().splitlines(keepends=True)
        kept = lines[:1]
        for line in lines[1:]:
            if not line.endswith("\n"):
                break  # a row cut short by a kill: never complete, never kept
            head = line.split(",", 1)[0]
            try:
                if int(float(head)) > step:
                    break
            except ValueError:
                break
            kept.append(line)
        if not kept or kept[0].rstrip("\r\n").split(",") != self.columns:
            kept = [",".join(self.columns) + "\n"] + kept[1:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept), newline="")
        tmp.replace(self.path)

    def write(self, row: dict) -> None:
        self._writer.writerow({k: _fmt(row.get(k, "")) for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


class MetricMeans:
    """Running sums of scalar tensors, and the first step each went non-finite, kept on the
    device: reading them (``pop``, ``first_nonfinite``) is the only host sync.

    An update returns the same keys most of the time (a delayed policy update adds some), so
    sums are kept per key set: one ``stack``, one add and one ``where`` per update, whatever the
    number of metrics."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], list] = {}  # keys -> [sums, count, first non-finite step (-1: none)]

    def add(self, metrics: dict[str, torch.Tensor], step: int = 0) -> None:
        if not metrics:
            return
        keys = tuple(metrics)
        values = torch.stack([metrics[k].detach().float().reshape(()) for k in keys])
        group = self._groups.get(keys)
        if group is None:
            group = self._groups[keys] = [torch.zeros_like(values), 0,
                                          torch.full(values.shape, -1, dtype=torch.int64, device=values.device)]
        group[0] += values
        group[1] += 1
        group[2].masked_fill_((group[2] < 0) & ~torch.isfinite(values), step)

    def first_nonfinite(self) -> tuple[str, int] | None:
        """``(metric, step)`` of the earliest non-finite value added since the last ``pop``."""
        found = [(s, k) for keys, g in self._groups.items() for k, s in zip(keys, g[2].tolist()) if s >= 0]
        return (min(found)[1], min(found)[0]) if found else None

    def pop(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for keys, (total, count, _) in self._groups.items():
            for k, v in zip(keys, total.tolist()):
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + count
        self._groups.clear()
        return {k: sums[k] / counts[k] for k in sums}

    def state_dict(self) -> dict:
        return {"groups": [{"keys": list(keys), "sums": g[0].cpu(), "count": g[1], "first_nonfinite": g[2].cpu()}
                           for keys, g in self._groups.items()]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self._groups = {tuple(g["keys"]): [g["sums"].to(device), int(g["count"]), g["first_nonfinite"].to(device)]
                        for g in state["groups"]}
