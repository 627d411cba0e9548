"""Pixel replay: frames stored once, stacks rebuilt exactly, through wrap-around, eviction, the
device mirror, state dicts and the on-disk segments. Frames are hand-made: frame ``n`` is filled
with a value that names it, so every stack a transition sees can be checked frame by frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrsq.replay import LAPReplay
from mrsq.replay import store
from mrsq.replay.lap import frame_ring_size

K, SIZE = 3, 6  # frames per observation, values per frame


class Episodes:
    """Writes episodes of hand-made frames into ``buffer`` as an env with a frame stack would:
    the first observation repeats the reset frame K times; each step drops the oldest frame and
    appends a new one. Keeps every (obs, next_obs) added, by transition number."""

    def __init__(self, buffer: LAPReplay, seed: int = 0) -> None:
        self.buffer, self.rng = buffer, np.random.default_rng(seed)
        self.frames = 0
        self.added: list[tuple[np.ndarray, np.ndarray, bool]] = []
        # in the buffer's frame numbering (K frames per episode start, one per step): the oldest
        # frame each transition's observation stack needs
        self.stored_frames = 0
        self.oldest_frame: list[int] = []

    def frame(self) -> np.ndarray:
        self.frames += 1
        return (np.arange(SIZE) + 7 * self.frames).astype(np.uint8)  # wraps mod 256 but differs from neighbours

    def episode(self, length: int, terminate: bool = False) -> None:
        stack = [self.frame()] * K
        for t in range(length):
            obs = np.concatenate(stack)
            stack = stack[1:] + [self.frame()]
            last = t == length - 1
            self.buffer.add(obs, np.full(1, t, np.float32), float(t), np.concatenate(stack), last and terminate,
                            last and not terminate)
            self.added.append((obs, np.concatenate(stack), last and terminate))
            self.oldest_frame.append(self.stored_frames + t)
        self.stored_frames += K + length


def make(capacity=40, horizon=3, **kwargs) -> LAPReplay:
    return LAPReplay(K * SIZE, 1, capacity=capacity, horizon=horizon, frame_stack=K, seed=0, **kwargs)


def live(buffer: LAPReplay) -> range:
    return range(max(buffer._oldest_live, buffer.num_added - buffer.capacity), buffer.num_added)


def check_every_stack(buffer: LAPReplay, episodes: Episodes) -> None:
    for t in live(buffer):
        batch = buffer._gather(torch.tensor([t % buffer.capacity]), 1)
        obs, next_obs, _ = episodes.added[t]
        assert np.array_equal(batch.obs[0, 0].numpy(), obs), f"transition {t}: obs stack differs"
        assert np.array_equal(batch.next_obs[0, 0].numpy(), next_obs), f"transition {t}: next stack differs"


def test_a_stack_is_exactly_the_last_k_frames_across_episode_starts():
    buffer = make(capacity=200)
    episodes = Episodes(buffer)
    for length in (1, 2, 5, 4):  # episodes shorter than the stack too
        episodes.episode(length)
    first = episodes.added[0][0].reshape(K, SIZE)
    assert (first == first[0]).all(), "the reset frame fills the first stack"
    second_episode = episodes.added[1][0].reshape(K, SIZE)
    assert (second_episode == second_episode[0]).all() and not np.array_equal(second_episode[0], first[0])
    check_every_stack(buffer, episodes)
    batch = buffer.sample(64)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (64, 3, K * SIZE)
    # inside a window, step h's next observation is step h+1's observation (one episode)
    assert torch.equal(batch.next_obs[:, :-1], batch.obs[:, 1:])


def test_one_frame_per_step_and_k_per_episode_start():
    buffer = make(capacity=200)
    episodes = Episodes(buffer)
    episodes.episode(10)
    episodes.episode(7)
    assert buffer._num_frames == (K + 10) + (K + 7)


def test_any_input_is_stored_exactly():
    """Transitions that are not a frame-stack stream (a caller adding unrelated observations)
    write what differs; what comes back is what went in."""
    buffer = make(capacity=50)
    rng = np.random.default_rng(1)
    added = []
    for t in range(30):
        obs, nxt = (rng.integers(0, 256, K * SIZE).astype(np.uint8) for _ in range(2))
        buffer.add(obs, np.zeros(1), 0.0, nxt, False, t % 5 == 4)
        added.append((obs, nxt, False))
    check_every_stack(buffer, type("E", (), {"added": added})())


def test_wrap_around_and_eviction_of_transitions_whose_frames_are_gone():
    """Short episodes write more frames than transitions: the ring then wraps first, the oldest
    transitions lose their starts, and no sampled window ever shows a wrong frame."""
    buffer = make(capacity=40, horizon=3)
    episodes = Episodes(buffer, seed=2)
    for i in range(60):
        episodes.episode(int(episodes.rng.integers(1, 9)), terminate=i % 4 == 0)
    assert buffer.num_added > buffer.capacity and buffer._oldest_live > buffer.num_added - buffer.capacity
    # exactly the transitions whose frames are gone are evicted, no more: worked out from the
    # frame accounting alone (the ring keeps the last frame_ring_size frames)
    assert buffer._num_frames == episodes.stored_frames
    lost = episodes.stored_frames - frame_ring_size(buffer.capacity, K, 3)
    expected = next(t for t in range(buffer.num_added - buffer.capacity, buffer.num_added)
                    if episodes.oldest_frame[t] >= lost)
    assert live(buffer).start == expected, (live(buffer).start, expected)
    check_every_stack(buffer, episodes)
    valid = np.flatnonzero(buffer._valid[: buffer.size])
    assert buffer.num_valid == len(valid)
    oldest = buffer._oldest_live
    for slot in valid:  # a valid start is a live transition
        t = buffer.num_added - 1 - ((buffer.num_added - 1 - slot) % buffer.capacity)
        assert t >= oldest
    batch = buffer.sample(256)
    for row, start in enumerate(batch.indices.tolist()):
        t0 = buffer.num_added - 1 - ((buffer.num_added - 1 - start) % buffer.capacity)
        for h in range(3):
            obs, nxt, terminal = episodes.added[t0 + h]
            assert np.array_equal(batch.obs[row, h].numpy(), obs)
            assert np.array_equal(batch.next_obs[row, h].numpy(), nxt)
            if terminal:
                break  # after a termination the window holds unrelated (masked) data


def test_bytes_per_stored_transition_within_ten_percent_of_a_frame():
    """At a real size (100k transitions of 3 x 84x84 RGB, 500-step DMC episodes)."""
    frame = 3 * 84 * 84
    capacity = 100_000
    nbytes = LAPReplay.storage_bytes(K * frame, 6, capacity, frame_stack=K, horizon=5)
    per_transition = nbytes / capacity
    assert frame <= per_transition <= 1.1 * frame, per_transition / frame
    # 500-step episodes never outgrow the ring: every stored transition keeps its frames
    assert capacity + (capacity // 500 + 1) * K <= frame_ring_size(capacity, K, 5)
    small = make(capacity=300, horizon=5)
    assert small.nbytes == LAPReplay.storage_bytes(K * SIZE, 1, 300, frame_stack=K, horizon=5)


def test_state_dict_and_device_mirror_reproduce_the_samples():
    buffer = make(capacity=45)
    mirror = make(capacity=45, _mirror=True)
    for b in (buffer, mirror):
        episodes = Episodes(b, seed=3)
        for i in range(25):
            episodes.episode(int(episodes.rng.integers(1, 7)), terminate=i % 3 == 0)
    a, m = buffer.sample(32), mirror.sample(32)
    assert torch.equal(a.obs, m.obs) and torch.equal(a.next_obs, m.next_obs)
    restored = make(capacity=45)
    restored.load_state_dict(buffer.state_dict())
    assert restored.num_valid == buffer.num_valid and restored._oldest_live == buffer._oldest_live
    x, y = buffer.sample(32), restored.sample(32)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.next_obs, y.next_obs) and torch.equal(x.indices, y.indices)
    with pytest.raises(ValueError, match="frame_stack"):
        LAPReplay(K * SIZE, 1, capacity=45, horizon=3).load_state_dict(buffer.state_dict())


def test_segments_hold_frames_once_and_restore_the_buffer_exactly(tmp_path):
    """Checkpoint-style: a segment per stretch of transitions; loading the needed ones into a
    fresh buffer (with the bookkeeping) gives the same storage for every live transition."""
    buffer = make(capacity=60, horizon=3)
    episodes = Episodes(buffer, seed=4)
    segments, saved = [], 0
    for round_ in range(6):
        for _ in range(4):
            episodes.episode(int(episodes.rng.integers(3, 12)))
        segment = store.write_segment(buffer, tmp_path, saved)
        segments = store.needed(segments + [segment], buffer.num_added, buffer.capacity)
        saved = buffer.num_added
        store.collect_garbage(tmp_path, [segments])
    assert store.check(tmp_path, segments) is None
    frames_on_disk = sum(len(np.load(p, mmap_mode="r")) for p in tmp_path.glob("*.frames.npy"))
    # frames once: from the oldest frame the kept segments' transitions reference to the newest,
    # plus at most K - 1 shared at each boundary between consecutive segments
    first = min(segments)
    oldest = int(np.load(tmp_path / f"{first[0]:012d}-{first[1]:012d}.npy")["obs_id"][0]) - K + 1
    assert frames_on_disk <= buffer._num_frames - oldest + (K - 1) * (len(segments) - 1)
    restored = make(capacity=60, horizon=3)
    restored.load_state_dict(buffer.bookkeeping_state(), arrays=False)
    store.load(restored, tmp_path, segments)
    check_every_stack(restored, episodes)
    x, y = buffer.sample(64), restored.sample(64)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.next_obs, y.next_obs)
    assert torch.equal(x.action, y.action) and torch.equal(x.reward, y.reward)
