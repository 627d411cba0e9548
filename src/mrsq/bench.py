"""Benchmarks that print figures: milliseconds, floating-point work, achieved GFLOP/s, and the
fp32 matmul ceiling measured in the same run (so every figure has its floor beside it).

``mrsq bench train``: one training-phase environment step of an agent at full size, split into
encoder update (MR.Q runs 250 back to back every 250 steps: one per step amortised), critic
update, policy update and the rest (acting, env step, replay add).
``mrsq bench plan``: one action of the agent's planner.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the real calls (matmuls,
forward and backward); elementwise work (layer norm, activations, optimiser) is not counted, so
GFLOP/s here is "matmul work per second", comparable with the matmul ceiling.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

# Public MR.Q code on this kind of machine (2 cores, fp32, patched only to run on a CPU); see
# docs/results.md. ms per training-phase env step.
MRQ_PUBLIC_MS = {"total": 140.0, "encoder": 78.0, "critic+policy": 56.0}


def matmul_ceiling(repeats: int = 3) -> dict[str, float]:
    """Best-of fp32 GFLOP/s for the matmul shapes these networks run."""
    out = {}
    for m in (256, 1280, 4096):
        a, b = torch.randn(m, 512), torch.randn(512, 512)
        for _ in range(5):
            a @ b
        best = 0.0
        for _ in range(repeats):
            n = max(10, 20_000 // m)
            t = time.perf_counter()
            for _ in range(n):
                a @ b
            best = max(best, 2 * m * 512 * 512 * n / (time.perf_counter() - t) / 1e9)
        out[f"{m}x512x512"] = best
    out["max"] = max(out.values())
    return out


def count_flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def time_ms(fn: Callable[[], object], iters: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean time of ``iters`` calls, after a warm-up."""
    for _ in range(max(2, iters // 5)):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - t) / iters * 1e3)
    return statistics.median(samples)


def _setup(args, warm_steps: int = 5_000, extra_overrides: tuple[str, ...] = ()):
    from mrsq import specs
    from mrsq.envs import make_env
    from mrsq.replay import LAPReplay
    from mrsq.training.loop import build_agent

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = specs.load(args.preset, [*args.overrides, *extra_overrides, f"train.env={args.env}"])
    env = make_env(args.env, 0)
    agent = build_agent(spec, env, torch.device("cpu"))
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=20_000,
                       horizon=max(spec.encoder_horizon, spec.value_horizon), seed=0)
    rng = np.random.default_rng(0)
    obs = env.reset()
    for _ in range(warm_steps):
        a = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        nxt, r, term, trunc = env.step(a)
        replay.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if term or trunc else nxt
    agent.update_targets(replay.reward_scale())
    agent.env_terminates = replay.env_terminates
    return spec, env, agent, replay, obs


def bench_train(args) -> dict:
    spec, env, agent, replay, obs = _setup(args)
    B, H = spec.batch_size, spec.value_horizon
    state = {"obs": obs, "zs": None}

    def encoder():
        agent.encoder_step(replay.sample(B))

    def critic():
        batch = replay.sample(B, horizon=H)
        state["zs"], _, td = agent.critic_step(batch)
        replay.update_priority(batch.indices, td)

    def policy():
        agent.policy_step(state["zs"])

    def rest():
        a = agent.act(state["obs"], explore=True)
        nxt, r, term, trunc = env.step(a)
        replay.add(state["obs"], a, r, nxt, term, trunc)
        state["obs"] = env.reset() if term or trunc else nxt

    critic()
    parts = {"encoder update": encoder, "critic update": critic, "policy update": policy, "rest": rest}
    flops = {k: count_flops(f) for k, f in parts.items()}
    iters = {"encoder update": 10, "critic update": 10, "policy update": 20, "rest": 50}
    ms = {k: time_ms(f, iters[k], args.repeats) for k, f in parts.items()}
    ceiling = matmul_ceiling()
    total_ms, total_flops = sum(ms.values()), sum(flops.values())
    rows = [{"part": k, "ms": ms[k], "gflop": flops[k] / 1e9,
             "gflop_per_s": flops[k] / 1e9 / (ms[k] / 1e3) if ms[k] else 0.0,
             "floor_ms": flops[k] / 1e9 / ceiling["max"] * 1e3} for k in parts]
    rows.append({"part": "total per env step", "ms": total_ms, "gflop": total_flops / 1e9,
                 "gflop_per_s": total_flops / 1e9 / (total_ms / 1e3),
                 "floor_ms": total_flops / 1e9 / ceiling["max"] * 1e3})
    return {"benchmark": "train", "preset": args.preset, "env": args.env, "threads": torch.get_num_threads(),
            "device": _cpu_name(), "rows": rows, "ceiling_gflop_per_s": ceiling,
            "steps_per_s": 1e3 / total_ms,
            "reference": {"public_mrq_ms": MRQ_PUBLIC_MS["total"],
                          "speedup_vs_public_mrq": MRQ_PUBLIC_MS["total"] / total_ms}}


def bench_plan(args) -> dict:
    spec, env, agent, replay, obs = _setup(args)
    agent.planner.reset()
    act = lambda: agent.act(obs, explore=False)
    flops = count_flops(act)
    ms = time_ms(act, 5, args.repeats)
    ceiling = matmul_ceiling()
    return {"benchmark": "plan", "preset": args.preset, "env": args.env, "threads": torch.get_num_threads(),
            "device": _cpu_name(), "planner": spec.planner.type,
            "rows": [{"part": "one action", "ms": ms, "gflop": flops / 1e9,
                      "gflop_per_s": flops / 1e9 / (ms / 1e3),
                      "floor_ms": flops / 1e9 / ceiling["max"] * 1e3}],
            "ceiling_gflop_per_s": ceiling}


def bench_critics(args) -> dict:
    """Critic-update cost against ensemble size: time and FLOP ratios relative to N=1."""
    members = [int(n) for n in str(args.members).split(",")]
    rows = []
    for n in members:
        spec, env, agent, replay, obs = _setup(args, warm_steps=1_000, extra_overrides=(f"critic.num_members={n}",))
        B, H = spec.batch_size, spec.value_horizon

        def critic():
            batch = replay.sample(B, horizon=H)
            _, _, td = agent.critic_step(batch)
            replay.update_priority(batch.indices, td)

        flops = count_flops(critic)
        ms = time_ms(critic, 10, args.repeats)
        rows.append({"part": f"critic update N={n}", "members": n, "ms": ms, "gflop": flops / 1e9,
                     "gflop_per_s": flops / 1e9 / (ms / 1e3)})
    ceiling = matmul_ceiling()
    for r in rows:
        r["floor_ms"] = r["gflop"] / ceiling["max"] * 1e3
        r["time_ratio"] = r["ms"] / rows[0]["ms"]
        r["flop_ratio"] = r["gflop"] / rows[0]["gflop"]
    return {"benchmark": "critics", "preset": args.preset, "env": args.env, "threads": torch.get_num_threads(),
            "device": _cpu_name(), "rows": rows, "ceiling_gflop_per_s": ceiling}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores visible)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores visible)"


