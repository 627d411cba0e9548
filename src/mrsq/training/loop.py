"""The training loop: act -> env.step -> replay.add -> agent.update -> evaluate -> run folder.

A run folder holds ``spec.yaml`` (fully resolved), ``eval.csv``, ``train.csv`` and
``checkpoint.pt`` (rewritten at every evaluation). Ctrl-C stops cleanly: the checkpoint is
written and both CSVs are complete.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrsq import specs
from mrsq.agents.base import Agent
from mrsq.envs import Env, make_env
from mrsq.registry import AGENTS
from mrsq.replay import LAPReplay
from mrsq.runtime import Runtime
from mrsq.runtime import replay_device
from mrsq.runtime import resolve as resolve_runtime
from mrsq.training.checkpoint import save_checkpoint
from mrsq.training.diagnostics import VALUE_COLUMNS, ValueErrorRecorder
from mrsq.training.logging import CSVLog, MetricMeans

EVAL_COLUMNS = ("step", "return_mean", "return_std", "episodes", "wall_time", *VALUE_COLUMNS, "search_divergence")
TRAIN_COLUMNS = ("step", "wall_time", "steps_per_s", "episodes", "episode_return", "reward_scale",
                 "search/divergence")  # then the agent's own METRICS


@dataclass
class RunResult:
    out: Path
    steps: int
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    interrupted: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_agent(spec, env: Env, device: torch.device, runtime: Runtime | None = None):
    """The spec's agent on ``device``, with precision and compilation resolved for this machine."""
    runtime = runtime or resolve_runtime(spec.precision, spec.compile, device)
    agent = AGENTS.get(spec.type)(spec, env.obs_dim, env.action_dim, runtime=runtime)
    if not isinstance(agent, Agent):
        raise TypeError(f"agent {spec.type!r} ({type(agent).__qualname__}) must subclass mrsq.agents.Agent")
    return agent.to(device)


@dataclass
class Evaluation:
    """One evaluation: return statistics and the diagnostics (:mod:`mrsq.training.diagnostics`)."""

    return_mean: float
    return_std: float
    diagnostics: dict[str, float] = field(default_factory=dict)


def evaluate(agent, env: Env, episodes: int) -> Evaluation:
    """``episodes`` deterministic episodes: return mean and std, value error and divergence.

    The planner's warm-start state is saved and restored around the evaluation: an evaluation
    that falls mid-episode must not hand its last plan to the next training action."""
    saved = [b.clone() for b in agent.planner.buffers()]
    try:
        return _evaluate_episodes(agent, env, episodes)
    finally:
        for buf, value in zip(agent.planner.buffers(), saved):
            buf.copy_(value)


def _evaluate_episodes(agent, env: Env, episodes: int) -> Evaluation:
    returns = []
    recorder = ValueErrorRecorder(agent, agent.spec.discount)
    agent.pop_divergence(explore=False)  # start clean
    for _ in range(episodes):
        obs, done, total, first = env.reset(), False, 0.0, True
        agent.planner.reset()
        terminated = False
        while not done:
            action = agent.act(obs, explore=False, first=first)
            next_obs, reward, terminated, truncated = env.step(action)
            recorder.step(obs, action, reward)
            obs = next_obs
            total += reward
            first = False
            done = terminated or truncated
        recorder.end_episode(bool(terminated))
        returns.append(total)
    diagnostics = recorder.stats()
    diagnostics["search_divergence"] = agent.pop_divergence(explore=False)
    return Evaluation(float(np.mean(returns)), float(np.std(returns)), diagnostics)


