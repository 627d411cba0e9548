"""The CUDA code path, run on the CPU (issue 18): select these with ``pytest -k cuda_branch``.

On a GPU mrsq compiles the planner's *whole* search (one CUDA graph per action) and runs the
update losses as CUDA graphs with cloned outputs; on a CPU it compiles only the trajectory
scoring. :func:`mrsq.runtime.cuda_branch` is a CPU runtime that takes the GPU's branch in
everything but the graphs themselves, so the graph dynamo traces for a GPU is traced here, on
every CPU, and checked: no graph breaks, one compilation of the search across first / later
steps, explore on / off and both planners, no recompilation afterwards, and the same plan as
eager. The backend is ``aot_eager`` (graph breaks, guards and functionalisation are dynamo's and
AOTAutograd's, whatever generates the kernels), so these tests cost seconds, not minutes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import mrsq.components  # noqa: F401
from mrsq import runtime as rt
from mrsq import specs
from mrsq.compile import Compiled, eager
from mrsq.envs import make_env
from mrsq.planners.sampling import IterativeSamplingPlanner
from mrsq.training.loop import build_agent

from test_fast_paths import ENV, SEARCH, TINY, filled_replay

PLANNERS = {
    "mppi": [],
    "cem": ["planner={type: cem, num_samples: 32, num_elites: 8, num_policy_trajectories: 4}"],
}


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setenv("MRSQ_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def branch_agent(planner: str = "mppi", extra=(), seed: int = 0, runtime: rt.Runtime | None = None):
    """mrsq_small at test size on the CUDA branch (or on ``runtime``)."""
    spec = specs.load("mrsq_small", [*TINY, *SEARCH, f"train.env={ENV}", *PLANNERS[planner], *extra])
    env = make_env(ENV, seed)
    torch.manual_seed(seed)
    return spec, env, build_agent(spec, env, torch.device("cpu"), runtime or rt.cuda_branch())


EAGER = rt.Runtime(device="cpu", compile=False, device_name="test")


def graph_breaks() -> int:
    return sum(counters["graph_break"].values())


# ------------------------------------------------------------------------------ the runtime
def test_cuda_branch_runtime_is_the_cuda_resolution_without_graphs(monkeypatch):
    """What `resolve` gives a GPU (no GPU needed: the device probes are replaced) and what the
    CPU's cuda_branch() runtime shares with it."""
    monkeypatch.setattr(rt, "bf16_is_fast", lambda device: True)
    monkeypatch.setattr(rt, "device_name", lambda device: "a GPU")
    monkeypatch.setattr(rt, "compiler_available", lambda device_type: (True, "triton"))
    monkeypatch.delenv("MRSQ_COMPILE", raising=False)
    gpu = rt.resolve("auto", "auto", "cuda")
    assert (gpu.compile, gpu.compile_scope, gpu.cuda_graphs, gpu.compile_mode) == (True, "search", True,
                                                                                  "reduce-overhead")
    monkeypatch.setenv("MRSQ_CUDA_GRAPHS", "off")  # the escape hatch: compiled search, no graphs
    plain = rt.resolve("auto", "auto", "cuda")
    assert (plain.compile_scope, plain.cuda_graphs, plain.compile_mode) == ("search", False, None)
    assert "MRSQ_CUDA_GRAPHS=off" in plain.reasons["compile"]
    cpu = rt.resolve("fp32", "on", "cpu")
    assert (cpu.compile_scope, cpu.cuda_graphs, cpu.compile_mode) == ("scoring", False, None)
    branch = rt.cuda_branch()
    assert (branch.device, branch.compile, branch.compile_scope, branch.cuda_graphs) == ("cpu", True, "search", False)


def test_cuda_branch_compiles_the_whole_search_and_clones_loss_outputs(aot_eager):
    spec, env, agent = branch_agent()
    assert isinstance(agent.planner._search, Compiled) and agent.planner._search.clone_outputs
    assert not isinstance(agent.planner._score, Compiled)  # scored inside the one search graph
    losses = [agent.compiled_encoder_loss, agent.compiled_critic_loss, agent.compiled_policy_loss]
    assert all(f.clone_outputs for f in losses)
    # the CPU's own branch: scoring compiled, nothing cloned
    cpu = build_agent(spec, env, torch.device("cpu"), rt.resolve("fp32", "on", "cpu"))
    assert isinstance(cpu.planner._score, Compiled) and not isinstance(cpu.planner._search, Compiled)
    assert not cpu.compiled_critic_loss.clone_outputs


