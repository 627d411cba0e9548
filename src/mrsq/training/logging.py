"""CSV logs that are complete after every row (flushed), and metric averaging without host syncs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable

import torch


class CSVLog:
    """Append rows with fixed columns; each row is flushed so an interrupted run keeps every row."""

    def __init__(self, path: Path, columns: Iterable[str]) -> None:
        self.path, self.columns = Path(path), list(columns)
        self._file = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._file.flush()

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
    """Running sums of scalar tensors; reading them (``pop``) is the only host sync."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            if k in self._sums:
                self._sums[k] += v
            else:
                self._sums[k] = v.detach().clone().float()
            self._counts[k] = self._counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        if not self._sums:
            return {}
        keys = list(self._sums)
        values = torch.stack([self._sums[k] for k in keys]).cpu().tolist()
        out = {k: v / self._counts[k] for k, v in zip(keys, values)}
        self._sums.clear()
        self._counts.clear()
        return out
