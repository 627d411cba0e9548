"""Tests for mrsq.envs: the prefixed-id factory, the gym and dmc wrappers and their errors."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "disable")

import numpy as np
import pytest

from mrsq.envs import Env, EnvError, make_env, parse_env_id
from mrsq.envs.dmc import ACTION_REPEAT

ENV_IDS = ["gym:InvertedPendulum-v5", "gym:HalfCheetah-v5", "dmc:cartpole-swingup", "dmc:cheetah-run"]
# (obs_dim, action_dim, max_episode_steps) as the simulators define them.
EXPECTED_DIMS = {
    "gym:InvertedPendulum-v5": (4, 1, 1000),
    "gym:HalfCheetah-v5": (17, 6, 1000),
    "dmc:cartpole-swingup": (5, 1, 500),
    "dmc:cheetah-run": (17, 6, 500),
}


def rollout(env: Env, actions: np.ndarray, seed: int | None = None):
    """Reset, play ``actions`` until the episode ends; return observations and rewards."""
    obs = [env.reset(seed=seed)]
    rewards = []
    for a in actions:
        o, r, terminated, truncated = env.step(a)
        obs.append(o)
        rewards.append(r)
        if terminated or truncated:
            break
    return np.stack(obs), np.array(rewards)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_dims_and_types(env_id):
    with make_env(env_id, seed=0) as env:
        assert isinstance(env, Env)
        assert env.env_id == env_id
        assert (env.obs_dim, env.action_dim, env.max_episode_steps) == EXPECTED_DIMS[env_id]
        obs = env.reset()
        assert obs.dtype == np.float32 and obs.shape == (env.obs_dim,)
        out = env.step(np.zeros(env.action_dim, dtype=np.float32))
        assert len(out) == 4
        obs, reward, terminated, truncated = out
        assert obs.dtype == np.float32 and obs.shape == (env.obs_dim,)
        assert type(reward) is float
        assert type(terminated) is bool and type(truncated) is bool


@pytest.mark.parametrize("env_id", ["gym:HalfCheetah-v5", "dmc:cheetah-run"])
def test_out_of_range_actions_are_clipped(env_id):
    """Acting with 5 or -7 must be the same as acting with 1 or -1. HalfCheetah's control cost
    reads the raw action (MuJoCo's own ctrl clamp would hide a missing clip from the physics);
    dm_control's reward does not, so there the action the task receives is checked too."""
    env_a, env_b = make_env(env_id, seed=3), make_env(env_id, seed=3)
    big = np.where(np.arange(env_a.action_dim) % 2 == 0, 5.0, -7.0).astype(np.float32)
    obs_a, rew_a = rollout(env_a, [big] * 5)
    obs_b, rew_b = rollout(env_b, [np.clip(big, -1, 1)] * 5)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    if env_id.startswith("dmc:"):
        env = make_env(env_id, seed=3)
        env.reset()
        received, step = [], env._env.step
        env._env.step = lambda action: received.append(np.array(action)) or step(action)
        env.step(big)
        assert received and all(np.abs(a).max() <= 1.0 for a in received)


def test_gym_action_rescaled_to_bounds():
    """InvertedPendulum's force is in [-3, 3]: agent action 1 must reach the upper bound."""
    env = make_env("gym:InvertedPendulum-v5", seed=0)
    env.reset()
    assert np.allclose(env._scale(np.array([1.0, -1.0, 0.5, 9.0])), [3.0, -3.0, 1.5, 3.0])
    env.close()


def test_dmc_episode_is_500_agent_steps():
    env = make_env("dmc:cartpole-swingup", seed=1)
    rng = np.random.default_rng(0)
    env.reset()
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated = env.step(rng.uniform(-1, 1, env.action_dim))
        total += reward
        steps += 1
        assert not terminated
        if truncated:
            break
        assert steps < 500
    assert steps == 500
    assert 0.0 <= total <= 1000.0
    # The next episode starts fresh and also runs to 500 steps.
    env.reset()
    assert not any(env.step(np.zeros(1))[3] for _ in range(499))
    assert env.step(np.zeros(1))[3]


def test_dmc_action_repeat_sums_rewards_over_all_frames():
    """Our return equals a raw dm_control env's return over 1000 frames, each action repeated."""
    from dm_control import suite

    seed = 7
    env = make_env("dmc:cheetah-run", seed=seed)
    actions = np.random.default_rng(1).uniform(-1, 1, (env.max_episode_steps, env.action_dim))
    _, rewards = rollout(env, actions)
    assert len(rewards) == 500

    raw = suite.load("cheetah", "run", task_kwargs={"random": seed})
    raw.reset()
    raw_return, frames = 0.0, 0
    for a in actions:
        for _ in range(ACTION_REPEAT):
            raw_return += raw.step(a).reward
            frames += 1
    assert frames == 1000
    assert abs(rewards.sum() - raw_return) < 1e-6


@pytest.mark.parametrize("env_id", ["gym:HalfCheetah-v5", "dmc:cheetah-run"])
def test_seeding(env_id):
    make = lambda seed: make_env(env_id, seed=seed)  # noqa: E731
    actions = np.random.default_rng(0).uniform(-1, 1, (30, make(0).action_dim))
    obs_a, rew_a = rollout(make(0), actions)
    obs_b, rew_b = rollout(make(0), actions)
    obs_c, _ = rollout(make(1), actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert not np.array_equal(obs_a[0], obs_c[0])
    # An explicit reset seed overrides the factory seed.
    obs_d, _ = rollout(make(1), actions, seed=0)
    np.testing.assert_array_equal(obs_a, obs_d)


@pytest.mark.parametrize("env_id", ["gym:HalfCheetah-v5", "dmc:cheetah-run"])
def test_later_resets_continue_the_rng(env_id):
    env = make_env(env_id, seed=0)
    first, second = env.reset(), env.reset()
    assert not np.array_equal(first, second)


def test_inverted_pendulum_terminates_under_constant_push():
    env = make_env("gym:InvertedPendulum-v5", seed=0)
    env.reset()
    for step in range(env.max_episode_steps):
        _, _, terminated, truncated = env.step(np.ones(1))
        if terminated:
            break
    assert terminated and not truncated
    assert step < 100


@pytest.mark.parametrize("env_id, expected", [
    ("foo:bar", ["unknown env prefix 'foo'", "dmc", "gym", "gym:HalfCheetah-v5", "dmc:cheetah-run"]),
    ("gmy:Hopper-v5", ["did you mean 'gym'"]),
    ("HalfCheetah-v5", ["no prefix", "gym:HalfCheetah-v5", "dmc:cheetah-run", "did you mean 'gym:HalfCheetah-v5'"]),
    ("cheetah-run", ["no prefix", "did you mean 'dmc:cheetah-run'"]),
    ("gym:HalfCheeta-v5", ["unknown gymnasium id 'HalfCheeta-v5'", "HalfCheetah-v5"]),
    ("dmc:cheetah-runn", ["unknown dm_control task 'cheetah-runn'", "cheetah-run"]),
    ("dmc:cheetah", ["unknown dm_control task 'cheetah'", "domain-task"]),
    ("gym:", ["empty name"]),
])
def test_user_errors_are_helpful(env_id, expected):
    with pytest.raises(EnvError) as info:
        make_env(env_id, seed=0)
    message = str(info.value)
    assert "\n" not in message
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"


def test_non_box_spaces_are_rejected():
    with pytest.raises(EnvError, match="only continuous flat Box"):
        make_env("gym:CartPole-v1", seed=0)  # discrete actions


def test_env_error_is_value_error():
    assert issubclass(EnvError, ValueError)


def test_parse_env_id():
    assert parse_env_id("gym:HalfCheetah-v5") == ("gym", "HalfCheetah-v5")
    assert parse_env_id("dmc:ball_in_cup-catch") == ("dmc", "ball_in_cup-catch")


def test_dmc_domain_with_underscore_and_scalar_obs():
    # ball_in_cup has an underscore in its domain; walker has a scalar 'height' observation.
    for env_id, obs_dim in [("dmc:ball_in_cup-catch", 8), ("dmc:walker-walk", 24)]:
        env = make_env(env_id, seed=0)
        assert env.obs_dim == obs_dim
        assert env.reset().shape == (obs_dim,)
        assert env.step(np.zeros(env.action_dim))[0].shape == (obs_dim,)
