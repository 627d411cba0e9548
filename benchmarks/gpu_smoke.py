"""The GPU smoke test (issue 18): does mrsq's CUDA path work, and how fast is it, in one go.

    python benchmarks/gpu_smoke.py [--device cuda|cpu] [--quick] [--out DIR]

Run by ``benchmarks/gpu_smoke.sh`` (which runs the CUDA tests first). For ``mrsq_small`` and full
``mrsq`` on ``--env`` (default dmc:cheetah-run) it asserts, and prints as a table naming the card:

* ``precision/compile: auto`` resolve to bf16 + compile + CUDA graphs (CUDA only);
* 300 act / add / update steps after a random warm-up, two target refreshes and encoder bursts
  among them (MR.Q's every 250), with zero graph breaks and zero CUDA-graph skips;
* 100 further steps under ``error_on_recompile`` (no recompilation);
* ``torch.cuda.set_sync_debug_mode("error")`` around 10 plans + updates (CUDA only);
* the compiled plan's value within 1% of the eager plan's (same model, same seeds, both scored
  by the fp32 eager model);
* the figures against the targets: one plan <= 3 ms, full ``mrsq``'s loop >= 150 env steps/s;
* a ``mrsq train`` run on the device stopped by SIGTERM and resumed: run.json ``done``, no
  traceback.

Exit status 1 if any check fails (after printing every result), 0 otherwise. ``--device cpu``
runs the same checks on the CPU with :func:`mrsq.runtime.cuda_branch` (the GPU's code path) and
skips the CUDA-only ones; ``--quick`` shrinks everything (the test suite runs that, so this
script cannot rot between GPU machines). The figures only mean something on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import mrsq.components  # noqa: F401
from mrsq import runtime as rt
from mrsq import specs
from mrsq.compile import eager
from mrsq.envs import make_env
from mrsq.envs.base import fill_with_random_actions
from mrsq.planners.sampling import trajectory_value
from mrsq.replay import LAPReplay
from mrsq.training.loop import build_agent

PLAN_MS_TARGET, LOOP_TARGET = 3.0, 150.0  # issue 18's targets (full mrsq on one GPU)
# --quick: network sizes and counts that make a CPU run take seconds (the suite's guard)
QUICK = ["encoder.zs_dim=16", "encoder.za_dim=8", "encoder.zsa_dim=16", "encoder.hidden_dim=16",
         "critic.hidden_dim=16", "policy.hidden_dim=16", "batch_size=8", "target_update_every=8",
         "planner.num_samples=32", "planner.num_elites=8", "planner.num_policy_trajectories=4"]


class Checks:
    """Results as rows ``(preset, check, ok, figure, target)``; nothing raises out of a check."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, preset: str, name: str, ok: bool | None, figure: str = "", target: str = "") -> bool:
        self.rows.append({"preset": preset, "check": name, "ok": ok, "figure": figure, "target": target})
        mark = {True: "ok", False: "FAIL", None: "n/a"}[ok]
        print(f"  {mark:4} {preset:11} {name}: {figure}" + (f" (target {target})" if target else ""), flush=True)
        return bool(ok)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["ok"] is False]

    def table(self, card: str) -> str:
        lines = [f"GPU smoke: {card}", "", "| preset | check | result | figure | target |", "|---|---|---|---:|---:|"]
        for r in self.rows:
            mark = {True: "ok", False: "**FAIL**", None: "n/a"}[r["ok"]]
            lines.append(f"| {r['preset']} | {r['check']} | {mark} | {r['figure']} | {r['target']} |")
        return "\n".join(lines)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Loop:
    """The trainer's step (act, env step, replay add, update) on one agent, for the checks."""

    def __init__(self, spec, device: torch.device, runtime: rt.Runtime, warmup: int) -> None:
        self.spec, self.device = spec, device
        self.env = make_env(spec.train.env, 0)
        torch.manual_seed(0)
        self.agent = build_agent(spec, self.env, device, runtime)
        capacity = warmup + 5_000
        where = rt.replay_device(device, LAPReplay.storage_bytes(self.env.obs_dim, self.env.action_dim, capacity))
        self.replay = LAPReplay(self.env.obs_dim, self.env.action_dim, capacity=capacity,
                                horizon=self.agent.replay_horizon, seed=0, device=where)
        self.obs, self.first = fill_with_random_actions(self.env, self.replay, warmup), True

    def step(self) -> None:
        a = self.agent.act(self.obs, explore=True, first=self.first)
        nxt, r, term, trunc = self.env.step(a)
        self.replay.add(self.obs, a, r, nxt, term, trunc)
        self.obs, self.first = (self.env.reset(), True) if term or trunc else (nxt, False)
        if self.first:
            self.agent.planner.reset()
        self.agent.update(self.replay)


