"""Benchmarks that print figures: milliseconds, floating-point work, achieved GFLOP/s, and the
matmul ceiling of the dtype and device the work ran in, measured in the same run (so every
figure has its floor beside it, and a bf16 run is compared with the bf16 ceiling).

``mrsq bench train``: one training-phase environment step at full size, split into encoder update
(MR.Q runs 250 back to back every 250 steps: one per step amortised), critic update, policy
update and the rest (acting, env step, replay add).
``mrsq bench plan``: one action of the agent's planner.
``mrsq bench loop``: environment steps per second of the whole training loop (act with the
agent's planner, env step, replay add, critic + policy update, the encoder burst amortised).
``mrsq bench critics``: critic-update cost against ensemble size.
``mrsq bench scaling``: plan and update time against their sizes, each beside its FLOP ratio.
``mrsq bench checkpoint``: the cost of resumable checkpoints with a full replay buffer (ms per
checkpoint: the first, which writes every stored transition, and an incremental one after one
evaluation interval; MB on disk; resume load time), at each of ``--transitions``. Its floor is
the disk: the bytes written over the write bandwidth measured in the same run.
``mrsq bench all``: all of the above into one JSON file (``--out``) and markdown tables.

Floors are taken against the ceiling measured *beside* the work: the best matmul shape of the
ceiling report is timed again before and after each timed window of a part (about 0.2 s each),
and the part's floor uses the median of those probes. On a shared machine whose speed drifts by 20-30%
within minutes, a ceiling taken once (and as a best-of over short windows, which catches the
moments of boost) made the same code read anywhere from 1.38x to 1.74x its floor in one sitting;
pairing compares the work with what the machine could do at the same moments.

Every bench runs with the runtime the spec resolves to on this machine (precision and compile,
:mod:`mrsq.runtime`) and prints it. FLOPs are counted by ``FlopCounterMode`` on eager calls of the
same functions (matmuls, forward and backward); elementwise work is not counted, so GFLOP/s here
is "matmul work per second", comparable with the matmul ceiling.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mrsq.compile import compile_report, eager


# ---------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                   repeats: int = 3, seconds: float = 0.15) -> dict[str, float]:
    """Best-of GFLOP/s of ``[m, 512] @ [512, 512]`` (the shapes these networks run) in ``dtype``.

    Each repeat runs for about ``seconds``; a size whose single call already takes longer than
    that (bf16 on a CPU without bf16 instructions runs at ~1 GFLOP/s) is timed once, and larger
    sizes are skipped, so the ceiling of a slow dtype is measured in seconds, not minutes."""
    device = torch.device(device)
    out: dict[str, float] = {}
    sizes = (256, 1280, 4096) if device.type == "cpu" else (4096, 16384, 65536)
    for m in sizes:
        a = torch.randn(m, 512, device=device, dtype=dtype)
        b = torch.randn(512, 512, device=device, dtype=dtype)
        flop = 2 * m * 512 * 512
        single = _timed(lambda: a @ b, 1, device)  # also the warm-up
        if single > seconds:
            out[f"{m}x512x512"] = flop / single / 1e9
            break
        n = max(3, int(seconds / max(_timed(lambda: a @ b, 1, device), 1e-6)))
        out[f"{m}x512x512"] = max(flop * n / _timed(lambda: a @ b, n, device) / 1e9 for _ in range(repeats))
    out["max"] = max(out.values())
    return out


class CeilingProbe:
    """The matmul ceiling re-measured beside timed work (see the module's docstring).

    Built from a :func:`matmul_ceiling` report: it times the report's best shape for about
    ``seconds`` per call and keeps each call's GFLOP/s in ``samples``."""

    def __init__(self, ceiling: dict[str, float], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", seconds: float = 0.2) -> None:
        self.device = torch.device(device)
        shape = max((k for k in ceiling if k != "max"), key=lambda k: ceiling[k])
        m = int(shape.split("x")[0])
        self.a = torch.randn(m, 512, device=self.device, dtype=dtype)
        self.b = torch.randn(512, 512, device=self.device, dtype=dtype)
        self.flop = 2 * m * 512 * 512
        self.calls = max(1, round(seconds * ceiling[shape] * 1e9 / self.flop))
        self.samples: list[float] = []

    def __call__(self) -> float:
        self.a @ self.b  # warm: the timed work ran other shapes in between
        gflops = self.flop * self.calls / _timed(lambda: self.a @ self.b, self.calls, self.device) / 1e9
        self.samples.append(gflops)
        return gflops

    def median(self, since: int = 0) -> float:
        return statistics.median(self.samples[since:])


def _timed(fn: Callable[[], object], n: int, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return time.perf_counter() - t


def count_flops(fn: Callable[[], object]) -> float:
    """Matmul FLOPs of one eager call of ``fn`` (compiled functions run eager here)."""
    with eager(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def time_ms(fn: Callable[[], object], iters: int, repeats: int, device: torch.device = torch.device("cpu"),
            probe: CeilingProbe | None = None) -> float:
    """Median over ``repeats`` of the mean time of ``iters`` calls, after a warm-up; with a
    ``probe``, the ceiling is measured before the first timed window and after each one."""
    for _ in range(max(2, iters // 5)):
        fn()
    if probe is not None:  # a probe on each side of every window
        probe()
    samples = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t) / iters * 1e3)
        if probe is not None:
            probe()
    return statistics.median(samples)


def time_paired(fn: Callable[[], object], iters: int, repeats: int, device: torch.device,
                probe: CeilingProbe) -> tuple[float, float]:
    """``(median ms, median ceiling GFLOP/s measured beside those windows)``."""
    start = len(probe.samples)
    ms = time_ms(fn, iters, repeats, device, probe)
    return ms, probe.median(start)


# ---------------------------------------------------------------------------------- set-up
DEFAULT_ENV = "dmc:cheetah-run"
PIXEL_WARM_STEPS = 1_500


def default_env(preset: str, overrides) -> str:
    """``--env`` when not given: dmc:cheetah-run, or a pixel preset's own ``train.env``."""
    from mrsq import specs

    spec = specs.load(preset, list(overrides))
    return spec.train.env if spec.pixel_encoder is not None else DEFAULT_ENV


def _setup(args, warm_steps: int = 5_000, extra_overrides: tuple[str, ...] = ()):
    from mrsq import specs
    from mrsq.envs import make_env
    from mrsq.envs.base import fill_with_random_actions
    from mrsq.replay import LAPReplay
    from mrsq.runtime import replay_device, resolve
    from mrsq.training.loop import build_agent, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.env = args.env or default_env(args.preset, args.overrides)
    spec = specs.load(args.preset, [*args.overrides, *extra_overrides, f"train.env={args.env}"])
    device = resolve_device(spec.train.device)
    runtime = resolve(spec.precision, spec.compile, device)
    env = make_env(args.env, 0)
    agent = build_agent(spec, env, device, runtime)
    if env.pixels:  # each warm-up step renders a frame (~25 ms on a CPU): enough for sampling, no more
        warm_steps = min(warm_steps, PIXEL_WARM_STEPS)
    capacity = max(warm_steps, 1_000) + 1_000
    # the replay the trainer would use here: mirrored on the GPU when it fits, as in training
    nbytes = LAPReplay.storage_bytes(env.obs_dim, env.action_dim, capacity, env.frame_stack, agent.replay_horizon)
    replay = LAPReplay(env.obs_dim, env.action_dim, capacity=capacity,
                       horizon=agent.replay_horizon, seed=0, device=replay_device(device, nbytes),
                       frame_stack=env.frame_stack)
    obs = fill_with_random_actions(env, replay, warm_steps)
    agent.prepare(replay)
    return spec, env, agent, replay, obs, runtime


def _header(name: str, args, runtime, ceiling: dict, compile_start: dict,
            probe: CeilingProbe | None = None) -> dict:
    compiled = {k: v - compile_start.get(k, 0.0) for k, v in compile_report().items()}
    out = {"benchmark": name, "preset": args.preset, "env": args.env, "threads": torch.get_num_threads(),
           "device": runtime.device_name, "runtime": runtime.as_dict(),
           "ceiling_dtype": runtime.precision, "ceiling_gflop_per_s": ceiling,
           "compile_seconds": {k: v for k, v in compiled.items() if v > 0}}
    if probe is not None and probe.samples:
        out["ceiling_beside_work"] = {"median": probe.median(), "min": min(probe.samples),
                                      "max": max(probe.samples), "probes": len(probe.samples)}
    return out


def _row(part: str, ms: float, flops: float, ceiling: float) -> dict:
    """``ceiling``: the GFLOP/s measured beside this part's timing."""
    return {"part": part, "ms": ms, "gflop": flops / 1e9,
            "gflop_per_s": flops / 1e9 / (ms / 1e3) if ms else 0.0,
            "ceiling_gflop_per_s": ceiling, "floor_ms": flops / 1e9 / ceiling * 1e3}


def _total_row(part: str, rows: list[dict]) -> dict:
    """Sum of ``rows``: their ms, FLOPs and floors (each part's floor at its own ceiling)."""
    ms, gflop, floor = (sum(r[k] for r in rows) for k in ("ms", "gflop", "floor_ms"))
    return {"part": part, "ms": ms, "gflop": gflop, "gflop_per_s": gflop / (ms / 1e3) if ms else 0.0,
            "ceiling_gflop_per_s": gflop / (floor / 1e3) if floor else 0.0, "floor_ms": floor}


def _probe(rt) -> tuple[dict, CeilingProbe]:
    """The ceiling report now, and a probe of its best shape for pairing with timed work."""
    ceiling = matmul_ceiling(rt.dtype, rt.torch_device)
    return ceiling, CeilingProbe(ceiling, rt.dtype, rt.torch_device)


# ---------------------------------------------------------------------------------- benches
def bench_train(args) -> dict:
    before = compile_report()
    spec, env, agent, replay, obs, rt = _setup(args)
    dev = rt.torch_device
    B, H = spec.batch_size, getattr(spec, "value_horizon", None)
    state = {"obs": obs, "zs": None}

    def encoder():
        agent.encoder_step(replay.sample(B, horizon=spec.encoder_horizon).to(dev))

    def critic():
        batch = replay.sample(B, horizon=H).to(dev)
        state["zs"], _, td = agent.critic_step(batch)
        replay.update_priority(batch.indices, td)

    def policy():
        agent.policy_step(state["zs"])

    def rest():
        a = agent.act(state["obs"], explore=True)
        nxt, r, term, trunc = env.step(a)
        replay.add(state["obs"], a, r, nxt, term, trunc)
        state["obs"] = env.reset() if term or trunc else nxt

    if hasattr(agent, "encoder_step"):  # MR.Q's family: each update of a step timed apart
        critic()
        parts = {"encoder update": encoder, "critic update": critic, "policy update": policy, "rest": rest}
        flops = {k: count_flops(f) for k, f in parts.items()}
    else:  # any other agent: its whole per-step update (e.g. TD3's policy every 2nd step: mean of 2)
        def update():
            agent.update(replay)

        update()
        parts = {"update": update, "rest": rest}
        flops = {"update": (count_flops(update) + count_flops(update)) / 2, "rest": count_flops(rest)}
    iters = {"encoder update": 10, "critic update": 10, "policy update": 20, "rest": 50, "update": 10}
    ceiling, probe = _probe(rt)
    rows = []
    for k, f in parts.items():
        ms, beside = time_paired(f, iters[k], args.repeats, dev, probe)
        rows.append(_row(k, ms, flops[k], beside))
    rows.append(_total_row("total per env step", rows))
    total = rows[-1]["ms"]
    rows += _pixel_rows(env, agent, replay, state, probe, args.repeats, dev)
    return {**_header("train", args, rt, ceiling, before, probe), "rows": rows, "steps_per_s": 1e3 / total}


def _pixel_rows(env, agent, replay, state, probe, repeats: int, dev) -> list[dict]:
    """Pixel envs: where the time of a step goes, as rows inside the ones above (not added to
    the total): rendering one observation frame (OSMesa rasterisation: no FLOPs torch counts, so
    no floor), and the conv encoder's forward over one sampled batch of frames (the encoder
    update runs it on the first observation of each window and on every next one)."""
    if not env.pixels:
        return []
    renderer = env._renderer
    ms, beside = time_paired(renderer.render, 20, repeats, dev, probe)
    rows = [_row(f"  of which: render {env.size}px", ms, 0.0, beside)]
    spec = agent.spec
    horizon = getattr(spec, "encoder_horizon", agent.replay_horizon)
    batch = replay.sample(spec.batch_size, horizon=horizon).to(dev)
    frames = torch.cat([batch.obs[:, :1], batch.next_obs], 1).reshape(-1, batch.obs.shape[-1])

    def encode():
        with torch.no_grad():
            agent.encoder.zs(frames)

    encode()
    ms, beside = time_paired(encode, 5, repeats, dev, probe)
    rows.append(_row(f"  of which: conv fwd x{frames.shape[0]}", ms, count_flops(encode), beside))
    return rows


def bench_plan(args) -> dict:
    before = compile_report()
    spec, env, agent, replay, obs, rt = _setup(args, warm_steps=1_000)
    agent.planner.reset()
    act = lambda: agent.act(obs, explore=False)
    act()  # compiles
    flops = count_flops(act)
    ceiling, probe = _probe(rt)
    ms, beside = time_paired(act, args.plan_iters, args.repeats, rt.torch_device, probe)
    return {**_header("plan", args, rt, ceiling, before, probe), "planner": spec.planner.type,
            "rows": [_row("one action", ms, flops, beside)]}


def bench_loop(args) -> dict:
    """Env steps/s of the training loop after warm-up: the trainer's step (act with the planner
    and exploration, env step, replay add, ``agent.update``) timed over ``--loop-steps`` steps
    between two encoder bursts, plus one encoder update per step (MR.Q's 250-update burst every
    250 steps, amortised; timed separately so the window need not span a whole burst)."""
    before = compile_report()
    spec, env, agent, replay, obs, rt = _setup(args, warm_steps=2_000)
    dev = rt.torch_device
    agent.training_steps = 1  # the next update is not a burst step (bursts are timed apart)
    state = {"obs": obs, "first": True}

    def loop_step():
        a = agent.act(state["obs"], explore=True, first=state["first"])
        nxt, r, term, trunc = env.step(a)
        replay.add(state["obs"], a, r, nxt, term, trunc)
        state["obs"], state["first"] = (env.reset(), True) if term or trunc else (nxt, False)
        if term or trunc:
            agent.planner.reset()
        agent.update(replay)

    def encoder():
        agent.encoder_step(replay.sample(spec.batch_size, horizon=spec.encoder_horizon).to(dev))

    steps = args.loop_steps
    burst = hasattr(agent, "encoder_step")  # MR.Q's family: the encoder burst amortised apart
    every = getattr(spec, "target_update_every", None)
    if burst and agent.training_steps + 2 * steps + 2 >= every:
        raise ValueError(f"--loop-steps {steps} too large for target_update_every {every}")
    loop_step()  # compiles the acting path before the ceiling is taken
    ceiling, probe = _probe(rt)
    step_ms, step_beside = time_paired(loop_step, steps, 1, dev, probe)  # warm-up + one window of `steps`
    if not burst:
        row = _row("one env step (act + update)", step_ms, count_flops(loop_step), step_beside)
        rows = [row, *_pixel_rows(env, agent, replay, state, probe, args.repeats, dev)]
        return {**_header("loop", args, rt, ceiling, before, probe), "planner": spec.planner.type, "rows": rows,
                "steps_per_s": 1e3 / step_ms}
    enc_ms, enc_beside = time_paired(encoder, 5, args.repeats, dev, probe)
    enc_flops = count_flops(encoder)
    rows = [_row("act + update", step_ms, count_flops(loop_step), step_beside),
            _row("encoder (amortised)", enc_ms, enc_flops, enc_beside)]
    rows.append(_total_row("one env step", rows))
    total = rows[-1]["ms"]
    rows += _pixel_rows(env, agent, replay, state, probe, args.repeats, dev)
    return {**_header("loop", args, rt, ceiling, before, probe), "planner": spec.planner.type,
            "rows": rows, "steps_per_s": 1e3 / total}


def _require_critic_step(agent, bench: str) -> None:
    from mrsq.specs import SpecError

    if not hasattr(agent, "critic_step"):
        raise SpecError(f"`mrsq bench {bench}` times critic_step/policy_step, which agent {agent.spec.type!r} "
                        f"does not split out; use `mrsq bench train` or `loop` for it")


def bench_critics(args) -> dict:
    """Critic-update cost against ensemble size: time and FLOP ratios relative to the first."""
    members = [int(n) for n in str(args.members).split(",")]
    before = compile_report()
    rows = []
    for n in members:
        spec, env, agent, replay, obs, rt = _setup(args, warm_steps=1_000,
                                                   extra_overrides=(f"critic.num_members={n}",))
        _require_critic_step(agent, "critics")
        B, H = spec.batch_size, spec.value_horizon
        dev = rt.torch_device

        def critic():
            batch = replay.sample(B, horizon=H).to(dev)
            _, _, td = agent.critic_step(batch)
            replay.update_priority(batch.indices, td)

        flops = count_flops(critic)
        if not rows:
            ceiling, probe = _probe(rt)
        ms, beside = time_paired(critic, 10, args.repeats, dev, probe)
        rows.append({**_row(f"critic update N={n}", ms, flops, beside), "members": n})
    for r in rows:
        r["time_ratio"], r["flop_ratio"] = r["ms"] / rows[0]["ms"], r["gflop"] / rows[0]["gflop"]
    return {**_header("critics", args, rt, ceiling, before, probe), "rows": rows}


# What `bench scaling` varies: (label, --set overrides) per row, relative to the first of its group.
# Every row sets its value explicitly, so the labels hold whatever the preset's defaults are
# (elites and policy trajectories scale with the samples, as 64 and 24 of TD-MPC2's 512).
PLAN_SCALING = {
    "samples": [(f"num_samples={n}", [f"planner.num_samples={n}", f"planner.num_elites={n // 8}",
                                      f"planner.num_policy_trajectories={3 * n // 64}"]) for n in (256, 512, 1024)],
    "iterations": [(f"iterations={n}", [f"planner.iterations={n}"]) for n in (3, 6, 12)],
    "horizon": [(f"horizon={n}", [f"planner.horizon={n}"]) for n in (1, 3, 5)],
    "ensemble": [(f"critics={n}", [f"critic.num_members={n}"]) for n in (2, 5, 10, 20)],
}
UPDATE_SCALING = {
    "ensemble": [(f"critics={n}", [f"critic.num_members={n}"]) for n in (1, 2, 5, 10, 20)],
    "batch": [(f"batch={b}", [f"batch_size={b}"]) for b in (128, 256, 512)],
}


def bench_scaling(args) -> dict:
    """Plan time (preset ``--plan-preset``) and critic+policy update time (``--preset``) against
    their sizes, each with its FLOP ratio. Runs eager (a compile per shape would dominate), so
    the ratios compare like with like; absolute figures are in the other benches."""
    from argparse import Namespace

    out, rt, ceiling = {"plan": {}, "update": {}}, None, None
    before = compile_report()
    base = dict(vars(args), overrides=[*args.overrides, "compile=off"])
    for group, variants in PLAN_SCALING.items():
        rows = []
        for label, sets in variants:
            a = Namespace(**{**base, "preset": args.plan_preset, "overrides": [*base["overrides"], *sets]})
            spec, env, agent, replay, obs, rt = _setup(a, warm_steps=300)
            act = lambda: agent.act(obs, explore=False)
            rows.append({"part": label, "ms": time_ms(act, 2, args.repeats, rt.torch_device), "gflop": count_flops(act) / 1e9})
        out["plan"][group] = _ratios(rows)
    for group, variants in UPDATE_SCALING.items():
        rows = []
        for label, sets in variants:
            a = Namespace(**{**base, "overrides": [*base["overrides"], *sets]})
            spec, env, agent, replay, obs, rt = _setup(a, warm_steps=1_000)
            _require_critic_step(agent, "scaling")
            dev = rt.torch_device

            def update():
                zs, _, _ = agent.critic_step(replay.sample(spec.batch_size, horizon=spec.value_horizon).to(dev))
                agent.policy_step(zs)

            rows.append({"part": label, "ms": time_ms(update, 5, args.repeats, dev), "gflop": count_flops(update) / 1e9})
        out["update"][group] = _ratios(rows)
    ceiling = matmul_ceiling(rt.dtype, rt.torch_device)
    hdr = _header("scaling", args, rt, ceiling, before)
    hdr["runtime"]["compile"] = False
    return {**hdr, "plan_preset": args.plan_preset, "scaling": out}


def _ratios(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["time_ratio"], r["flop_ratio"] = r["ms"] / rows[0]["ms"], r["gflop"] / rows[0]["gflop"]
    return rows


def bench_all(args) -> dict:
    """train (``--preset``), plan and loop (``--plan-preset`` and ``--preset``), scaling."""
    from argparse import Namespace

    def run(fn, **kw):
        t = time.perf_counter()
        result = fn(Namespace(**{**vars(args), **kw}))
        result["bench_seconds"] = time.perf_counter() - t
        print(format_table(result), flush=True)
        return result

    results = [run(bench_train), run(bench_plan, preset=args.plan_preset),
               run(bench_loop), run(bench_loop, preset=args.plan_preset)]
    if not args.no_scaling:
        results.append(run(bench_scaling))
    return {"benchmark": "all", "results": results}


# ---------------------------------------------------------------------------------- output
def format_table(result: dict) -> str:
    if result["benchmark"] == "checkpoint":
        return format_checkpoint(result)
    if result["benchmark"] == "all":
        return markdown(result)
    lines = [f"mrsq bench {result['benchmark']}: preset {result['preset']}, env {result['env']}, "
             f"{result['threads']} threads, {result['device']}",
             f"precision {result['runtime']['precision']}, compile {'on' if result['runtime']['compile'] else 'off'}"
             + (f" (compile s: {sum(result['compile_seconds'].values()):.1f})" if result.get("compile_seconds") else "")]
    if result["benchmark"] == "scaling":
        for kind, groups in result["scaling"].items():
            for group, rows in groups.items():
                lines.append(f"{kind} vs {group}: " + ", ".join(
                    f"{r['part']} {r['ms']:.1f} ms (x{r['time_ratio']:.2f} time, x{r['flop_ratio']:.2f} FLOP)" for r in rows))
    else:
        lines.append(f"{'part':<22}{'ms':>10}{'GFLOP':>9}{'GFLOP/s':>10}{'floor ms':>10}{'x floor':>9}"
                     f"{'x best-of':>11}")
        for r in result["rows"]:
            ratio, best = _ratios_to_floor(r, result)
            lines.append(f"{r['part']:<22}{r['ms']:>10.2f}{r['gflop']:>9.2f}{r['gflop_per_s']:>10.1f}"
                         f"{r['floor_ms']:>10.2f}{ratio:>9.2f}{best:>11.2f}")
    if result["benchmark"] == "critics":
        lines.append(f"{'members':<10}{'ms':>10}{'time ratio':>12}{'FLOP ratio':>12}")
        lines += [f"{r['members']:<10}{r['ms']:>10.2f}{r['time_ratio']:>12.2f}{r['flop_ratio']:>12.2f}"
                  for r in result["rows"]]
    c = result["ceiling_gflop_per_s"]
    lines.append(f"{result['ceiling_dtype']} matmul ceiling (measured now, best of): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in c.items()) + " GFLOP/s")
    if "ceiling_beside_work" in result:
        b = result["ceiling_beside_work"]
        lines.append(f"ceiling beside the timed work (the floors use it): median {b['median']:.0f}, "
                     f"range {b['min']:.0f}-{b['max']:.0f} GFLOP/s over {b['probes']} probes")
    if "steps_per_s" in result:
        lines.append(f"env steps/s: {result['steps_per_s']:.2f}")
    return "\n".join(lines)


def _ratios_to_floor(row: dict, result: dict) -> tuple[float, float]:
    """``(ms / floor beside the work, ms / floor at the best-of ceiling)``; the second is the
    stricter reading, shown so that neither choice of ceiling hides the other."""
    nan = float("nan")
    ratio = row["ms"] / row["floor_ms"] if row["floor_ms"] else nan
    best_floor = row["gflop"] / result["ceiling_gflop_per_s"]["max"] * 1e3
    return ratio, (row["ms"] / best_floor if best_floor else nan)


def markdown(result: dict) -> str:
    """The ``bench all`` result as the markdown tables of docs/performance.md."""
    lines = []
    for r in result["results"]:
        rt = r["runtime"]
        beside = (f", {r['ceiling_beside_work']['median']:.0f} beside the work (the floors use it)"
                  if "ceiling_beside_work" in r else "")
        lines.append(f"**{r['benchmark']}** ({r['preset']}, {r['env']}): {r['device']}, {r['threads']} threads, "
                     f"{rt['precision']}, compile {'on' if rt['compile'] else 'off'}, "
                     f"{r['ceiling_dtype']} ceiling {r['ceiling_gflop_per_s']['max']:.0f} GFLOP/s best-of{beside}")
        lines.append("")
        if r["benchmark"] == "scaling":
            lines.append("| what | size | ms | time ratio | FLOP ratio |")
            lines.append("|---|---|---:|---:|---:|")
            for kind, groups in r["scaling"].items():
                for group, rows in groups.items():
                    lines += [f"| {kind} vs {group} | {x['part']} | {x['ms']:.1f} | {x['time_ratio']:.2f} | "
                              f"{x['flop_ratio']:.2f} |" for x in rows]
        else:
            lines.append("| part | ms | GFLOP | GFLOP/s | floor ms | x floor | x best-of floor |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for x in r["rows"]:
                ratio, best = _ratios_to_floor(x, r)
                lines.append(f"| {x['part']} | {x['ms']:.1f} | {x['gflop']:.2f} | {x['gflop_per_s']:.0f} | "
                             f"{x['floor_ms']:.1f} | {ratio:.2f} | {best:.2f} |")
            if "steps_per_s" in r:
                lines.append(f"\nenv steps/s: **{r['steps_per_s']:.2f}**")
        lines.append("")
    return "\n".join(lines)


def _disk_write_mb_per_s(folder: Path, mb: int = 256) -> float:
    """Sequential write bandwidth of ``folder``'s disk, fsynced (the floor of a checkpoint)."""
    path = folder / "bandwidth.tmp"
    block = np.random.default_rng(0).bytes(1 << 20)
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)
        f.flush()
        import os

        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return mb / seconds


def bench_checkpoint(args) -> dict:
    """Checkpoint write/load figures with the replay filled to each size in ``--transitions``."""
    import shutil
    import tempfile

    from mrsq import specs
    from mrsq.replay import store
    from mrsq.training.checkpoint import CHECKPOINT
    from mrsq.training.loop import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(x) for x in str(args.transitions).split(",")]
    root = Path(tempfile.mkdtemp(prefix="mrsq-bench-checkpoint-", dir=args.dir or "."))
    rows = []
    try:
        bandwidth = _disk_write_mb_per_s(root)
        for n in sizes:
            spec = specs.load(args.preset, [*args.overrides, f"train.env={args.env}", f"train.steps={n + args.new}"])
            out = root / f"run{n}"
            trainer = Trainer(spec, out, progress=False)
            out.mkdir(parents=True)
            trainer._start = time.perf_counter()
            trainer.state.episode_rng = trainer.env.rng_state()  # as Trainer.run does before its first step
            trainer.state.obs = trainer.env.reset()
            replay, rng = trainer.replay, np.random.default_rng(0)
            obs_dim, action_dim = trainer.env.obs_dim, trainer.env.action_dim

            def add(count: int) -> None:
                obs = rng.normal(size=obs_dim).astype(np.float32)
                for i in range(count):  # environment-like rows: episodes of 500 steps
                    nxt = rng.normal(size=obs_dim).astype(np.float32)
                    end = (replay.num_added + 1) % 500 == 0
                    replay.add(obs, rng.uniform(-1, 1, action_dim), 0.5, nxt, False, end)
                    obs = rng.normal(size=obs_dim).astype(np.float32) if end else nxt

            add(n)
            replay.update_priority(torch.arange(min(n, 4096)), torch.rand(min(n, 4096)))
            t0 = time.perf_counter()
            trainer._checkpoint("running")
            first_ms = (time.perf_counter() - t0) * 1e3
            first_mb = (store.disk_bytes(out / store.FOLDER) + (out / CHECKPOINT).stat().st_size) / 2**20
            add(args.new)
            t0 = time.perf_counter()
            trainer._checkpoint("running")
            incremental_ms = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            trainer._checkpoint("running")  # nothing new: agent, RNGs and replay bookkeeping only
            no_new_ms = (time.perf_counter() - t0) * 1e3
            checkpoint_mb = (out / CHECKPOINT).stat().st_size / 2**20
            replay_mb = store.disk_bytes(out / store.FOLDER) / 2**20
            memory_mb = 4 * replay.size * (2 * obs_dim + action_dim + 3) / 2**20
            t0 = time.perf_counter()
            Trainer.resume(out, progress=False, warn=lambda line: None)
            load_ms = (time.perf_counter() - t0) * 1e3
            written_first = first_mb
            rows.append({"transitions": n, "first_ms": first_ms, "first_mb": first_mb,
                         "first_floor_ms": written_first / bandwidth * 1e3,
                         "incremental_new": args.new, "incremental_ms": incremental_ms,
                         "no_new_ms": no_new_ms, "checkpoint_mb": checkpoint_mb, "replay_mb": replay_mb,
                         "replay_memory_mb": memory_mb, "resume_load_ms": load_ms})
            shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    from mrsq.runtime import resolve

    runtime = resolve("fp32", "off", "cpu")
    return {"benchmark": "checkpoint", "preset": args.preset, "env": args.env, "threads": torch.get_num_threads(),
            "device": runtime.device_name, "disk_write_mb_per_s": bandwidth, "rows": rows}


def format_checkpoint(result: dict) -> str:
    lines = [f"mrsq bench checkpoint: preset {result['preset']}, env {result['env']}, {result['device']}, "
             f"disk {result['disk_write_mb_per_s']:.0f} MB/s (fsynced sequential write, measured now)",
             f"{'transitions':>12}{'first ms':>10}{'first MB':>10}{'floor ms':>10}{'+new':>8}{'incr ms':>9}"
             f"{'none ms':>9}{'ckpt MB':>9}{'replay MB':>11}{'in RAM MB':>11}{'load ms':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['transitions']:>12}{r['first_ms']:>10.0f}{r['first_mb']:>10.1f}{r['first_floor_ms']:>10.0f}"
                     f"{r['incremental_new']:>8}{r['incremental_ms']:>9.0f}{r['no_new_ms']:>9.0f}"
                     f"{r['checkpoint_mb']:>9.1f}{r['replay_mb']:>11.1f}{r['replay_memory_mb']:>11.1f}"
                     f"{r['resume_load_ms']:>9.0f}")
    return "\n".join(lines)


BENCHES = {"checkpoint": bench_checkpoint, "train": bench_train, "plan": bench_plan, "loop": bench_loop, "critics": bench_critics,
           "scaling": bench_scaling, "all": bench_all}


def main(args) -> int:
    if not args.env:
        args.env = default_env(args.preset, args.overrides)
    result = BENCHES[args.what](args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.what != "all":  # `all` printed each table as it went
        print(format_table(result))
    else:
        print(markdown(result))
    return 0
