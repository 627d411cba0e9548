"""Checkpoints: state dicts + the resolved spec (YAML text) + a format version.

They load with ``torch.load(weights_only=True)``: no pickled callables, environments or pydantic
objects. Writes are atomic (a temporary file renamed over the old one), so an interrupted save
never destroys the previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, wrong version)."""


def save_checkpoint(path: Path, *, spec_yaml: str, agent_state: dict, step: int, extra: dict | None = None) -> None:
    payload = {"format_version": FORMAT_VERSION, "spec": spec_yaml, "step": int(step),
               "agent": agent_state, "extra": extra or {}}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable mrsq checkpoint ({first[:200]})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not an mrsq checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload['format_version']} is not supported "
                              f"(this mrsq reads format {FORMAT_VERSION})")
    missing = {"spec", "step", "agent"} - set(payload)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(sorted(missing))}")
    return payload
