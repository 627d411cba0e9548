"""Tests for the LAP prioritized subtrajectory replay (mrsq.replay.LAPReplay).

Transitions carry their identity in the observation: ``obs = [episode, step, global_index]``,
``next_obs = [episode, step + 1, global_index]``, ``action = [global_index]``, so every sampled
window can be checked against what was added.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from mrsq.replay import LAPReplay, ReplayBatch

OBS_DIM, ACTION_DIM = 3, 1


def make_buffer(**kwargs) -> LAPReplay:
    kwargs.setdefault("seed", 0)
    return LAPReplay(OBS_DIM, ACTION_DIM, **kwargs)


class Recorder:
    """Adds identifiable transitions to a buffer and keeps a Python log of all of them."""

    def __init__(self, buffer: LAPReplay) -> None:
        self.buffer = buffer
        self.episode_of: list[int] = []  # per global index
        self.step_of: list[int] = []
        self.episode_end: dict[int, tuple[int, str]] = {}  # episode -> (last global index, kind)
        self.episode = 0

    def add_episode(self, length: int, end: str, reward: float = 1.0) -> None:
        """Add an episode of ``length`` steps ending in "terminated", "truncated" or "open"."""
        for step in range(length):
            g = len(self.episode_of)
            last = step == length - 1
            self.buffer.add(
                obs=np.array([self.episode, step, g], dtype=np.float32),
                action=np.array([g], dtype=np.float32),
                reward=reward,
                next_obs=np.array([self.episode, step + 1, g], dtype=np.float32),
                terminated=last and end == "terminated",
                truncated=last and end == "truncated",
            )
            self.episode_of.append(self.episode)
            self.step_of.append(step)
        if end != "open":
            self.episode_end[self.episode] = (len(self.episode_of) - 1, end)
            self.episode += 1

    def expected_valid_slots(self) -> set[int]:
        """Independent reference for which start slots must be sampleable."""
        total, cap, h = len(self.episode_of), self.buffer.capacity, self.buffer.horizon
        valid = set()
        for g in range(max(0, total - cap), total):
            ep = self.episode_of[g]
            continues = g + h < total and self.episode_of[g + h] == ep
            last, kind = self.episode_end.get(ep, (None, None))
            near_termination = kind == "terminated" and last - g < h
            if continues or near_termination:
                valid.add(g % cap)
        return valid


def check_windows(batch: ReplayBatch, rec: Recorder) -> None:
    """Each window: steps up to the first terminal are consecutive steps of one episode, and the
    terminal flag sits exactly on the episode's last step."""
    obs, nxt, term = batch.obs.numpy(), batch.next_obs.numpy(), batch.terminated.numpy()
    assert np.isfinite(obs).all() and np.isfinite(nxt).all()
    for b in range(obs.shape[0]):
        g0 = int(obs[b, 0, 2])
        assert g0 % rec.buffer.capacity == int(batch.indices[b])
        ep, step0 = rec.episode_of[g0], rec.step_of[g0]
        for k in range(obs.shape[1]):
            g = g0 + k
            assert obs[b, k].tolist() == [ep, step0 + k, g]
            assert nxt[b, k].tolist() == [ep, step0 + k + 1, g]
            assert batch.action[b, k, 0].item() == g
            last, kind = rec.episode_end.get(ep, (None, None))
            is_terminal = kind == "terminated" and g == last
            assert term[b, k] == float(is_terminal)
            if is_terminal:
                break  # later steps are unrelated data, masked by the learner


