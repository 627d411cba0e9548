"""End-to-end learning: a small MR.Q trained by the real Trainer beats random and untrained play.

InvertedPendulum-v5 is the cheapest task that still exercises the whole agent: it terminates
(so the termination head, masked returns and episodic replay are all in use), a random policy
scores ~3 and a solved one 1000. Widths 64, batch 64, one torch thread (more threads only add
overhead for networks this small, and thrash badly when the CPU is shared).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.envs import make_env
from mrsq.runtime import bf16_is_fast
from mrsq.testing import random_return
from mrsq.training.checkpoint import load_checkpoint
from mrsq.training.loop import Trainer, build_agent, evaluate

ENV = "gym:InvertedPendulum-v5"
STEPS = 3000
OVERRIDES = [
    f"train.env={ENV}", f"train.steps={STEPS}", f"train.eval_every={STEPS}", "train.eval_episodes=3",
    "train.seed=0", "train.threads=1", "train.device=cpu", "warmup_steps=500", "target_update_every=50",
    "encoder.zs_dim=64", "encoder.za_dim=32", "encoder.zsa_dim=64", "encoder.hidden_dim=64",
    "critic.hidden_dim=64", "policy.hidden_dim=64", "batch_size=64",
]


def untrained_then_trained(spec, out, episodes: int):
    """One torch thread: the mean return of a freshly initialised agent over ``episodes``
    deterministic episodes, then the real Trainer's run of ``spec`` (which seeds everything from
    ``train.seed``). Returns ``(untrained return, trainer, result, seconds of training)``."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(123)
        env = make_env(ENV, 1)
        untrained = evaluate(build_agent(spec, env, torch.device("cpu")), env, episodes).return_mean
        env.close()
        start = time.perf_counter()
        trainer = Trainer(spec, out, progress=False)
        result = trainer.run()
        return untrained, trainer, result, time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_mrq_learns_inverted_pendulum(tmp_path, precision):
    """fp32, and bf16 forced (autocast updates, bf16 acting copies) whatever the CPU has.

    bf16 on a CPU without fast bf16 (no AMX) runs 2000 steps, not 3000: its matmuls run at ~1
    GFLOP/s there (PyTorch's reference kernel), and the full length cost two minutes of the suite.
    Compiled and evaluated every 500 steps of a 3000-step run (seed 0, AMD Zen 3), both precisions
    pass 50 at 1500 steps and score 178 (fp32) / 206 (bf16) at 2000. Here (eager: the suite sets
    MRSQ_COMPILE=off) fp32 ends at 80 after 3000 steps and bf16 at 1000 after 2000 on that CPU;
    a single seed's final evaluation of a pendulum policy swings widely (80 to 1000), hence a
    threshold of 10x random play rather than a near-solved score."""
    pytest.importorskip("mujoco")
    steps = 2000 if precision == "bf16" and not bf16_is_fast(torch.device("cpu")) else STEPS
    spec = specs.load("mrq_small", [*OVERRIDES, f"precision={precision}",
                                    f"train.steps={steps}", f"train.eval_every={steps}"])
    untrained, trainer, result, elapsed = untrained_then_trained(spec, tmp_path / "run", episodes=3)
    rand = random_return(ENV, 5, seed=1)
    baseline = max(rand, untrained)
    final = result.evals[-1][1]
    print(f"\n{ENV}: final eval return {final:.1f} after {result.steps} steps in {elapsed:.0f}s "
          f"(random {rand:.1f}, untrained {untrained:.1f})")

    assert result.steps == steps and not result.interrupted
    assert [e[0] for e in result.evals] == [0, steps]
    assert trainer.replay.env_terminates  # the pendulum falls: termination handling was exercised
    assert trainer.agent.training_steps == steps - spec.warmup_steps
    # random play scores ~3 and the untrained policy about as much; balancing 50+ steps is learnt
    assert final > max(50.0, 10 * baseline), f"return {final:.1f} vs baseline {baseline:.1f}"

    # the run folder is complete and the checkpoint restores the trained policy
    out = tmp_path / "run"
    assert {"spec.yaml", "eval.csv", "train.csv", "checkpoint.pt"} <= {p.name for p in out.iterdir()}
    assert specs.from_yaml((out / "spec.yaml").read_text()) == spec
    ckpt = load_checkpoint(out / "checkpoint.pt")
    restored = build_agent(spec, trainer.env, torch.device("cpu"))
    assert ckpt["step"] == steps
    restored.load_training_state(ckpt["agent"])
    obs = np.random.default_rng(0).standard_normal((4, trainer.env.obs_dim)).astype(np.float32)
    for o in obs:
        np.testing.assert_array_equal(restored.act(o, explore=False), trainer.agent.act(o, explore=False))


MODEL_FREE_STEPS = 5000
MODEL_FREE_OVERRIDES = [
    f"train.env={ENV}", f"train.steps={MODEL_FREE_STEPS}", "train.eval_every=1000", "train.eval_episodes=5",
    "train.seed=0", "train.threads=1", "train.device=cpu", "warmup_steps=1000", "compile=off",
]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["td3", "sac"])
def test_model_free_agents_learn_inverted_pendulum(tmp_path, preset):
    """TD3 and SAC at their published sizes (256-256, batch 256), 1k random steps instead of
    25k / 10k, 5k steps in all: both balance several times longer than random play (~7 steps),
    twice as long as at step 0 and longer than an untrained policy of another seed (whose
    near-zero actions balance the pole for 20-40 steps by themselves)."""
    pytest.importorskip("mujoco")
    spec = specs.load(preset, MODEL_FREE_OVERRIDES)
    untrained, trainer, result, elapsed = untrained_then_trained(spec, tmp_path / "run", episodes=5)
    rand = random_return(ENV, 5, seed=1)
    trained = [r for step, r, _ in result.evals if step >= 3000]
    print(f"\n{preset} {ENV}: evals {[round(r, 1) for _, r, _ in result.evals]} in {elapsed:.0f}s "
          f"(random {rand:.1f}, untrained {untrained:.1f})")
    assert result.steps == MODEL_FREE_STEPS and trainer.agent.training_steps == MODEL_FREE_STEPS - 1000
    # the last three evaluations (15 episodes) average several times above random play, twice the
    # run's own step-0 evaluation (the same policy untrained, on the same eval env) and above an
    # untrained policy of another seed: an agent whose updates do nothing fails every one of them.
    # Measured (2-core Xeon, one thread): TD3 61.1 (step 0: 17.6, untrained 41.6), SAC 129.5
    # (27.6, 26.8); random 7.0. A zero action balances ~25 steps.
    step0 = result.evals[0][1]
    bar = max(30.0, 4 * rand, 2 * step0, untrained)
    assert np.mean(trained) > bar, (f"{preset}: mean of the last evaluations {np.mean(trained):.1f} <= {bar:.1f} "
                                    f"(random {rand:.1f}, step 0 {step0:.1f}, untrained {untrained:.1f})")