def test_cuda_branch_outputs_never_alias_what_the_function_returned(aot_eager):
    """A CUDA graph overwrites its outputs on the next replay: the wrapper hands back clones."""
    fn = Compiled(lambda x, y: (x, [y * 2]), rt.cuda_branch(), "identity", cuda_graphs=True)
    x, y = torch.ones(3), torch.ones(2)
    out, (doubled,) = fn(x, y)
    assert out.data_ptr() != x.data_ptr() and torch.equal(out, x) and torch.equal(doubled, 2 * y)
    grad_in = torch.ones(3, requires_grad=True)
    loss, _ = Compiled(lambda a: (a.square().sum(), a), rt.cuda_branch(), "loss", cuda_graphs=True)(grad_in)
    loss.backward()  # the clone is differentiable
    torch.testing.assert_close(grad_in.grad, 2 * torch.ones(3))


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_cuda_branch_has_no_graph_breaks_never_recompiles_and_plans_as_eager(aot_eager, planner):
    """The search compiles once across first / later steps and explore on / off (explore is not
    an argument of the compiled search: dynamo would specialise on the bool and compile twice),
    the losses once each; afterwards updates (new targets and reward scales, an encoder burst
    every 4) and plans in every combination run under error_on_recompile. Then, same model and
    seed: the compiled whole search returns what the eager search does."""
    spec, env, agent = branch_agent(planner)
    replay = filled_replay(env)
    obs = env.reset()
    for first, explore in [(True, True), (False, True), (False, False), (True, False)]:
        agent.act(obs, explore=explore, first=first)
    assert counters["frames"]["ok"] == 1, dict(counters["frames"])  # one search graph for all four
    for _ in range(5):
        agent.update(replay)
    compiled = counters["frames"]["ok"]
    assert compiled == 4, dict(counters["frames"])  # + encoder, critic and policy loss
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(8):
            agent.update(replay)
            agent.act(obs, explore=i % 2 == 0, first=i % 3 == 0)
    assert counters["frames"]["ok"] == compiled
    assert graph_breaks() == 0, dict(counters["graph_break"])
    for fn in agent.compiled_functions():
        assert fn.active and fn.failed is None, (fn.name, fn.failed)
    assert agent.planner._search._calls == 12

    outputs = []
    for use_eager in (True, False):
        torch.manual_seed(7)
        agent.planner.reset()
        with eager() if use_eager else torch._dynamo.config.patch(error_on_recompile=True):
            action = agent.act_on_device(obs, explore=False, first=True)
        outputs.append((action, agent.planner.mean.clone(), agent.planner.last_sequence, agent.planner.last_reference))
    for got, want in zip(*outputs):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ explore and pi(z0)
def test_explore_reaches_the_search_only_where_the_planner_uses_it():
    spec, env, agent = branch_agent(runtime=EAGER)
    calls = []
    planner = agent.planner
    real = planner._search
    planner._search = lambda *args: calls.append(len(args)) or real(*args)
    agent.act(env.reset(), explore=True, first=True)
    assert calls == [3]  # model, obs, mean: no explore

    class Exploring(type(planner)):
        USES_EXPLORE = True

        def choose(self, elite_actions, elite_values, weights, mean, explore):
            return (elite_actions[0], elite_values[0]) if explore else (mean, None)

    assert issubclass(Exploring, IterativeSamplingPlanner)
    agent.planner = Exploring(planner.spec, env.action_dim)
    seen = []
    inner = agent.planner.search
    agent.planner._search = lambda *args: seen.append(args[-1]) or inner(*args)
    agent.act(env.reset(), explore=True, first=True)
    agent.act(env.reset(), explore=False)
    assert seen == [True, False]


@pytest.mark.parametrize("extra", [[], ["planner.policy_noise_std=0.3"], ["planner.num_policy_trajectories=0"]],
                         ids=["deterministic-rollout", "noisy-rollouts", "no-policy-rollouts"])
def test_the_search_hands_back_pi_z0_for_the_divergence(extra):
    """The reference action the search returns is the agent's own pi(f(obs)), so the
    divergence metric costs no second encode; with noisy rollouts it is computed, not read off."""
    spec, env, agent = branch_agent(extra=extra, runtime=EAGER)
    view = agent.acting_view()
    for i in range(3):
        obs = env.reset(seed=i)
        agent.act(obs, explore=False, first=True)
        want = agent.reference_action(view, torch.as_tensor(obs).reshape(1, -1))
        torch.testing.assert_close(agent.planner.last_reference, want)


def test_tdmpc2_reference_is_the_policy_mean_not_a_sample():
    spec = specs.load("tdmpc2", ["encoder.zs_dim=16", "encoder.hidden_dim=16", "encoder.num_bins=11",
                                 "critic.hidden_dim=16", "critic.num_bins=11", "policy.hidden_dim=16",
                                 "planner.num_samples=16", "planner.num_elites=4",
                                 "planner.num_policy_trajectories=4", "planner.iterations=2",
                                 f"train.env={ENV}", "compile=off"])
    env = make_env(ENV, 0)
    agent = build_agent(spec, env, torch.device("cpu"), rt.resolve("fp32", "off", "cpu"))
    obs = env.reset()
    agent.act(obs, explore=True, first=True)
    torch.testing.assert_close(agent.planner.last_reference,
                               agent.reference_action(agent.acting_view(), torch.as_tensor(obs).reshape(1, -1)))
    assert np.isfinite(agent.pop_divergence(True))