def format_table(result: dict) -> str:
    lines = [f"mrsq bench {result['benchmark']}: preset {result['preset']}, env {result['env']}, "
             f"{result['threads']} threads, {result['device']}",
             f"{'part':<22}{'ms':>10}{'GFLOP':>9}{'GFLOP/s':>10}{'floor ms':>10}{'x floor':>9}"]
    for r in result["rows"]:
        ratio = r["ms"] / r["floor_ms"] if r["floor_ms"] else float("nan")
        lines.append(f"{r['part']:<22}{r['ms']:>10.2f}{r['gflop']:>9.2f}{r['gflop_per_s']:>10.1f}"
                     f"{r['floor_ms']:>10.2f}{ratio:>9.2f}")
    if result["benchmark"] == "critics":
        lines.append(f"{'members':<10}{'ms':>10}{'time ratio':>12}{'FLOP ratio':>12}")
        lines += [f"{r['members']:<10}{r['ms']:>10.2f}{r['time_ratio']:>12.2f}{r['flop_ratio']:>12.2f}"
                  for r in result["rows"]]
    c = result["ceiling_gflop_per_s"]
    lines.append("fp32 matmul ceiling (measured now): " + ", ".join(f"{k} {v:.0f}" for k, v in c.items()) + " GFLOP/s")
    if "reference" in result:
        ref = result["reference"]
        lines.append(f"steps/s {result['steps_per_s']:.2f}; public MR.Q code on this machine class "
                     f"~{ref['public_mrq_ms']:.0f} ms/step -> speedup {ref['speedup_vs_public_mrq']:.2f}x")
    return "\n".join(lines)


def main(args) -> int:
    result = {"train": bench_train, "plan": bench_plan, "critics": bench_critics}[args.what](args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
