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

A pixel buffer (``frame_stack > 0``) stores its frames once here too: the rows hold the two frame
ids of each transition instead of observations (``obs_id``, ``next_id``), and
``<first>-<end>.frames.npy`` holds ``(id, frame)`` for the frames those transitions reference
(from the oldest frame of the first one's stack to the newest written), so a segment loads on its
own; consecutive segments share at most ``frame_stack - 1`` frames.

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
_SEGMENT = re.compile(r"^(\d{12})-(\d{12})(\.next|\.frames)?\.npy$")


class ReplayStoreError(ValueError):
    """A replay segment a checkpoint lists is missing or does not match (one-line message)."""


def _name(first: int, end: int, suffix: str = "") -> str:
    return f"{first:012d}-{end:012d}{suffix}.npy"


def _row_dtype(replay: LAPReplay) -> np.dtype:
    if replay.frame_stack:
        return np.dtype([("obs_id", np.int64), ("next_id", np.int64), ("action", np.float32, (replay._action_dim,)),
                         ("reward", np.float32), ("terminated", np.bool_)])
    return np.dtype([("obs", np.float32, (replay._obs_dim,)), ("action", np.float32, (replay._action_dim,)),
                     ("reward", np.float32), ("terminated", np.bool_)])


def _next_dtype(replay: LAPReplay) -> np.dtype:
    return np.dtype([("index", np.int64), ("next_obs", np.float32, (replay._obs_dim,))])


def _frame_dtype(replay: LAPReplay) -> np.dtype:
    return np.dtype([("id", np.int64), ("frame", np.uint8, (replay._frame_size,))])


def _companion(replay: LAPReplay) -> tuple[str, np.dtype]:
    """The file beside each segment's rows: frames (pixels) or the explicit next observations."""
    return (".frames", _frame_dtype(replay)) if replay.frame_stack else (".next", _next_dtype(replay))


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
    rows["action"] = replay._action[slots]
    rows["reward"] = replay._reward[slots]
    rows["terminated"] = replay._terminated[slots] > 0
    suffix, companion_dtype = _companion(replay)
    if replay.frame_stack:
        rows["obs_id"], rows["next_id"] = replay._obs_id[slots], replay._next_id[slots]
        ring = replay._num_frames_ring
        lo = max(int(rows["obs_id"][0]) - replay.frame_stack + 1, replay._num_frames - ring, 0)
        ids = np.arange(lo, replay._num_frames)
        extra = np.empty(len(ids), dtype=companion_dtype)
        extra["id"], extra["frame"] = ids, replay._frames[ids % ring]
    else:
        rows["obs"] = replay._obs[slots]
        next_obs = replay._next_obs[slots]
        # bitwise: is next_obs[t] the next row's obs? (viewed as integers, so NaNs and -0.0 compare exactly)
        explicit = np.ones(len(slots), dtype=bool)
        explicit[:-1] = (next_obs[:-1].view(np.uint32) != rows["obs"][1:].view(np.uint32)).any(axis=1)
        index = np.flatnonzero(explicit)
        extra = np.empty(len(index), dtype=companion_dtype)
        extra["index"] = index
        extra["next_obs"] = next_obs[index]
    _save_npy(folder / _name(first, end, suffix), extra)
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
    suffix, companion_dtype = _companion(replay)
    for first, last in sorted(segments):
        if last <= covered:
            continue
        if first > covered:
            break
        path = folder / _name(first, last)
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
            extra = np.load(folder / _name(first, last, suffix), mmap_mode="r" if replay.frame_stack else None,
                            allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ReplayStoreError(f"{path}: unreadable replay segment ({exc})") from None
        if rows.dtype != _row_dtype(replay) or len(rows) != last - first or extra.dtype != companion_dtype:
            raise ReplayStoreError(f"{path}: replay segment does not match its checkpoint "
                                   f"({len(rows)} rows of {rows.dtype}, expected {last - first})")
        lo = covered - first  # first row of this segment that is still needed
        hi = min(last, end) - first
        part = np.asarray(rows[lo:hi])
        slots = np.arange(first + lo, first + hi) % replay.capacity
        replay._action[slots] = part["action"]
        replay._reward[slots] = part["reward"]
        replay._terminated[slots] = part["terminated"]
        covered = first + hi
        if replay.frame_stack:
            replay._obs_id[slots], replay._next_id[slots] = part["obs_id"], part["next_id"]
            ring = replay._num_frames_ring
            ids = np.asarray(extra["id"])
            keep = np.flatnonzero((ids >= replay._num_frames - ring) & (ids < replay._num_frames))
            replay._frames[ids[keep] % ring] = extra["frame"][keep]
            continue
        replay._obs[slots] = part["obs"]
        next_obs = np.empty_like(part["obs"])
        next_obs[:-1] = part["obs"][1:]
        keep = (extra["index"] >= lo) & (extra["index"] < hi)
        next_obs[extra["index"][keep] - lo] = extra["next_obs"][keep]
        if len(part) and not (extra["index"] == hi - 1).any() and hi < last - first:
            next_obs[-1] = rows[hi]["obs"]  # the needed range ends inside the segment
        replay._next_obs[slots] = next_obs
    if covered < end:
        raise ReplayStoreError(f"{folder}: replay segments cover transitions up to {covered}, "
                               f"the checkpoint needs them up to {end}")


def check(folder: Path, segments: list[list[int]]) -> str | None:
    """Why ``segments`` cannot be loaded from ``folder`` (missing, unreadable, wrong length), or
    None. Reads only the ``.npy`` headers (memory-mapped)."""
    for first, end in segments:
        frames = folder / _name(first, end, ".frames")
        try:
            rows = np.load(folder / _name(first, end), mmap_mode="r", allow_pickle=False)
            np.load(frames if frames.exists() else folder / _name(first, end, ".next"), mmap_mode="r",
                    allow_pickle=False)
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
