"""The replay buffer on disk, beside a run's checkpoint: append-only segments, memory-mapped on load.

A checkpoint must carry the replay contents for an exact resume, and at a million transitions
they are hundreds of MB, so rewriting them at every checkpoint would dominate it. Instead each
checkpoint writes one *segment*: the transitions added since the previous checkpoint, in the
order they were added (transition ``t`` lives in slot ``t % capacity``). The checkpoint lists the
segments it needs (those overlapping its last ``capacity`` transitions); the small, mutable
bookkeeping (priorities, validity bits, counters, the sampling RNG) is in the checkpoint itself.

Layout of ``<run>/replay/``:

* ``<first>-<end>.npy``: a structured array, one row per transition ``first <= t < end``:
  ``obs [obs_dim]``, ``action [action_dim]``, ``reward``, ``terminated`` (bool).
* ``<first>-<end>.next.npy``: ``(index, next_obs)`` only for rows whose ``next_obs`` is not the
  next row's ``obs`` (episode ends, the segment's last row, or a caller that added unrelated
  transitions). Within an episode ``next_obs[t] == obs[t + 1]``, so this halves the observation
  bytes, which dominate a row. The check is bitwise, so storage is exact whatever was added.

Segments are immutable once written (temporary name, fsync, rename), so the previous checkpoint
stays loadable while the next one is being written; files no kept checkpoint lists are deleted
only after the new checkpoint is in place (:func:`collect_garbage`).

numpy's ``.npy`` format is used as is: it memory-maps, stores structured rows with no per-row
overhead, and needs nothing beyond numpy to inspect.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mrsq.replay.lap import LAPReplay

FOLDER = "replay"
_SEGMENT = re.compile(r"^(\d{12})-(\d{12})(\.next)?\.npy$")


class ReplayStoreError(ValueError):
    """A replay segment a checkpoint lists is missing or does not match (one-line message)."""


def _name(first: int, end: int, suffix: str = "") -> str:
    return f"{first:012d}-{end:012d}{suffix}.npy"


def _row_dtype(replay: LAPReplay) -> np.dtype:
    return np.dtype([("obs", np.float32, (replay._obs_dim,)), ("action", np.float32, (replay._action_dim,)),
                     ("reward", np.float32), ("terminated", np.bool_)])


def _next_dtype(replay: LAPReplay) -> np.dtype:
    return np.dtype([("index", np.int64), ("next_obs", np.float32, (replay._obs_dim,))])


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` durably: temporary name, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_segment(replay: LAPReplay, folder: Path, first: int) -> list[int] | None:
    """Write transitions ``first .. replay.num_added - 1`` (those still stored) as one segment.

    Returns ``[first, end]`` for the checkpoint's list, or None when nothing was added. Reads the
    ring through the replay's private arrays: the store is the replay's own on-disk format.
    """
    end = replay.num_added
    first = max(first, end - replay.capacity)  # older rows were overwritten: the checkpoint won't need them
    if end <= first:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    slots = np.arange(first, end) % replay.capacity
    rows = np.empty(len(slots), dtype=_row_dtype(replay))
    rows["obs"] = replay._obs[slots]
    rows["action"] = replay._action[slots]
    rows["reward"] = replay._reward[slots]
    rows["terminated"] = replay._terminated[slots] > 0
    next_obs = replay._next_obs[slots]
    # bitwise: is next_obs[t] the next row's obs? (viewed as integers, so NaNs and -0.0 compare exactly)
    explicit = np.ones(len(slots), dtype=bool)
    explicit[:-1] = (next_obs[:-1].view(np.uint32) != rows["obs"][1:].view(np.uint32)).any(axis=1)
    index = np.flatnonzero(explicit)
    extra = np.empty(len(index), dtype=_next_dtype(replay))
    extra["index"] = index
    extra["next_obs"] = next_obs[index]
    _save_npy(folder / _name(first, end, ".next"), extra)
    _save_npy(folder / _name(first, end), rows)  # the main file last: its presence marks the segment complete
    return [first, end]


def needed(segments: list[list[int]], num_added: int, capacity: int) -> list[list[int]]:
    """The segments that still hold transitions a buffer with ``num_added`` and ``capacity`` keeps."""
    oldest = num_added - capacity
    return [s for s in segments if s[1] > oldest]


def load(replay: LAPReplay, folder: Path, segments: list[list[int]]) -> None:
    """Fill ``replay``'s storage from ``segments`` (its bookkeeping must already be loaded: this
    fills transitions ``max(0, num_added - capacity) .. num_added - 1``). Files are memory-mapped,
    so only the rows still needed are read."""
    end = replay.num_added
    start = max(0, end - replay.capacity)
    covered = start
    for first, last in sorted(segments):
        if last <= covered:
            continue
        if first > covered:
            break
        path = folder / _name(first, last)
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
            extra = np.load(folder / _name(first, last, ".next"), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ReplayStoreError(f"{path}: unreadable replay segment ({exc})") from None
        if rows.dtype != _row_dtype(replay) or len(rows) != last - first or extra.dtype != _next_dtype(replay):
            raise ReplayStoreError(f"{path}: replay segment does not match its checkpoint "
                                   f"({len(rows)} rows of {rows.dtype}, expected {last - first})")
        lo = covered - first  # first row of this segment that is still needed
        hi = min(last, end) - first
        part = np.asarray(rows[lo:hi])
        slots = np.arange(first + lo, first + hi) % replay.capacity
        replay._obs[slots] = part["obs"]
        replay._action[slots] = part["action"]
        replay._reward[slots] = part["reward"]
        replay._terminated[slots] = part["terminated"]
        next_obs = np.empty_like(part["obs"])
        next_obs[:-1] = part["obs"][1:]
        keep = (extra["index"] >= lo) & (extra["index"] < hi)
        next_obs[extra["index"][keep] - lo] = extra["next_obs"][keep]
        if len(part) and not (extra["index"] == hi - 1).any() and hi < last - first:
            next_obs[-1] = rows[hi]["obs"]  # the needed range ends inside the segment
        replay._next_obs[slots] = next_obs
        covered = first + hi
    if covered < end:
        raise ReplayStoreError(f"{folder}: replay segments cover transitions up to {covered}, "
                               f"the checkpoint needs them up to {end}")


def check(folder: Path, segments: list[list[int]]) -> str | None:
    """Why ``segments`` cannot be loaded from ``folder`` (missing, unreadable, wrong length), or
    None. Reads only the ``.npy`` headers (memory-mapped)."""
    for first, end in segments:
        try:
            rows = np.load(folder / _name(first, end), mmap_mode="r", allow_pickle=False)
            np.load(folder / _name(first, end, ".next"), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            return f"its replay segment {first}-{end} is unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        if len(rows) != end - first:
            return f"its replay segment {first}-{end} has {len(rows)} rows"
    return None


def collect_garbage(folder: Path, keep: list[list[list[int]]]) -> None:
    """Delete segment files (and stale ``.tmp`` files) that none of the ``keep`` lists names."""
    if not folder.is_dir():
        return
    kept = {(a, b) for segments in keep for a, b in segments}
    for path in folder.iterdir():
        match = _SEGMENT.match(path.name)
        stale_tmp = path.name.endswith(".npy.tmp")
        if stale_tmp or (match and (int(match[1]), int(match[2])) not in kept):
            path.unlink(missing_ok=True)


def disk_bytes(folder: Path) -> int:
    """Bytes of the segment files in ``folder``."""
    return sum(p.stat().st_size for p in folder.glob("*.npy")) if folder.is_dir() else 0