def check_preset(preset: str, args, checks: Checks) -> None:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    overrides = [f"train.env={args.env}", f"train.device={args.device}", *(QUICK if args.quick else [])]
    spec = specs.load(preset, overrides)
    runtime = rt.resolve(spec.precision, spec.compile, device) if cuda else rt.cuda_branch()
    if cuda:
        checks.add(preset, "auto resolves to bf16 + compile + CUDA graphs",
                   runtime.bf16 and runtime.compile and runtime.cuda_graphs and runtime.compile_scope == "search",
                   f"{runtime.precision}, compile {runtime.compile}, graphs {runtime.cuda_graphs}")
    else:
        checks.add(preset, "auto resolves to bf16 + compile + CUDA graphs", None, "CPU: cuda_branch() runtime")
    steps, further, every = (24, 10, 8) if args.quick else (300, 100, spec.target_update_every)
    torch._dynamo.reset()
    counters.clear()
    start = time.perf_counter()
    loop = Loop(spec, device, runtime, warmup=200 if args.quick else 2_000)
    for _ in range(steps):
        loop.step()
    _sync(device)
    warm_s = time.perf_counter() - start
    refreshes = (loop.agent.training_steps - 1) // every + 1
    breaks = sum(counters["graph_break"].values())
    skips = counters["inductor"]["cudagraph_skips"]
    checks.add(preset, f"{steps} steps incl. {refreshes} target refreshes + encoder bursts", refreshes >= 2,
               f"{warm_s:.0f} s from a cold start (compiles included)")
    checks.add(preset, "graph breaks", breaks == 0, f"{breaks} {dict(counters['graph_break']) or ''}".strip(), "0")
    checks.add(preset, "CUDA-graph skips", skips == 0 if cuda else None, f"{skips}", "0")
    failed = [f"{f.name}: {f.failed}" for f in loop.agent.compiled_functions() if f.failed]
    checks.add(preset, "compiled functions active (no fall-back)", not failed, "; ".join(failed) or
               ", ".join(sorted({f.name for f in loop.agent.compiled_functions()})))
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(further):
                loop.step()
        checks.add(preset, f"no recompiles over {further} more steps", True, "")
    except Exception as exc:  # noqa: BLE001 - reported as the check's result
        checks.add(preset, f"no recompiles over {further} more steps", False, str(exc).splitlines()[0][:200])
    if cuda:
        _sync(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(10):
                loop.agent.act_on_device(loop.obs, explore=True)
                loop.replay.add(loop.obs, np.zeros(loop.env.action_dim, np.float32), 0.0, loop.obs, False, False)
                loop.agent.update(loop.replay)
            checks.add(preset, "no host sync in 10 plans + updates", True)
        except Exception as exc:  # noqa: BLE001
            checks.add(preset, "no host sync in 10 plans + updates", False, str(exc).splitlines()[0][:200])
        finally:
            torch.cuda.set_sync_debug_mode(0)
    else:
        checks.add(preset, "no host sync in 10 plans + updates", None, "CPU")
    check_plan_value(preset, loop, checks, 3 if args.quick else 16)
    time_it(preset, loop, checks, cuda, args.quick)


def check_plan_value(preset: str, loop: Loop, checks: Checks, n: int) -> None:
    """Compiled vs eager search on the same model and seeds, each executed sequence scored by
    the fp32 eager model: mean values within 1%."""
    agent, model = loop.agent, loop.agent.planning_model
    observations = [loop.env.reset(seed=100 + i) for i in range(n)]

    def mean_value(use_eager: bool) -> float:
        values = []
        for i, obs in enumerate(observations):
            torch.manual_seed(i)
            agent.planner.reset()
            if use_eager:
                with eager():
                    agent.act_on_device(obs, explore=False, first=True)
            else:
                agent.act_on_device(obs, explore=False, first=True)
            seq = agent.planner.last_sequence.float()[None]
            with torch.no_grad(), eager():
                z0 = model.encode(rt.to_device(obs, loop.device).reshape(1, -1))
                values.append(float(trajectory_value(model, z0, seq)))
        return float(np.mean(values))

    compiled, reference = mean_value(False), mean_value(True)
    gap = abs(compiled - reference) / max(abs(reference), 1e-8)
    checks.add(preset, "compiled plan value vs eager", gap <= 0.01,
               f"{compiled:.4f} vs {reference:.4f} ({100 * gap:.2f}%)", "<= 1%")
    loop.obs = loop.env.reset()
    agent.planner.reset()


def time_it(preset: str, loop: Loop, checks: Checks, cuda: bool, quick: bool) -> None:
    """ms per plan (evaluation act, up to the copy back) and env steps/s of the loop, the
    encoder's 1-in-1 update amortised as ``mrsq bench loop`` does (timed apart)."""
    agent, device = loop.agent, loop.device
    n = 5 if quick else 50
    every = loop.spec.target_update_every
    for _ in range(3):
        agent.act(loop.obs, explore=False)
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        agent.act(loop.obs, explore=False)
    plan_ms = 1e3 * (time.perf_counter() - t) / n
    big = preset == "mrsq" and cuda
    checks.add(preset, "plan (one action)", plan_ms <= PLAN_MS_TARGET if big else None, f"{plan_ms:.2f} ms",
               f"<= {PLAN_MS_TARGET:g} ms" if preset == "mrsq" else "")
    # a window of steps between two bursts (update u bursts when (u - 1) % every == 0)
    if agent.training_steps % every == 0:
        loop.step()
    window = min(n, every - agent.training_steps % every)
    _sync(device)
    t = time.perf_counter()
    for _ in range(max(window, 1)):
        loop.step()
    _sync(device)
    step_ms = 1e3 * (time.perf_counter() - t) / max(window, 1)
    batch = lambda: loop.replay.sample(loop.spec.batch_size, horizon=loop.spec.encoder_horizon).to(device)  # noqa: E731
    agent.encoder_step(batch())
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        agent.encoder_step(batch())
    _sync(device)
    enc_ms = 1e3 * (time.perf_counter() - t) / n
    sps = 1e3 / (step_ms + enc_ms)
    checks.add(preset, "loop (act + update + encoder amortised)", sps >= LOOP_TARGET if big else None,
               f"{sps:.1f} env steps/s ({step_ms:.1f} + {enc_ms:.1f} ms)",
               f">= {LOOP_TARGET:g} env steps/s" if preset == "mrsq" else "")


def check_sigterm_resume(args, checks: Checks, out: Path) -> None:
    """``mrsq train`` on the device, SIGTERM once train.csv has rows, then ``--resume``."""
    run = out / "sigterm_run"
    steps = 200 if args.quick else 1_500
    cmd = [sys.executable, "-m", "mrsq.cli", "train", "mrsq_small", "--env", args.env, "--steps", str(steps),
           "--no-progress", "--out", str(run), "--set", f"train.device={args.device}", "--set", "warmup_steps=100",
           "--set", "train.log_every=20", "--set", f"train.eval_every={steps}", "--set", "train.eval_episodes=1"]
    if args.quick:
        cmd += [a for o in QUICK for a in ("--set", o)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = run.parent / "sigterm.stderr"
    run.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        csv = run / "train.csv"
        while time.monotonic() < deadline and proc.poll() is None:
            if csv.exists() and len(csv.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
    stopped = log.read_text()
    resumed = subprocess.run([sys.executable, "-m", "mrsq.cli", "train", "--resume", str(run), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=600)
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    ok = (code == 130 and resumed.returncode == 0 and info.get("status") == "done"
          and "Traceback" not in stopped + resumed.stderr)
    detail = f"SIGTERM exit {code}, resume exit {resumed.returncode}, run.json {info.get('status')}"
    if not ok:
        detail += " | " + (stopped + resumed.stderr).strip().splitlines()[-1][:200] if (stopped + resumed.stderr).strip() else ""
    checks.add("mrsq_small", "mrsq train: SIGTERM, then --resume", ok, detail, "exit 130, 0, done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--env", default="dmc:cheetah-run")
    parser.add_argument("--quick", action="store_true", help="tiny networks and counts (the CPU guard test)")
    parser.add_argument("--presets", nargs="+", default=["mrsq_small", "mrsq"])
    parser.add_argument("--out", default="runs/gpu-smoke")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_smoke: torch.cuda.is_available() is False (torch {torch.__version__}): no GPU here", file=sys.stderr)
        return 1
    card = rt.device_name(torch.device(args.device))
    print(f"gpu smoke on {card} | torch {torch.__version__} | CUDA {torch.version.cuda}", flush=True)
    checks = Checks()
    for preset in args.presets:
        try:
            check_preset(preset, args, checks)
        except Exception as exc:  # noqa: BLE001 - one preset's crash is a failed check, the rest still run
            checks.add(preset, "ran to the end", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            traceback.print_exc()
    try:
        check_sigterm_resume(args, checks, out)
    except Exception as exc:  # noqa: BLE001
        checks.add("mrsq_small", "mrsq train: SIGTERM, then --resume", False, f"{type(exc).__name__}: {exc}")
    table = checks.table(card)
    print("\n" + table)
    (out / "gpu_smoke.md").write_text(table + "\n")
    (out / "gpu_smoke.json").write_text(json.dumps({"card": card, "torch": torch.__version__, "rows": checks.rows},
                                                   indent=1))
    if checks.failed:
        print(f"\ngpu_smoke: {len(checks.failed)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
