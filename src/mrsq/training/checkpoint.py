"""Checkpoints: state dicts + the resolved spec (YAML text) + a format version.

They load with ``torch.load(weights_only=True)``: no pickled callables, environments or pydantic
objects. Writes never destroy a good checkpoint:

* the new file is written to ``checkpoint.pt.tmp``, flushed and fsynced, and only then renamed;
* in a run folder (``keep_previous``) the checkpoint it replaces becomes ``checkpoint.prev.pt``,
  so a checkpoint that later proves unreadable (a disk that lied, a copy cut short) still has a
  good predecessor, which :func:`load_latest` falls back to with a one-line warning;
* a write that fails (disk full, quota, permissions) removes its temporary file and raises
  :class:`CheckpointWriteError` naming the file; the previous checkpoint is untouched;
* a stale ``.tmp`` left by a killed process is removed on the next write or resume.

``MRSQ_FAILPOINT`` (fault injection for the resume tests, see :func:`failpoint`) can kill the
process with SIGKILL at chosen points, as a scheduler or the OOM killer would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, wrong version)."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, ...); the previous one is intact."""


def failpoint(name: str, count: int) -> None:
    """SIGKILL this process if ``MRSQ_FAILPOINT`` is ``name:count`` (fault injection).

    Points: ``step:K`` (before environment step K), ``checkpoint:N`` (the N-th checkpoint write
    of this process, after its replay segment and half its file are written), ``rename:N`` (after
    the N-th checkpoint file is complete, before it replaces the previous one).
    """
    if os.environ.get("MRSQ_FAILPOINT") == f"{name}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(path: Path, *, spec_yaml: str, agent_state: dict, step: int, extra: dict | None = None,
                    resume: dict | None = None, keep_previous: bool = False, write_number: int = 0) -> None:
    """Write a checkpoint atomically (see the module docstring); ``resume`` carries what
    ``mrsq train --resume`` needs beyond the agent (loop, RNGs, replay bookkeeping)."""
    payload = {"format_version": FORMAT_VERSION, "spec": spec_yaml, "step": int(step),
               "agent": agent_state, "extra": extra or {}}
    if resume is not None:
        payload["resume"] = resume
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            if os.environ.get("MRSQ_FAILPOINT") == f"checkpoint:{write_number}":
                f.truncate(f.tell() // 2)  # killed half-way through the write
                f.flush()
                failpoint("checkpoint", write_number)
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        previous = f"the previous checkpoint {path} is intact" if path.exists() else "no checkpoint was written yet"
        raise CheckpointWriteError(f"cannot write checkpoint {tmp}: {exc.strerror or exc}; {previous}") from None
    failpoint("rename", write_number)
    if keep_previous and path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (POSIX: a rename is durable once its directory is fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        what = "an empty file" if not magic else "not a torch.save archive"
        raise CheckpointError(f"{path}: not an mrsq checkpoint ({what})")
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


def env_dims(payload: dict) -> tuple[int, int] | None:
    """``(obs_dim, action_dim)`` the checkpoint's agent was built for, when it records them."""
    extra = payload.get("extra") or {}
    if "obs_dim" in extra and "action_dim" in extra:
        return int(extra["obs_dim"]), int(extra["action_dim"])
    replay = (payload.get("resume") or {}).get("replay") or {}
    if "obs_dim" in replay and "action_dim" in replay:
        return int(replay["obs_dim"]), int(replay["action_dim"])
    return None


def remove_stale_tmp(folder: Path) -> None:
    """Delete a ``checkpoint.pt.tmp`` a killed write left behind (never a complete checkpoint)."""
    (Path(folder) / (CHECKPOINT + ".tmp")).unlink(missing_ok=True)


def candidates(folder: Path) -> list[Path]:
    """The run folder's checkpoints, newest first (those that exist)."""
    return [p for p in (Path(folder) / CHECKPOINT, Path(folder) / PREVIOUS) if p.is_file()]


def load_latest(folder: Path, validate=None, warn=print) -> tuple[dict, Path]:
    """The newest checkpoint of a run folder that loads (and passes ``validate(payload, path)``,
    which raises :class:`CheckpointError` to reject it). A rejected ``checkpoint.pt`` costs a
    one-line ``warn`` and is renamed ``checkpoint.pt.corrupt`` once ``checkpoint.prev.pt`` has
    loaded, so the next write cannot rotate it over the good one. No usable checkpoint:
    CheckpointError naming each one's problem (and nothing renamed)."""
    folder = Path(folder)
    remove_stale_tmp(folder)
    found = candidates(folder)
    if not found:
        raise CheckpointError(f"{folder}: no {CHECKPOINT} or {PREVIOUS} to resume from")
    errors = []
    for path in found:
        try:
            payload = load_checkpoint(path)
            if validate is not None:
                validate(payload, path)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        if errors and path.name != CHECKPOINT and (folder / CHECKPOINT).exists():
            # the rejected newest is kept aside, so the next write cannot rotate it over this one;
            # only once another has loaded (if none does, nothing is renamed: `--fresh-replay` may
            # still continue from the newest's weights)
            os.replace(folder / CHECKPOINT, folder / (CHECKPOINT + ".corrupt"))
            warn(f"{errors[0]}; kept as {CHECKPOINT}.corrupt, resuming from {PREVIOUS}")
        return payload, path
    raise CheckpointError(f"{folder}: no usable checkpoint ({'; '.join(errors)})")