def sampled_slots(buffer: LAPReplay, n: int = 20_000) -> set[int]:
    return set(buffer.sample(n).indices.tolist())


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"obs_dim": 0}, "obs_dim"),
        ({"action_dim": -1}, "action_dim"),
        ({"capacity": 5, "horizon": 5}, "capacity"),
        ({"horizon": 0}, "horizon"),
        ({"capacity": 10.0}, "capacity"),
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"min_priority": 0.0}, "min_priority"),
        ({"prioritized": "yes"}, "prioritized"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    args = {"obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "capacity": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        LAPReplay(**args)


def test_empty_or_no_valid_start_raises():
    buffer = make_buffer(capacity=50)
    with pytest.raises(RuntimeError):
        buffer.sample(4)
    Recorder(buffer).add_episode(5, "truncated")  # 5 <= horizon: nothing valid
    assert buffer.num_valid == 0
    with pytest.raises(RuntimeError, match="valid"):
        buffer.sample(4)


# ---------------------------------------------------------------- validity


def test_validity_grows_as_mr_q_defines():
    buffer = make_buffer(capacity=100, horizon=5)
    rec = Recorder(buffer)
    for n in range(1, 12):
        rec.add_episode(1, "open")
        assert buffer.num_valid == max(0, n - 5)
    rec.add_episode(1, "truncated")  # 12 steps, truncated: 12 - 5 starts
    assert buffer.num_valid == 7
    rec.add_episode(8, "terminated")  # terminated: all 8 starts
    assert buffer.num_valid == 7 + 8
    rec.add_episode(3, "terminated")  # shorter than horizon: all 3 starts
    assert buffer.num_valid == 7 + 8 + 3
    assert sampled_slots(buffer) == rec.expected_valid_slots()


def test_windows_never_cross_truncated_episode_boundaries():
    buffer = make_buffer(capacity=500, horizon=5)
    rec = Recorder(buffer)
    for length in [1, 2, 3, 4, 5, 6, 7, 9, 13, 20, 6, 50]:
        rec.add_episode(length, "truncated")
    assert not buffer.env_terminates
    assert sampled_slots(buffer) == rec.expected_valid_slots()
    batch = buffer.sample(2_000)
    obs = batch.obs.numpy()
    assert (obs[:, :, 0] == obs[:, :1, 0]).all(), "a window mixes episodes"
    assert (np.diff(obs[:, :, 1], axis=1) == 1).all(), "steps are not consecutive"
    assert (batch.terminated == 0).all()
    check_windows(batch, rec)


def test_windows_run_past_termination_with_flag_at_right_step():
    buffer = make_buffer(capacity=500, horizon=5)
    rec = Recorder(buffer)
    for length, end in [(1, "terminated"), (7, "truncated"), (3, "terminated"),
                        (8, "terminated"), (2, "truncated"), (12, "terminated"), (6, "open")]:
        rec.add_episode(length, end)
    assert buffer.env_terminates
    assert sampled_slots(buffer) == rec.expected_valid_slots()
    batch = buffer.sample(3_000)
    check_windows(batch, rec)
    # Windows starting within horizon of a termination do contain the terminal flag.
    assert (batch.terminated.sum(dim=1) >= 1).any()


def test_wrap_around_small_capacity():
    capacity, horizon = 37, 5
    buffer = make_buffer(capacity=capacity, horizon=horizon, prioritized=False)
    rec = Recorder(buffer)
    rng = np.random.default_rng(1)
    while len(rec.episode_of) < 6 * capacity:
        end = "terminated" if rng.random() < 0.5 else "truncated"
        rec.add_episode(int(rng.integers(1, 15)), end)
        assert buffer.size == min(len(rec.episode_of), capacity)
        expected = rec.expected_valid_slots()
        assert buffer.num_valid == len(expected)
        if expected:
            assert sampled_slots(buffer, 3_000) == expected
            check_windows(buffer.sample(500), rec)
    assert buffer.size == capacity
    # Newest data only: every sampled start holds a transition from the last pass.
    starts_global = buffer.sample(1_000).obs[:, 0, 2]
    assert (starts_global >= len(rec.episode_of) - capacity).all()


# ---------------------------------------------------------------- priorities


def test_update_priority_applies_floor_and_alpha():
    buffer = make_buffer(capacity=100, alpha=0.4, min_priority=1.0)
    Recorder(buffer).add_episode(20, "truncated")
    buffer.update_priority(torch.tensor([0, 1, 2]), torch.tensor([0.5, 32.0, 1.0]))
    prios = buffer.priorities
    assert prios[0].item() == pytest.approx(1.0)
    assert prios[1].item() == pytest.approx(32.0**0.4)  # = 4
    assert prios[2].item() == pytest.approx(1.0)
    assert buffer.max_priority.item() == pytest.approx(4.0)


def test_sampling_frequencies_match_priorities():
    buffer = make_buffer(capacity=100, horizon=5, seed=123)
    rec = Recorder(buffer)
    rec.add_episode(40, "truncated")  # valid starts 0..34, 35..39 invalid
    rec.add_episode(10, "terminated")  # valid starts 40..49
    valid = sorted(rec.expected_valid_slots())
    errors = torch.tensor([[0.5, 32.0, 3.0, 100.0, 1.0, 10.0][i % 6] for i in range(len(valid))])
    buffer.update_priority(torch.tensor(valid), errors)
    # Invalid slots get a huge priority: they must still never be drawn.
    buffer.update_priority(torch.arange(35, 40), torch.full((5,), 1e6))

    n = 200_000
    counts = torch.bincount(buffer.sample(n).indices, minlength=buffer.size).double()
    weights = torch.zeros(buffer.size, dtype=torch.float64)
    weights[valid] = errors.double().clamp(min=1.0).pow(0.4)
    p = weights / weights.sum()
    assert counts[35:40].sum() == 0
    sigma = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() <= 5 * sigma + 1e-9).all()
    # Guard against the test being too weak: without alpha the frequencies would be rejected.
    raw = torch.zeros_like(weights)
    raw[valid] = errors.double().clamp(min=1.0)
    raw = raw / raw.sum()
    assert not ((counts - n * raw).abs() <= 5 * sigma + 1e-9).all()


def test_extreme_uniform_draws_never_pick_invalid_starts(monkeypatch):
    """Draws exactly 0 or exactly 1 (times the total) must still land on valid starts."""
    buffer = make_buffer(capacity=100)
    rec = Recorder(buffer)
    rec.add_episode(3, "truncated")  # slots 0..2 invalid
    rec.add_episode(10, "truncated")  # slots 3..7 valid, 8..12 invalid
    rec.add_episode(4, "open")  # slots 13..16 invalid
    assert rec.expected_valid_slots() == {3, 4, 5, 6, 7}
    draws = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    monkeypatch.setattr(torch, "rand", lambda n, **kwargs: draws[:n].clone())
    assert buffer.sample(4).indices.tolist() == [3, 7, 3, 7]


def test_uniform_mode_ignores_priorities():
    buffer = make_buffer(capacity=100, prioritized=False, seed=5)
    Recorder(buffer).add_episode(25, "truncated")  # 20 valid starts
    buffer.update_priority(torch.tensor([0]), torch.tensor([1e6]))
    n = 100_000
    counts = torch.bincount(buffer.sample(n).indices, minlength=buffer.size).double()
    p = 1 / 20
    assert (counts[20:] == 0).all()
    assert ((counts[:20] - n * p).abs() <= 5 * math.sqrt(n * p * (1 - p))).all()


def test_new_transitions_get_max_priority_without_host_sync(monkeypatch):
    buffer = make_buffer(capacity=100)
    rec = Recorder(buffer)
    rec.add_episode(10, "open")
    assert torch.allclose(buffer.priorities, torch.ones(10))

    def no_sync(*args, **kwargs):
        raise AssertionError("host sync on a tensor")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy", "__array__"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    buffer.update_priority(torch.tensor([2, 3]), torch.tensor([100.0, 7.0]))
    rec.add_episode(3, "open")
    max_priority = buffer.max_priority
    monkeypatch.undo()

    assert isinstance(max_priority, torch.Tensor) and max_priority.dim() == 0
    assert max_priority.item() == pytest.approx(100.0**0.4)
    prios = buffer.priorities
    assert torch.allclose(prios[10:13], torch.full((3,), 100.0**0.4))
    assert prios[3].item() == pytest.approx(7.0**0.4)
    # Lower errors never decrease the max.
    buffer.update_priority(torch.tensor([4]), torch.tensor([2.0]))
    assert buffer.max_priority.item() == pytest.approx(100.0**0.4)


def test_update_priority_rejects_mismatched_shapes():
    buffer = make_buffer(capacity=100)
    Recorder(buffer).add_episode(10, "open")
    with pytest.raises(ValueError, match="same number"):
        buffer.update_priority(torch.tensor([0, 1]), torch.tensor([1.0]))


# ---------------------------------------------------------------- misc API


def test_horizon_argument_returns_prefix_windows():
    buffer = make_buffer(capacity=200, horizon=5)
    rec = Recorder(buffer)
    for length, end in [(12, "truncated"), (4, "terminated"), (9, "terminated")]:
        rec.add_episode(length, end)
    short = buffer.sample(300, horizon=2)
    assert short.obs.shape == (300, 2, OBS_DIM)
    assert short.action.shape == (300, 2, ACTION_DIM)
    assert short.reward.shape == short.terminated.shape == (300, 2)
    assert short.indices.dtype == torch.int64
    check_windows(short, rec)
    full = buffer.sample(300)
    assert full.obs.shape == (300, 5, OBS_DIM) and full.next_obs.shape == (300, 5, OBS_DIM)
    with pytest.raises(ValueError, match="horizon"):
        buffer.sample(4, horizon=6)


def test_seeded_sampling_is_reproducible():
    batches = []
    for _ in range(2):
        buffer = make_buffer(capacity=100, seed=7)
        Recorder(buffer).add_episode(30, "terminated")
        batches.append(buffer.sample(64).indices)
    assert torch.equal(batches[0], batches[1])


def test_reward_scale_and_env_terminates():
    buffer = make_buffer(capacity=100)
    assert buffer.reward_scale() == pytest.approx(1e-8)
    rec = Recorder(buffer)
    rec.add_episode(2, "truncated", reward=-2.0)
    rec.add_episode(2, "truncated", reward=0.5)
    assert buffer.reward_scale() == pytest.approx(1.25)
    assert not buffer.env_terminates
    rec.add_episode(4, "open", reward=0.0)
    assert buffer.reward_scale() == pytest.approx(5.0 / 8)
    rec.add_episode(1, "terminated", reward=0.0)
    assert buffer.env_terminates
    zero = make_buffer(capacity=100)
    Recorder(zero).add_episode(3, "open", reward=0.0)
    assert zero.reward_scale(eps=1e-3) == pytest.approx(1e-3)


def test_state_dict_round_trip():
    buffer = make_buffer(capacity=37, seed=3)
    rec = Recorder(buffer)
    for length, end in [(20, "truncated"), (9, "terminated"), (25, "truncated"), (4, "open")]:
        rec.add_episode(length, end)
    batch = buffer.sample(16)
    buffer.update_priority(batch.indices, torch.linspace(0.0, 50.0, 16))

    state = buffer.state_dict()
    assert all(isinstance(v, (torch.Tensor, int, bool)) for v in state.values())
    stream = io.BytesIO()
    torch.save(state, stream)
    stream.seek(0)
    loaded_state = torch.load(stream, weights_only=True)
    restored = make_buffer(capacity=37, seed=999)
    restored.load_state_dict(loaded_state)

    assert restored.size == buffer.size == 37
    assert restored.num_valid == buffer.num_valid
    assert restored.env_terminates == buffer.env_terminates
    assert torch.equal(restored.priorities, buffer.priorities)
    assert torch.equal(restored.max_priority, buffer.max_priority)
    assert restored.reward_scale() == buffer.reward_scale()
    # Same generator state and episode bookkeeping: identical futures.
    for buf in (buffer, restored):
        for step in range(7):
            obs = np.full(OBS_DIM, step)
            buf.add(obs, np.zeros(ACTION_DIM), 1.0, obs + 1, terminated=False, truncated=False)
    assert restored.num_valid == buffer.num_valid
    a, b = buffer.sample(32), restored.sample(32)
    for name in ("obs", "action", "reward", "next_obs", "terminated", "indices"):
        assert torch.equal(getattr(a, name), getattr(b, name))

    with pytest.raises(ValueError, match="capacity"):
        make_buffer(capacity=38).load_state_dict(loaded_state)


def test_device_mirror_path_samples_exactly_like_host_storage():
    """The device-storage path (host arrays mirrored before each draw; priorities, draws and
    gathers on the device), run on the CPU: same seed, same batches and priorities as the plain
    path, across wrap-around, terminations and priority updates."""
    plain, mirror = make_buffer(capacity=23, seed=5), make_buffer(capacity=23, seed=5, _mirror=True)
    recs = [Recorder(plain), Recorder(mirror)]
    for length, end in [(9, "terminated"), (7, "truncated"), (12, "open")]:
        for rec in recs:
            rec.add_episode(length, end)
        batches = [b.sample(8) for b in (plain, mirror)]
        for field in ("obs", "action", "reward", "next_obs", "terminated", "indices"):
            assert torch.equal(getattr(batches[0], field), getattr(batches[1], field)), field
        for b, batch in zip((plain, mirror), batches):
            b.update_priority(batch.indices, torch.arange(8.0) * 3)
    assert torch.equal(plain.priorities, mirror.priorities)
    assert mirror._obs_t.data_ptr() != torch.from_numpy(mirror._obs).data_ptr()  # really a copy
    restored = make_buffer(capacity=23, seed=0, _mirror=True)
    restored.load_state_dict(mirror.state_dict())
    assert torch.equal(restored.sample(8).obs, mirror.sample(8).obs)


@pytest.mark.parametrize("capacity", [11, 23, 1000], ids=["wraps-often", "wraps", "no-wrap"])
def test_valid_start_count_is_kept_by_add_not_scanned(capacity):
    """The running count of valid starts (what sampling checks instead of scanning the flags)
    equals the flags' count after every add: wrap-around, terminations (tail validation over
    slots that may already be valid), truncations, episodes shorter than H, and restores."""
    buffer = make_buffer(capacity=capacity, horizon=5)
    rng = np.random.default_rng(3)
    for _ in range(300):
        terminated = rng.random() < 0.06
        truncated = not terminated and rng.random() < 0.04
        buffer.add(rng.normal(size=OBS_DIM), rng.uniform(-1, 1, ACTION_DIM), 1.0, rng.normal(size=OBS_DIM),
                   terminated, truncated)
        assert buffer.num_valid == int(np.count_nonzero(buffer._valid[: buffer.size]))
    for state, arrays in ((buffer.state_dict(), True), (buffer.bookkeeping_state(), False)):
        restored = make_buffer(capacity=capacity, horizon=5)
        if not arrays:  # the bookkeeping form restores flags only; rows come from the store
            restored.load_state_dict(state, arrays=False)
        else:
            restored.load_state_dict(state)
        assert restored.num_valid == buffer.num_valid


def test_batch_to_its_own_device_is_the_batch_itself():
    buffer = make_buffer(capacity=50)
    Recorder(buffer).add_episode(20, "open")
    batch = buffer.sample(4)
    assert batch.to("cpu") is batch and batch.to(torch.device("cpu")) is batch
