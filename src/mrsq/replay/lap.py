"""LAP prioritized replay of fixed-length subtrajectories, as used by MR.Q.

Storage is a circular buffer of preallocated float32 numpy arrays (cheap per-step ``add``);
sampling works on ``torch.from_numpy`` views of the same memory, so no copies are made until
windows are gathered.

Shapes used below: ``C`` capacity, ``N`` number of stored transitions (``size``), ``B`` batch
size, ``H`` window length (``horizon``).

Validity of a start slot ``s`` (a window ``s .. s+H-1``, slots taken modulo ``C``):

* ``s`` becomes valid once transition ``s+H`` of the same episode has been added, i.e. the whole
  window lies inside one episode and the episode continues after it;
* when an episode ends by termination, its last ``min(len, H)`` starts become valid as well:
  their windows run past the terminal transition into whatever slots follow (later data or the
  zero-initialised storage), which the learner masks with cumulative not-done flags;
* when an episode ends by truncation only, those last starts stay invalid;
* writing a slot invalidates the start stored there. Because ``C > H``, no other start that is
  valid can have a window which mixes the overwritten data with the new data (see ``add``).

Priorities (LAP): a start is drawn with probability proportional to ``priority * valid``.
``update_priority`` stores ``max(td_error, min_priority) ** alpha``; new transitions get the
running maximum priority. The maximum stays a 0-d tensor, so no host sync is needed per step.

Pixel observations (``frame_stack = k > 0``): frames are stored once, in a ring of uint8 frames
(``F`` slots, a little more than ``C``), and each transition slot holds two frame ids: the newest
frame of its observation's stack and of its next observation's (a stack is the ``k`` consecutive
ids ending there). Within an episode an observation is the previous next observation, and the
next observation shares all but one frame with it, so a step writes one frame; an episode's first
observation writes its ``k`` frames. Each ``add`` checks this bitwise against the stored frames
and writes whatever differs, so storage is exact for any input (MR.Q's buffer.py keeps per-slot
index lists of the last ``history`` frames in the transitions' own ring instead; separate frame
ids keep transition slots = transitions, which LAP's validity rules below rely on). When the
frame ring wraps faster than the transition ring (episodes shorter than about ``100 k`` steps)
the oldest transitions lose their frames first; their starts are invalidated, in order.

Device storage (``device="cuda"``): ``add`` still writes the host arrays (a few numpy stores per
step); before each draw the rows written since the last one (plus the ``H`` slots before them,
whose validity an ``add`` may change) are copied to a device mirror in one transfer, and
priorities, the sampling cumsum, the draw, the gather and ``update_priority`` all stay on the
device, so a training step makes no host synchronisation for the replay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from mrsq.runtime import host_to_device

_CONFIG_KEYS = ("obs_dim", "action_dim", "capacity", "horizon")
_ARRAY_KEYS = ("obs", "action", "reward", "next_obs", "terminated", "valid")
_FRAME_ARRAY_KEYS = ("obs_id", "action", "reward", "next_id", "terminated", "valid")
_BOOKKEEPING_KEYS = (
    "priority", "max_priority", "num_added", "episode_length", "env_terminates", "rng_state"
)
_FRAME_BOOKKEEPING_KEYS = ("frame_stack", "num_frames", "oldest_live")


def frame_ring_size(capacity: int, frame_stack: int, horizon: int) -> int:
    """Frame slots kept for ``capacity`` transitions: one per transition, 1% more for the ``k``
    frames of each episode's first observation (DMC's 500-step episodes need 0.6% at ``k = 3``),
    and never fewer than the frames of a few windows."""
    return capacity + capacity // 100 + 2 * frame_stack * (horizon + 1)


@dataclass(frozen=True)
class ReplayBatch:
    """``B`` subtrajectory windows of ``H`` consecutive steps, float32 except ``indices`` and
    pixel observations (uint8).

    Attributes:
        obs: ``[B, H, obs_dim]``.
        action: ``[B, H, action_dim]``.
        reward: ``[B, H]``.
        next_obs: ``[B, H, obs_dim]``.
        terminated: ``[B, H]``, 1.0 where the step ended its episode by termination. Steps after
            the first terminal step belong to unrelated data and must be masked by the learner.
        indices: ``[B]`` int64 start slots, to pass back to ``LAPReplay.update_priority``.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    indices: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ReplayBatch:
        """Return a copy with every tensor moved to ``device`` (itself if already there). From
        host memory to a GPU the copies go through pinned memory without blocking (see
        :func:`mrsq.runtime.host_to_device`); ``non_blocking`` is kept for callers that pass it."""
        device = torch.device(device)
        if all(_same_device(getattr(self, f.name).device, device) for f in fields(self)):
            return self
        moved = {f.name: host_to_device(getattr(self, f.name), device) for f in fields(self)}
        return ReplayBatch(**moved)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index == b.index or a.index is None or b.index is None)


