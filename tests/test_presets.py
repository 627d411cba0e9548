"""Every preset, parametrized from the preset registry: builds at full size and acts, and runs
200 real environment steps (with training and planning) at reduced width."""

import math

import numpy as np
import pytest
import torch

from mrsq import specs
from mrsq.envs import make_env
from mrsq.registry import PRESETS
from mrsq.training.loop import Trainer, build_agent
import mrsq.testing  # noqa: F401  (registers the fake: envs)

specs.register_builtin_presets()
PRESET_NAMES = PRESETS.names()


def shrunk(name: str, extra=()):
    """The preset's structure (component types, N, aggregators, planner) at a tiny width."""
    base = specs.load(name)
    sets = ["encoder.zs_dim=32", "encoder.za_dim=16", "encoder.zsa_dim=32", "encoder.hidden_dim=32",
            "critic.hidden_dim=32", "policy.hidden_dim=32", "batch_size=32", "warmup_steps=100",
            "target_update_every=50", "train.threads=1", "train.eval_episodes=1", "train.log_every=100"]
    if base.planner.type in ("mppi", "cem"):
        sets += ["planner.num_samples=32", "planner.num_elites=8", "planner.num_policy_trajectories=4"]
    data = specs.to_dict(base)

    def applies(item: str) -> bool:  # only the fields this agent has (model-free: no encoder, ...)
        node = data
        for part in item.split("=")[0].split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    return specs.load(name, [*filter(applies, sets), *extra])


def pixels(name: str) -> bool:
    return specs.load(name).pixel_encoder is not None


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_runs_200_real_env_steps(name, tmp_path):
    # pixel presets on fake:pixels32 (no renderer in this process; test_pixels.py runs dmcpix)
    size = 48 if pixels(name) and specs.load(name).encoder.pixels.type == "tdmpc2" else 32  # its 7/5/3/3 stack
    env = f"fake:pixels{size}" if pixels(name) else "gym:Hopper-v5"
    extra = ["encoder.pixels.channels=8"] if pixels(name) else []
    spec = shrunk(name, [f"train.env={env}", "train.steps=200", "train.eval_every=200", *extra])
    threads = torch.get_num_threads()
    try:
        result = Trainer(spec, tmp_path, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    assert result.steps == 200 and not result.interrupted
    assert [step for step, _, _ in result.evals] == [0, 200]
    assert all(math.isfinite(e[1]) for e in result.evals)
    rows = (tmp_path / "train.csv").read_text().splitlines()
    assert len(rows) == 3 and "critic/loss" in rows[0]  # header + steps 100, 200
    assert rows[2].split(",")[rows[0].split(",").index("critic/loss")] != ""  # it trained


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_builds_at_full_size_and_acts(name):
    spec = specs.load(name)
    env = make_env("fake:pixels84" if pixels(name) else "dmc:cheetah-run", 0)
    agent = build_agent(spec, env, torch.device("cpu"))
    assert agent.critic.num_members == spec.critic.num_members
    action = agent.act(env.reset(), explore=False, first=True)
    assert action.shape == (env.action_dim,) and np.all(np.abs(action) <= 1)
