"""The fast paths must compute what the plain fp32 eager path computes.

* compiled update losses (real Inductor) equal the eager ones, values and gradients;
* steady-state training and planning never recompile (dynamo is told to raise on a recompile);
* bf16 acting copies are refreshed after updates, never cast per call, and stay out of checkpoints;
* bf16 and compiled planning choose sequences whose fp32-scored value is within 1% of fp32 eager
  planning on the same trained model and seed;
* with CUDA present, planning and updates make no host synchronisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.compile import eager
from mrsq.envs import make_env
from mrsq.envs.base import fill_with_random_actions
from mrsq.planners.sampling import trajectory_value
from mrsq.replay import LAPReplay
from mrsq.runtime import Runtime
from mrsq.training.loop import Trainer, build_agent

TINY = ["encoder.zs_dim=16", "encoder.za_dim=8", "encoder.zsa_dim=16", "encoder.hidden_dim=16",
        "critic.hidden_dim=16", "policy.hidden_dim=16", "batch_size=8", "target_update_every=4",
        "train.device=cpu"]
SEARCH = ["planner.num_samples=32", "planner.num_elites=8", "planner.num_policy_trajectories=4"]
ENV = "fake:point2"


def make(preset: str = "mrsq_small", *, precision: str = "fp32", compile: bool = False, seed: int = 0,
         extra: tuple[str, ...] = ()):
    search = SEARCH if preset.startswith("mrsq") else []
    spec = specs.load(preset, [*TINY, *search, f"train.env={ENV}", *extra])
    env = make_env(ENV, seed)
    torch.manual_seed(seed)
    runtime = Runtime(precision=precision, compile=compile, device_name="test")
    return spec, env, build_agent(spec, env, torch.device("cpu"), runtime)


def filled_replay(env, steps: int = 300, seed: int = 0, device: str = "cpu") -> LAPReplay:
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=1_000, horizon=5, seed=seed, device=device)
    fill_with_random_actions(env, replay, steps, seed)
    return replay


# ---------------------------------------------------------------------------------- compile
@pytest.mark.slow
def test_compiled_losses_and_gradients_match_eager(monkeypatch):
    """Real Inductor (C++ codegen) against eager on the same weights, batch and noise."""
    monkeypatch.delenv("MRSQ_COMPILE_BACKEND", raising=False)
    spec, env, agent = make("mrq_small", compile=True)
    replay = filled_replay(env)
    agent.update_targets(replay.reward_scale())
    b5, b3 = replay.sample(8), replay.sample(8, horizon=3)
    noise = agent.target_noise(8)
    zs = agent.encoder.zs(b3.obs[:, 0]).detach()
    cases = {
        "encoder": (agent.compiled_encoder_loss, agent.encoder, (b5.obs, b5.action, b5.reward, b5.next_obs, b5.terminated)),
        "critic": (agent.compiled_critic_loss, agent.critic,
                   (b3.obs[:, 0], b3.action[:, 0], b3.reward, b3.terminated, b3.next_obs[:, -1], noise)),
        "policy": (agent.compiled_policy_loss, agent.policy, (zs,)),
    }
    for name, (fn, module, args) in cases.items():
        results = []
        for use_eager in (True, False):
            module.zero_grad(set_to_none=True)
            if use_eager:
                with eager():
                    out = fn(*args)
            else:
                out = fn(*args)
            out[0].backward()
            results.append((out[0].detach(), [p.grad.clone() for p in module.parameters()]))
        assert fn.active, f"{name}: compilation fell back to eager ({fn.failed})"
        (le, ge), (lc, gc) = results
        torch.testing.assert_close(lc, le, rtol=1e-4, atol=1e-5, msg=f"{name} loss")
        for a, b in zip(gc, ge):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=f"{name} gradient")
        assert fn.compile_seconds > 0


def test_steady_state_never_recompiles(monkeypatch):
    """Updates across target copies (new reward scales), termination appearing, planning with
    and without exploration: after warm-up, any recompilation raises."""
    monkeypatch.setenv("MRSQ_COMPILE_BACKEND", "eager")  # guards are dynamo's, whatever the backend
    import torch._dynamo

    torch._dynamo.reset()
    spec, env, agent = make("mrsq_small", compile=True)
    replay = filled_replay(env)
    obs = env.reset()

    def work(n: int) -> None:
        for i in range(n):
            agent.update(replay)  # a target copy + encoder burst every 4 updates
            agent.act(obs, explore=True, first=(i % 3 == 0))
            agent.act(obs, explore=False)

    import warnings

    from mrsq.compile import CompileFallbackWarning

    work(5)
    with torch._dynamo.config.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)  # a recompile must not hide as a fall-back
        work(12)
    for fn in agent.compiled_functions():
        assert fn.active and fn.failed is None, fn.name
    assert agent.reward_scale != 1.0  # scales were refreshed during the guarded window


# ---------------------------------------------------------------------------------- bf16
def test_bf16_acting_copies_are_refreshed_not_cast_per_call():
    spec, env, agent = make("mrsq_small", precision="bf16")
    replay = filled_replay(env)
    obs = env.reset()
    agent.act(obs)
    nets = agent.acting_nets()
    assert all(p.dtype == torch.bfloat16 for m in (nets.encoder, nets.critic, nets.policy) for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in agent.parameters())  # master weights stay fp32
    first = [p.clone() for p in nets.critic.parameters()]
    agent.act(obs)
    assert agent.acting_nets() is nets and all(torch.equal(a, b) for a, b in zip(first, nets.critic.parameters()))
    agent.update(replay)
    agent.act(obs)  # refreshed after the update, in place
    assert agent.acting_nets() is nets
    for copy_net, master_net in ((nets.encoder, agent.encoder), (nets.critic, agent.critic), (nets.policy, agent.policy)):
        for copy_, master in zip(copy_net.parameters(), master_net.parameters()):  # every tensor, exactly the cast
            assert torch.equal(copy_, master.detach().to(torch.bfloat16))
    assert any(not torch.equal(a, b) for a, b in zip(first, nets.critic.parameters()))
    # the copies are not state: checkpoints hold fp32 masters only
    state = agent.training_state()["modules"]
    assert all(t.dtype == torch.float32 for sd in state.values() for t in sd.values() if t.is_floating_point())


def _trained_agent(tmp_path, precision: str):
    spec = specs.load("mrsq_small", [*TINY, *SEARCH, f"train.env={ENV}", "train.steps=400", "train.eval_every=400",
                                     "train.eval_episodes=1", "warmup_steps=100", "train.threads=1",
                                     f"precision={precision}", "compile=off"])
    trainer = Trainer(spec, tmp_path / precision, progress=False)
    trainer.run()
    return spec, trainer.env, trainer.agent


def test_bf16_and_compiled_planning_match_fp32_eager_within_one_percent(tmp_path, monkeypatch):
    """Same trained model, same seeds: the executed sequences' values, scored in fp32 eager by
    the fp32 model, agree within 1% (mean over several observations)."""
    spec, env, agent = _trained_agent(tmp_path, "fp32")
    state = agent.training_state()
    obs = [env.reset(seed=s) for s in range(24)]

    def plan_values(a) -> float:
        values = []
        for i, o in enumerate(obs):
            torch.manual_seed(100 + i)
            a.planner.reset()
            a.act(o, explore=False, first=True)
            seq = a.planner.last_sequence.float()[None]  # [1, H, A]
            z0 = agent.planning_model.encode(torch.as_tensor(o)[None])
            with torch.no_grad():
                values.append(float(trajectory_value(agent.planning_model, z0, seq)))
        return float(np.mean(values))

    reference = plan_values(agent)
    monkeypatch.setenv("MRSQ_COMPILE_BACKEND", "aot_eager")
    for precision, compile in (("bf16", False), ("fp32", True), ("bf16", True)):
        other = build_agent(spec, env, torch.device("cpu"), Runtime(precision=precision, compile=compile))
        other.load_training_state(state)
        got = plan_values(other)
        assert all(f.active for f in other.compiled_functions() if compile and f.name.startswith("planner"))
        print(f"{precision} compile={compile}: {got:.4f} vs fp32 eager {reference:.4f}")
        assert abs(got - reference) <= 0.01 * abs(reference), (precision, compile, got, reference)


# ---------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cuda_act_update_and_priorities_make_no_host_sync(compile):
    """After warm-up (a compiled function's first calls synchronise by design: compiling, CUDA-
    graph warm-up and recording), acting (up to the action's copy back), updates with an encoder
    burst and a target refresh, the replay's mirror, draw, gather and priority update make no
    host synchronisation."""
    from mrsq.runtime import resolve

    spec = specs.load("mrsq_small", [*TINY[:-1], *SEARCH, f"train.env={ENV}", "train.device=cuda"])
    env = make_env(ENV, 0)
    agent = build_agent(spec, env, torch.device("cuda"), resolve("bf16", "on" if compile else "off", "cuda"))
    replay = filled_replay(env, device="cuda")
    obs = env.reset()
    for i in range(6):  # warm-up: 6 updates (a burst every 4), plans first and not
        agent.update(replay)
        agent.act_on_device(obs, explore=True, first=i == 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(10):
            agent.act_on_device(obs, explore=True)
            replay.add(obs, np.zeros(env.action_dim, np.float32), 0.0, obs, False, False)
            agent.update(replay)  # sample, losses, optimisers, update_priority; a burst at 8
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_evaluation_keeps_the_training_planners_warm_start():
    from mrsq.training.loop import evaluate

    spec, env, agent = make("mrsq_small")
    obs = env.reset()
    agent.act(obs, first=True)
    agent.act(obs)
    warm = agent.planner.mean.clone()
    assert warm.abs().sum() > 0
    evaluate(agent, make_env(ENV, 1), episodes=1)  # plans from other states, resets the planner
    assert torch.equal(agent.planner.mean, warm)