def _require_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` if it is an int (not bool) ``>= minimum``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _require_float(name: str, value: Any, minimum: float, strict: bool) -> float:
    """Return ``value`` as a finite float ``> minimum`` (strict) or ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    too_small = value <= minimum if strict else value < minimum
    if not math.isfinite(value) or too_small:
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {relation} {minimum}, got {value}")
    return value


class LAPReplay:
    """Circular replay buffer sampling subtrajectory windows with LAP priorities.

    Args:
        obs_dim: length of one observation vector.
        action_dim: length of one action vector.
        capacity: number of transitions kept; the oldest are overwritten. Must exceed ``horizon``.
        horizon: window length ``H`` returned by ``sample`` (MR.Q: max(encoder 5, Q 3) = 5).
        alpha: priority exponent.
        min_priority: floor applied to the raw error before the exponent.
        prioritized: if False, starts are drawn uniformly among the valid ones.
        seed: seed of the buffer's own ``torch.Generator``; None seeds it non-deterministically.
        device: where priorities live and batches are drawn and gathered (host arrays are
            mirrored there when it is not the CPU; see the module docstring).
        _mirror: use the device-mirror code path even on the CPU (for tests of that path).
        frame_stack: 0 for vector observations (float32 rows); ``k > 0`` for pixels: uint8
            observations of ``k`` frames of ``obs_dim // k`` values each, stored once in a frame
            ring (see the module docstring).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        capacity: int = 1_000_000,
        horizon: int = 5,
        alpha: float = 0.4,
        min_priority: float = 1.0,
        prioritized: bool = True,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        _mirror: bool = False,
        frame_stack: int = 0,
    ) -> None:
        self._obs_dim = _require_int("obs_dim", obs_dim, 1)
        self._frame_stack = _require_int("frame_stack", frame_stack, 0)
        if self._frame_stack and self._obs_dim % self._frame_stack:
            raise ValueError(f"obs_dim ({obs_dim}) is not a whole number of frames (frame_stack {frame_stack})")
        self._frame_size = self._obs_dim // max(self._frame_stack, 1)
        self._array_keys = _FRAME_ARRAY_KEYS if self._frame_stack else _ARRAY_KEYS
        self._action_dim = _require_int("action_dim", action_dim, 1)
        self._horizon = _require_int("horizon", horizon, 1)
        self._capacity = _require_int("capacity", capacity, 1)
        if self._capacity <= self._horizon:
            raise ValueError(f"capacity ({capacity}) must be larger than horizon ({horizon})")
        self._alpha = _require_float("alpha", alpha, 0.0, strict=False)
        self._min_priority = _require_float("min_priority", min_priority, 0.0, strict=True)
        if not isinstance(prioritized, (bool, np.bool_)):
            raise ValueError(f"prioritized must be a bool, got {type(prioritized).__name__}")
        self._prioritized = bool(prioritized)
        if seed is not None:
            seed = _require_int("seed", seed, 0)

        self._device = torch.device(device)
        self._mirrored = self._device.type != "cpu" or bool(_mirror)
        self._allocate_storage()
        self._generator = torch.Generator(device=self._device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)

    @staticmethod
    def storage_bytes(obs_dim: int, action_dim: int, capacity: int, frame_stack: int = 0, horizon: int = 5) -> int:
        """Bytes of one copy of the storage: float32 rows, validity and priority; pixels
        (``frame_stack > 0``): the uint8 frame ring and two int64 frame ids per transition."""
        if not frame_stack:
            return 4 * capacity * (2 * obs_dim + action_dim + 4)
        frames = frame_ring_size(capacity, frame_stack, horizon) * (obs_dim // frame_stack)
        return frames + capacity * (16 + 4 * (action_dim + 4))

    @property
    def frame_stack(self) -> int:
        """Frames per observation (0: vector observations)."""
        return self._frame_stack

    @property
    def nbytes(self) -> int:
        """Bytes this buffer's host storage holds (the arrays allocated for ``capacity``)."""
        arrays = [getattr(self, f"_{key}") for key in self._array_keys]
        if self._frame_stack:
            arrays.append(self._frames)
        return sum(a.nbytes for a in arrays) + self._priority.numel() * 4

    def _allocate_storage(self) -> None:
        """Create zeroed numpy arrays (``[C, ...]``), their torch views and the bookkeeping."""
        c = self._capacity
        if self._frame_stack:
            self._num_frames_ring = frame_ring_size(c, self._frame_stack, self._horizon)
            self._frames = np.zeros((self._num_frames_ring, self._frame_size), dtype=np.uint8)
            self._obs_id = np.zeros(c, dtype=np.int64)
            self._next_id = np.zeros(c, dtype=np.int64)
            host = torch.from_numpy(self._frames)
            self._frames_t = torch.zeros_like(host, device=self._device) if self._mirrored else host
            self._num_frames = 0  # frames ever written; frame id f lives in slot f % F
            self._frames_synced = 0
            self._oldest_live = 0  # transitions before this one lost a frame to the ring
            self._oldest_live_synced = 0
            self._stack_offsets = torch.arange(1 - self._frame_stack, 1, device=self._device)
        else:
            self._obs = np.zeros((c, self._obs_dim), dtype=np.float32)
            self._next_obs = np.zeros((c, self._obs_dim), dtype=np.float32)
        self._action = np.zeros((c, self._action_dim), dtype=np.float32)
        self._reward = np.zeros(c, dtype=np.float32)
        self._terminated = np.zeros(c, dtype=np.float32)
        self._valid = np.zeros(c, dtype=np.float32)
        # On the CPU: views sharing memory with the arrays above (only ever written in place).
        # Elsewhere: device copies, brought up to date by _sync_device before each read.
        for key in self._array_keys:
            host = torch.from_numpy(getattr(self, f"_{key}"))
            setattr(self, f"_{key}_t", torch.zeros_like(host, device=self._device) if self._mirrored else host)
        self._synced = 0  # transitions (num_added) already mirrored to the device

        self._priority = torch.zeros(c, dtype=torch.float32, device=self._device)
        self._max_priority = torch.tensor(self._min_priority**self._alpha, dtype=torch.float32, device=self._device)
        self._num_added = 0  # transitions ever added; the next slot is num_added % C
        self._num_prioritized = 0  # transitions whose slot already holds its initial priority
        self._episode_length = 0  # transitions of the current (unfinished) episode
        self._env_terminates = False
        self._num_valid = 0  # valid start slots, kept by add (sampling never scans the flags)

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """Maximum number of stored transitions ``C``."""
        return self._capacity

    @property
    def horizon(self) -> int:
        """Default window length ``H``."""
        return self._horizon

    @property
    def size(self) -> int:
        """Number of stored transitions ``N`` (at most ``capacity``)."""
        return min(self._num_added, self._capacity)

    @property
    def num_added(self) -> int:
        """Transitions ever added (``size`` stops growing at ``capacity``; this does not)."""
        return self._num_added

    @property
    def num_valid(self) -> int:
        """Number of start slots that can currently be sampled (a running count)."""
        return self._num_valid

    @property
    def env_terminates(self) -> bool:
        """Whether any terminated transition has ever been added."""
        return self._env_terminates

    @property
    def prioritized(self) -> bool:
        """Whether sampling follows priorities (else uniform over valid starts)."""
        return self._prioritized

    @property
    def device(self) -> torch.device:
        """Where priorities live and sampled batches are returned."""
        return self._device

    @property
    def max_priority(self) -> torch.Tensor:
        """0-d float32 tensor: the priority given to newly added transitions."""
        return self._max_priority

    @property
    def priorities(self) -> torch.Tensor:
        """Copy of the priorities of the stored slots, ``[N]`` float32 (validity not applied)."""
        self._assign_new_priorities()
        return self._priority[: self.size].clone()

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------ adding

    def add(
        self,
        obs: Any,
        action: Any,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Store one transition: ``obs``/``next_obs`` ``[obs_dim]``, ``action`` ``[action_dim]``.

        Only numpy writes and Python integer bookkeeping happen here; the new slot's priority is
        assigned lazily (see ``_assign_new_priorities``).
        """
        slot = self._num_added % self._capacity
        if self._frame_stack:
            self._add_frames(slot, obs, next_obs)
        else:
            self._obs[slot] = obs
            self._next_obs[slot] = next_obs
        self._action[slot] = action
        self._reward[slot] = reward
        self._terminated[slot] = bool(terminated)
        # The start stored in this slot is new and incomplete. Starts whose window covers this slot
        # are slot-H+1 .. slot-1, which hold the H-1 previous transitions (C > H): they are either
        # still incomplete (invalid) or end in a termination, so their windows stay consistent.
        self._num_valid -= int(self._valid[slot])
        self._valid[slot] = 0.0
        self._num_added += 1
        self._episode_length += 1
        if self._episode_length > self._horizon:
            # Negative indices wrap, which is exactly "modulo C" because H < C.
            self._num_valid += 1 - int(self._valid[slot - self._horizon])
            self._valid[slot - self._horizon] = 1.0
        if terminated:
            self._env_terminates = True
            self._validate_episode_tail(slot)
            self._episode_length = 0
        elif truncated:
            self._episode_length = 0

    # ------------------------------------------------------------------ frames (pixels)

    def _stack_ids(self, newest: int) -> np.ndarray:
        return np.arange(newest - self._frame_stack + 1, newest + 1) % self._num_frames_ring

    def _write_frames(self, frames: np.ndarray) -> int:
        """Append ``frames [n, frame_size]`` to the ring -> the id of the last; transitions that
        referenced the frames overwritten lose their starts (oldest first)."""
        n = len(frames)
        self._frames[np.arange(self._num_frames, self._num_frames + n) % self._num_frames_ring] = frames
        self._num_frames += n
        lost = self._num_frames - self._num_frames_ring  # frame ids below this are gone
        oldest = max(self._oldest_live, self._num_added - self._capacity)
        while oldest < self._num_added and self._obs_id[oldest % self._capacity] - self._frame_stack < lost - 1:
            slot = oldest % self._capacity
            self._num_valid -= int(self._valid[slot])
            self._valid[slot] = 0.0
            oldest += 1
        self._oldest_live = oldest
        return self._num_frames - 1

    def _add_frames(self, slot: int, obs: Any, next_obs: Any) -> None:
        """Frame ids of a transition, writing only the frames not stored already."""
        k, size = self._frame_stack, self._frame_size
        obs = np.asarray(obs).reshape(k, size)
        next_obs = np.asarray(next_obs).reshape(k, size)
        previous = self._next_id[(slot - 1) % self._capacity]
        continues = (self._episode_length > 0 and self._num_frames > 0
                     and np.array_equal(self._frames[self._stack_ids(previous)], obs))
        obs_id = previous if continues else self._write_frames(obs)
        if obs_id == self._num_frames - 1 and np.array_equal(next_obs[:-1], obs[1:]):
            next_id = self._write_frames(next_obs[-1:])  # the usual step: one new frame
        else:
            next_id = self._write_frames(next_obs)
        self._obs_id[slot], self._next_id[slot] = obs_id, next_id

    def _validate_episode_tail(self, last_slot: int) -> None:
        """Mark the last ``min(episode_length, H)`` starts, ending at ``last_slot``, as valid."""
        count = min(self._episode_length, self._horizon)
        tail = np.arange(last_slot - count + 1, last_slot + 1)
        self._num_valid += count - int(np.count_nonzero(self._valid[tail]))
        self._valid[tail] = 1.0

    def _sync_device(self) -> None:
        """Mirror the rows written since the last sync (and the ``H`` slots before them, whose
        ``valid`` flags an ``add`` may have changed) to the device, in one transfer per array."""
        if not self._mirrored or self._synced == self._num_added:
            return
        c = self._capacity
        start = max(self._synced - self._horizon, self._num_added - c, 0)
        if self._frame_stack:
            # starts invalidated by lost frames since the last sync: from the oldest live then
            start = max(min(start, self._oldest_live_synced), self._num_added - c, 0)
            self._oldest_live_synced = self._oldest_live
            self._sync_frames()
        slots = np.arange(start, self._num_added) % c
        index = torch.arange(start, self._num_added, device=self._device) % c  # made on the device: no sync
        for key in self._array_keys:
            # a fancy-indexed numpy temporary is pageable memory: pinned before the async copy
            rows = host_to_device(torch.from_numpy(getattr(self, f"_{key}")[slots]), self._device)
            getattr(self, f"_{key}_t").index_copy_(0, index, rows)
        self._synced = self._num_added

    def _sync_frames(self) -> None:
        f = self._num_frames_ring
        first = max(self._frames_synced, self._num_frames - f)
        slots = np.arange(first, self._num_frames) % f
        index = torch.arange(first, self._num_frames, device=self._device) % f
        self._frames_t.index_copy_(0, index, host_to_device(torch.from_numpy(self._frames[slots]), self._device))
        self._frames_synced = self._num_frames

    def _assign_new_priorities(self) -> None:
        """Give every slot written since the last call the current max priority.

        Doing this in one vectorised fill before each read keeps ``add`` free of torch calls. In
        the usual loop (add, sample, update_priority) the max cannot change between an ``add`` and
        the next fill, so this equals assigning the max inside ``add``.
        """
        pending = self._num_added - self._num_prioritized
        if pending == 0:
            return
        first = self._num_prioritized % self._capacity
        self._num_prioritized = self._num_added
        if pending >= self._capacity:
            self._priority.fill_(self._max_priority)
            return
        end = first + pending
        self._priority[first : min(end, self._capacity)].fill_(self._max_priority)
        if end > self._capacity:
            self._priority[: end - self._capacity].fill_(self._max_priority)

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, horizon: int | None = None) -> ReplayBatch:
        """Draw ``batch_size`` windows of ``horizon`` steps (default ``self.horizon``).

        Returns a ``ReplayBatch`` with ``[B, horizon, ...]`` tensors (CPU, float32) and the ``[B]``
        start slots in ``indices``.
        """
        batch_size = _require_int("batch_size", batch_size, 1)
        horizon = self._horizon if horizon is None else _require_int("horizon", horizon, 1)
        if horizon > self._horizon:
            raise ValueError(
                f"horizon ({horizon}) cannot exceed the buffer horizon ({self._horizon})"
            )
        starts = self._draw_starts(batch_size)
        return self._gather(starts, horizon)

    def _sampling_weights(self) -> torch.Tensor:
        """Unnormalised probability of each stored start slot, ``[N]`` float32."""
        self._sync_device()
        valid = self._valid_t[: self.size]
        if not self._prioritized:
            return valid
        self._assign_new_priorities()
        return self._priority[: self.size] * valid

    def _draw_starts(self, batch_size: int) -> torch.Tensor:
        """Draw ``[B]`` int64 start slots proportionally to ``_sampling_weights``.

        Inverse-CDF sampling: with ``u`` uniform in ``[0, total)``, the first slot whose cumulative
        weight exceeds ``u`` is returned, so a zero-weight slot (equal cumsum to its left
        neighbour) can never be chosen. The cumsum is float64 so a million float32 weights keep
        their relative sizes.
        """
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        cumsum = torch.cumsum(self._sampling_weights(), dim=0, dtype=torch.float64)
        total = cumsum[-1]
        # weights are positive exactly where valid: the running count says whether any start is
        # (no scan of the flags, no device sync); on the CPU a non-finite total is also caught
        empty = self._num_valid == 0
        if not empty and not self._mirrored and not bool(total > 0):
            raise RuntimeError("replay priorities are not finite (update_priority got a non-finite TD error)")
        if empty:
            raise RuntimeError(
                "no valid start index yet: a start needs `horizon` later transitions of its "
                "episode, or a termination within `horizon` steps"
            )
        u = torch.rand(batch_size, dtype=torch.float64, generator=self._generator, device=self._device) * total
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # keep u < total
        starts = torch.searchsorted(cumsum, u, right=True)
        return starts.clamp_(max=self.size - 1)

    def _gather(self, starts: torch.Tensor, horizon: int) -> ReplayBatch:
        """Collect the windows starting at ``starts`` ``[B]``; slots wrap modulo ``C``."""
        slots = (starts.unsqueeze(1) + torch.arange(horizon, device=starts.device)) % self._capacity  # [B, H]
        if self._frame_stack:
            obs, next_obs = self._stacks(self._obs_id_t[slots]), self._stacks(self._next_id_t[slots])
        else:
            obs, next_obs = self._obs_t[slots], self._next_obs_t[slots]
        return ReplayBatch(
            obs=obs,
            action=self._action_t[slots],
            reward=self._reward_t[slots],
            next_obs=next_obs,
            terminated=self._terminated_t[slots],
            indices=starts,
        )

    def _stacks(self, newest: torch.Tensor) -> torch.Tensor:
        """Frame ids ``[B, H]`` (the newest of each stack) -> observations ``[B, H, obs_dim]`` uint8."""
        ids = (newest.unsqueeze(-1) + self._stack_offsets) % self._num_frames_ring  # [B, H, k]
        return self._frames_t[ids].reshape(*newest.shape, self._obs_dim)

    # ------------------------------------------------------------------ priorities

    def update_priority(self, indices: torch.Tensor, td_error: torch.Tensor) -> None:
        """Set priorities of start slots ``indices`` ``[B]`` from raw errors ``td_error`` ``[B]``.

        Stores ``td_error.clamp(min=min_priority) ** alpha`` and raises the max priority with
        ``torch.maximum`` (no ``.item()``; nothing here waits on the device except moving the
        result to the CPU storage). With duplicate indices an arbitrary one of the values wins.
        """
        indices = torch.as_tensor(indices).reshape(-1)
        td_error = torch.as_tensor(td_error).reshape(-1)
        if indices.shape != td_error.shape:
            raise ValueError(
                f"indices ({indices.numel()} elements) and td_error ({td_error.numel()}) "
                "must have the same number of elements"
            )
        if indices.numel() == 0:
            return
        self._assign_new_priorities()
        priority = td_error.detach().to(self._device, torch.float32)
        priority = priority.clamp(min=self._min_priority).pow(self._alpha)
        self._priority[indices.to(self._device, torch.int64)] = priority
        self._max_priority = torch.maximum(self._max_priority, priority.max())

    def reward_scale(self, eps: float = 1e-8) -> float:
        """Mean absolute reward over stored transitions, floored at ``eps`` (host sync: fine)."""
        if self.size == 0:
            return float(eps)
        mean_abs = np.abs(self._reward[: self.size]).mean(dtype=np.float64)
        return float(max(mean_abs, eps))

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self, arrays: bool = True) -> dict[str, Any]:
        """Tensors, ints and bools only (loadable with ``torch.load(weights_only=True)``).

        Arrays cover the filled part ``[N, ...]`` in slot order (left out if not ``arrays``).
        """
        self._assign_new_priorities()
        n = self.size
        state: dict[str, Any] = {key: getattr(self, f"_{key}") for key in _CONFIG_KEYS}
        if arrays:
            for key in self._array_keys:
                state[key] = torch.from_numpy(getattr(self, f"_{key}")[:n].copy())
            state["valid"] = state["valid"].bool()
            if self._frame_stack:  # the frames still in the ring, oldest first
                ids = np.arange(max(0, self._num_frames - self._num_frames_ring), self._num_frames)
                state["frames"] = torch.from_numpy(self._frames[ids % self._num_frames_ring])
        if self._frame_stack:
            state.update(frame_stack=self._frame_stack, num_frames=self._num_frames, oldest_live=self._oldest_live)
        state["priority"] = self._priority[:n].cpu().clone()
        state["max_priority"] = self._max_priority.cpu().clone()
        state["num_added"] = self._num_added
        state["episode_length"] = self._episode_length
        state["env_terminates"] = self._env_terminates
        state["rng_state"] = self._generator.get_state()
        state["rng_on_device"] = self._device.type != "cpu"  # a bool: the state stays weights_only
        return state

    def bookkeeping_state(self) -> dict[str, Any]:
        """``state_dict`` without the transition arrays (which :mod:`mrsq.replay.store` keeps
        on disk incrementally): priorities, validity (bit-packed), counters and the RNG."""
        state = self.state_dict(arrays=False)
        state["valid_bits"] = torch.from_numpy(np.packbits(self._valid[: self.size] > 0))
        return state

    def load_state_dict(self, state: dict[str, Any], arrays: bool = True) -> None:
        """Restore a ``state_dict`` from a buffer with the same dims, capacity and horizon.

        ``arrays=False`` restores a :meth:`bookkeeping_state`: the storage is reset and the
        caller (:func:`mrsq.replay.store.load`) fills the transition rows afterwards."""
        self._check_loadable(state, arrays)
        self._allocate_storage()
        n = min(int(state["num_added"]), self._capacity)
        if self._frame_stack:
            self._num_frames, self._oldest_live = int(state["num_frames"]), int(state["oldest_live"])
        if arrays:
            for key in self._array_keys:
                target = getattr(self, f"_{key}")
                target[:n] = state[key].numpy().astype(target.dtype)
            if self._frame_stack:
                frames = state["frames"].numpy()
                self._frames[np.arange(self._num_frames - len(frames), self._num_frames) % self._num_frames_ring] = frames
        else:
            self._valid[:n] = np.unpackbits(state["valid_bits"].numpy(), count=n)
        self._num_valid = int(np.count_nonzero(self._valid[:n]))
        self._priority[:n] = state["priority"].to(self._device, torch.float32)
        self._max_priority = state["max_priority"].to(self._device, torch.float32).clone().reshape(())
        self._num_added = int(state["num_added"])
        self._num_prioritized = self._num_added
        self._episode_length = int(state["episode_length"])
        self._env_terminates = bool(state["env_terminates"])
        self._synced = max(self._num_added - self._capacity, 0)  # mirror everything on next read
        if self._frame_stack:
            self._frames_synced = max(self._num_frames - self._num_frames_ring, 0)
            self._oldest_live_synced = self._oldest_live
        # a generator's state only fits a generator of the same device type; across devices
        # (a CPU checkpoint resumed on a GPU) the draw sequence restarts from this buffer's seed
        if bool(state.get("rng_on_device", False)) == (self._device.type != "cpu"):
            self._generator.set_state(state["rng_state"])

    def _check_loadable(self, state: dict[str, Any], arrays: bool = True) -> None:
        """Raise ValueError if ``state`` is incomplete or was saved with another configuration."""
        frame_keys = _FRAME_BOOKKEEPING_KEYS + (("frames",) if arrays else ()) if self._frame_stack else ()
        required = (*_CONFIG_KEYS, *(self._array_keys if arrays else ("valid_bits",)), *_BOOKKEEPING_KEYS,
                    *frame_keys)
        if int(state.get("frame_stack", 0)) != self._frame_stack:
            raise ValueError(f"replay state_dict has frame_stack={state.get('frame_stack', 0)}, this buffer has "
                             f"{self._frame_stack} (pixel and vector buffers do not mix)")
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"replay state_dict is missing keys: {missing}")
        for key in _CONFIG_KEYS:
            if state[key] != getattr(self, f"_{key}"):
                raise ValueError(
                    f"replay state_dict has {key}={state[key]}, this buffer has "
                    f"{getattr(self, f'_{key}')}"
                )
        n = min(int(state["num_added"]), self._capacity)
        for key in (*(self._array_keys if arrays else ()), "priority"):
            if state[key].shape[0] != n:
                raise ValueError(
                    f"replay state_dict entry {key!r} has {state[key].shape[0]} rows, expected {n}"
                )