class Trainer:
    """Runs one spec to completion, writing the run folder as it goes."""

    def __init__(self, spec, out: Path, progress: bool = True, preset: str | None = None) -> None:
        self.spec, self.out, self.progress = spec, Path(out), progress
        self.preset = preset  # the preset or YAML file's name, recorded in run.json for plot/compare labels
        t = spec.train
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed)
        self.device = resolve_device(t.device)
        self.env = make_env(t.env, t.seed)
        self.eval_env = make_env(t.env, t.seed + 100)
        self.runtime = resolve_runtime(spec.precision, spec.compile, self.device)
        self.agent = build_agent(spec, self.env, self.device, self.runtime)
        r = spec.replay
        capacity = min(r.capacity, t.steps)
        storage = LAPReplay.storage_bytes(self.env.obs_dim, self.env.action_dim, capacity)
        self.replay = LAPReplay(self.env.obs_dim, self.env.action_dim, capacity=capacity,
                                horizon=self.agent.replay_horizon, alpha=r.alpha,
                                min_priority=r.min_priority, prioritized=r.prioritized, seed=t.seed,
                                device=replay_device(self.device, storage))
        self.rng = np.random.default_rng(t.seed)
        self.spec_yaml = specs.to_yaml(spec)

    def run(self) -> RunResult:
        t, s = self.spec.train, self.spec
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "spec.yaml").write_text(self.spec_yaml)
        self._write_run_json()
        eval_log = CSVLog(self.out / "eval.csv", EVAL_COLUMNS)
        train_log = CSVLog(self.out / "train.csv", (*TRAIN_COLUMNS, *self.agent.METRICS))
        result = RunResult(self.out, 0)
        bar = _progress(t.steps, self.progress)
        means = MetricMeans()
        start = last_log_time = time.perf_counter()
        last_log_step, episodes, ep_return, last_return = 0, 0, 0.0, float("nan")
        sps = "-"  # steps/s of the last train.csv row, shown on the progress bar
        obs, first, step = self.env.reset(), True, 0
        self.agent.planner.reset()
        try:
            self._evaluate(0, eval_log, result, start)  # as MR.Q: every curve starts untrained
            for step in range(1, t.steps + 1):
                if self.replay.size < s.warmup_steps:
                    action = self.rng.uniform(-1, 1, self.env.action_dim).astype(np.float32)
                else:
                    action = self.agent.act(obs, explore=True, first=first)
                next_obs, reward, terminated, truncated = self.env.step(action)
                self.replay.add(obs, action, reward, next_obs, terminated, truncated)
                ep_return += reward
                obs, first = next_obs, False
                if terminated or truncated:
                    obs, first, episodes, last_return, ep_return = self.env.reset(), True, episodes + 1, ep_return, 0.0
                    self.agent.planner.reset()
                if self.replay.size > s.warmup_steps:
                    means.add(self.agent.update(self.replay))
                if step % t.log_every == 0:
                    now = time.perf_counter()
                    row = {"step": step, "wall_time": now - start, "episodes": episodes,
                           "steps_per_s": (step - last_log_step) / (now - last_log_time),
                           "episode_return": last_return, "reward_scale": float(self.agent.reward_scale),
                           "search/divergence": self.agent.pop_divergence(explore=True)}
                    row.update(means.pop())
                    train_log.write(row)
                    last_log_step, last_log_time = step, now
                    sps = f"{row['steps_per_s']:.0f}"
                    bar.set_postfix(sps=sps, eval=_last(result), refresh=False)
                if step % t.eval_every == 0 or step == t.steps:
                    self._evaluate(step, eval_log, result, start)
                    bar.set_postfix(sps=sps, eval=_last(result), refresh=False)
                bar.update(1)
            result.steps = step
        except KeyboardInterrupt:
            result.interrupted, result.steps = True, step
            self._checkpoint(step)
        finally:
            bar.close()
            eval_log.close()
            train_log.close()
            self.env.close()
            self.eval_env.close()
        return result

    def _evaluate(self, step: int, log: CSVLog, result: RunResult, start: float) -> None:
        self._write_run_json()  # compile times are known after the first updates
        ev = evaluate(self.agent, self.eval_env, self.spec.train.eval_episodes)
        log.write({"step": step, "return_mean": ev.return_mean, "return_std": ev.return_std,
                   "episodes": self.spec.train.eval_episodes, "wall_time": time.perf_counter() - start,
                   **ev.diagnostics})
        result.evals.append((step, ev.return_mean, ev.return_std))
        self._checkpoint(step)

    def compile_seconds(self) -> float:
        """Seconds this run's agent spent compiling (first calls of its compiled functions)."""
        return sum(c.compile_seconds for c in self.agent.compiled_functions())

    def _write_run_json(self) -> None:
        """``run.json``: what ``auto`` resolved to on this machine (spec.yaml keeps ``auto``), and
        the compile seconds once known."""
        info = {"preset": self.preset, "runtime": self.runtime.as_dict(),
                "compile_seconds": {c.name: c.compile_seconds for c in self.agent.compiled_functions()
                                    if c.compile_seconds}}
        tmp = self.out / "run.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(self.out / "run.json")

    def _checkpoint(self, step: int) -> None:
        save_checkpoint(self.out / "checkpoint.pt", spec_yaml=self.spec_yaml,
                        agent_state=self.agent.training_state(), step=step)


def _last(result: RunResult) -> str:
    return f"{result.evals[-1][1]:.1f}" if result.evals else "-"


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=0.5,
                smoothing=0.05)
