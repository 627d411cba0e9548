"""The training loop: act -> env.step -> replay.add -> agent.update -> evaluate -> run folder.

A run folder holds ``spec.yaml`` (fully resolved), ``run.json`` (what ``auto`` resolved to, the
run's status), ``eval.csv``, ``train.csv``, ``checkpoint.pt`` (+ ``checkpoint.prev.pt``, the one
before) and ``replay/`` (the buffer's transitions, :mod:`mrsq.replay.store`).

**Exact resume.** A checkpoint is written at every evaluation, every ``train.checkpoint_every``
steps, when ``train.checkpoint_minutes`` have passed since the last one, and when a stop is asked
for. It holds everything the rest of the run depends on: the agent's modules and optimisers, the
replay bookkeeping (its transitions are on disk, written incrementally), every RNG (python,
numpy, torch, the loop's own, the replay's, both environments'), the planner's warm start, the
loop's counters and the partial sums of the next ``train.csv`` row. An episode cut by the
checkpoint is rebuilt by replaying its actions from the RNG state taken before its reset
(:func:`mrsq.envs.base.replay_episode`). So ``Trainer.resume`` continues as if never stopped:
on the same machine and thread count, ``eval.csv`` comes out bit for bit the same as an
uninterrupted run's (except ``wall_time``, which counts this run's own seconds).

**Stopping.** SIGINT (Ctrl-C) and SIGTERM (schedulers, ``timeout``, ``kill``) ask the loop to
stop at the next step boundary (an evaluation in progress is abandoned and redone on resume):
a final checkpoint is written and the CSVs are complete. A second signal stops at once.

**Divergence.** A non-finite training metric or parameter stops the run with
:class:`NonFiniteError` naming the metric and the first step it appeared; no checkpoint is
written after it, so the last one is good. Metrics are checked on the device and read at each
``train.csv`` row and before each checkpoint (no host sync per step).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrsq import registry, specs
from mrsq.agents.base import Agent
from mrsq.envs import Env, make_env
from mrsq.envs.base import replay_episode
from mrsq.planners.base import state_kept
from mrsq.registry import AGENTS
from mrsq.replay import LAPReplay
from mrsq.replay import store
from mrsq.runs import read_run_json
from mrsq.runtime import Runtime
from mrsq.runtime import replay_device
from mrsq.runtime import resolve as resolve_runtime
from mrsq.training import loggers
from mrsq.training import lock as run_lock
from mrsq.training.checkpoint import (CHECKPOINT, CheckpointError, CheckpointWriteError, failpoint,
                                      load_latest, remove_stale_tmp, save_checkpoint)
from mrsq.training.diagnostics import PLANNER_VALUE_COLUMNS, VALUE_COLUMNS, ValueErrorRecorder
from mrsq.training.logging import CSVLog, MetricMeans

EVAL_COLUMNS = ("step", "return_mean", "return_std", "episodes", "wall_time", *VALUE_COLUMNS, "search_divergence",
                *PLANNER_VALUE_COLUMNS)
TRAIN_COLUMNS = ("step", "wall_time", "steps_per_s", "episodes", "episode_return", "reward_scale",
                 "search/divergence")  # then the agent's own METRICS


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or parameter; the message names it and the step."""


class ResumeError(ValueError):
    """A run folder cannot be resumed (one-line message)."""


@dataclass
class RunResult:
    out: Path
    steps: int
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    interrupted: bool = False
    already_complete: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is CUDA when available, unless the environment variable
    ``MRSQ_DEVICE`` (cpu | cuda) pins what ``auto`` means for this process (the test suite pins
    the CPU, so its CPU tests stay CPU tests on a GPU machine); an explicit device always wins."""
    if name == "auto":
        pinned = os.environ.get("MRSQ_DEVICE", "")
        if pinned in ("cpu", "cuda"):
            return torch.device(pinned)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_agent(spec, env: Env, device: torch.device, runtime: Runtime | None = None):
    """The spec's agent on ``device``, with precision and compilation resolved for this machine."""
    runtime = runtime or resolve_runtime(spec.precision, spec.compile, device)
    spec = spec.for_env(env)  # env-dependent defaults (a no-op for a run's already resolved spec)
    check_observations(spec, env)
    try:
        agent = AGENTS.get(spec.type)(spec, env.obs_dim, env.action_dim, runtime=runtime)
    except ValueError as exc:
        if spec.pixel_encoder is None:
            raise
        raise specs.SpecError(f"{env.env_id}: {exc}") from None  # a pixel encoder that does not fit the frames
    if not isinstance(agent, Agent):
        raise TypeError(f"agent {spec.type!r} ({type(agent).__qualname__}) must subclass mrsq.agents.Agent")
    return agent.to(device)


def check_observations(spec, env: Env) -> None:
    """A pixel env needs an agent whose encoder has a conv stack (``encoder.pixels``), and a
    conv stack needs pixels: raise :class:`~mrsq.specs.SpecError` saying which preset fits."""
    pixels = spec.pixel_encoder
    if env.pixels and pixels is None:
        raise specs.SpecError(f"{env.env_id} observes pixels ({'x'.join(map(str, env.obs_shape))} uint8), but agent "
                              f"{spec.type!r} has no pixel encoder: use a latent agent with encoder.pixels "
                              f"(presets mrq_pixels, mrsq_pixels, tdmpc2_pixels, or --set encoder.pixels.type=mrq)")
    if pixels is not None and not env.pixels:
        raise specs.SpecError(f"encoder.pixels ({pixels.type}) encodes images, but {env.env_id} observes a state "
                              f"vector of {env.obs_dim}: use dmcpix:<task> (e.g. dmcpix:cartpole-swingup) or a "
                              f"preset without pixels")


@dataclass
class Evaluation:
    """One evaluation: return statistics and the diagnostics (:mod:`mrsq.training.diagnostics`)."""

    return_mean: float
    return_std: float
    diagnostics: dict[str, float] = field(default_factory=dict)


class EvaluationAborted(Exception):
    """``evaluate``'s ``should_stop`` returned True (the caller restores what it consumed)."""


def evaluate(agent, env: Env, episodes: int, should_stop=None, progress: bool = False) -> Evaluation:
    """``episodes`` deterministic episodes: return mean and std, value error and divergence.

    The planner's warm-start state is saved and restored around the evaluation: an evaluation
    that falls mid-episode must not hand its last plan to the next training action.
    ``should_stop()`` is polled every step; when it returns True the evaluation is abandoned
    (:class:`EvaluationAborted`). ``progress``: a bar over the episodes' steps (``mrsq eval``)."""
    bar = _progress(episodes * env.max_episode_steps, progress, unit_name="eval step")
    try:
        with state_kept(agent.planner):
            return _evaluate_episodes(agent, env, episodes, should_stop, bar)
    finally:
        bar.close()


def _evaluate_episodes(agent, env: Env, episodes: int, should_stop, bar) -> Evaluation:
    returns = []
    recorder = ValueErrorRecorder(agent, agent.spec.discount)
    agent.pop_divergence(explore=False)  # start clean
    for _ in range(episodes):
        obs, done, total, first = env.reset(), False, 0.0, True
        agent.planner.reset()
        terminated = False
        while not done:
            if should_stop is not None and should_stop():
                raise EvaluationAborted
            action = agent.act(obs, explore=False, first=first)
            next_obs, reward, terminated, truncated = env.step(action)
            recorder.step(obs, action, reward)
            obs = next_obs
            total += reward
            first = False
            done = terminated or truncated
            bar.update(1)
        recorder.end_episode(bool(terminated))
        returns.append(total)
        bar.set_postfix(episode=len(returns), ret=f"{total:.1f}", refresh=False)
    diagnostics = recorder.stats()
    diagnostics["search_divergence"] = agent.pop_divergence(explore=False)
    return Evaluation(float(np.mean(returns)), float(np.std(returns)), diagnostics)


@dataclass
class LoopState:
    """The loop's own variables: with the agent, replay, RNGs and envs, all a resume needs."""

    step: int = 0  # environment steps done
    obs: np.ndarray | None = None
    first: bool = True  # obs is the first of its episode
    episodes: int = 0
    ep_return: float = 0.0
    last_return: float = math.nan
    episode_rng: dict | None = None  # the training env's rng_state() just before this episode's reset
    episode_actions: list = field(default_factory=list)  # actions taken in this episode so far
    last_log_step: int = 0
    elapsed: float = 0.0  # wall seconds of the processes before this one
    pending_eval: bool = True  # the evaluation of `step` is still to do (step 0: before training)
    last_eval: list | None = None  # [step, return_mean, return_std]
    checkpoint_step: int = -1  # step of the last checkpoint written (or resumed from)
    warmup: int | None = None  # the warm-up target after a --fresh-replay resume (None: the spec's)

    SCALARS = ("step", "first", "episodes", "ep_return", "last_return", "last_log_step", "elapsed",
               "pending_eval", "last_eval", "checkpoint_step")


def _rng_json(state) -> list:
    """A python or numpy global RNG state tuple as JSON-serialisable values."""
    return [x.tolist() if isinstance(x, (np.ndarray, np.generic)) else list(x) if isinstance(x, tuple) else x
            for x in state]


class Trainer:
    """Runs one spec to completion, writing the run folder as it goes; :meth:`resume` continues
    a run folder exactly where its last checkpoint left it."""

    def __init__(self, spec, out: Path, progress: bool = True, preset: str | None = None,
                 detect_anomaly: bool = False, imports: list[str] | tuple[str, ...] = (),
                 cautions: bool = True) -> None:
        self.spec, self.out, self.progress = spec, Path(out), progress
        self.imports = list(imports)  # user modules the spec's components come from (run.json, checkpoints)
        self.preset = preset  # the preset or YAML file's name, recorded in run.json for plot/compare labels
        self.detect_anomaly = detect_anomaly
        t = spec.train
        loggers.check_available(t.loggers)  # a missing extra is one line before any work
        for line in spec.cautions() if cautions else ():  # once, when the run starts (not per resume)
            print(f"mrsq: warning: {line}", file=sys.stderr)
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed)
        self.device = resolve_device(t.device)
        backend_error = self._choose_render_backend(t)  # before the first env imports MuJoCo
        self.env = make_env(t.env, t.seed)
        self.eval_env = make_env(t.env, t.seed + 100)
        # env-dependent defaults ("auto": TD-MPC2's warm-up, rho) become values here, so spec.yaml,
        # the checkpoints and a resume all hold the values this run used
        self.spec = spec = spec.for_env(self.env)
        self._video_env = self._video_setup(t, backend_error)
        self.runtime = resolve_runtime(spec.precision, spec.compile, self.device)
        self.agent = build_agent(spec, self.env, self.device, self.runtime)
        r = spec.replay
        horizon = self.agent.replay_horizon
        if r.capacity <= horizon:
            raise specs.SpecError(f"replay.capacity ({r.capacity}) must exceed the agent's replay window "
                                  f"({horizon} transitions)")
        capacity = max(min(r.capacity, t.steps), horizon + 1)  # no larger than the run needs
        storage = LAPReplay.storage_bytes(self.env.obs_dim, self.env.action_dim, capacity, self.env.frame_stack,
                                          horizon)
        _check_memory(storage, capacity, _activation_bytes(self.agent, spec.batch_size, horizon), spec.batch_size)
        self.replay = LAPReplay(self.env.obs_dim, self.env.action_dim, capacity=capacity,
                                horizon=horizon, alpha=r.alpha,
                                min_priority=r.min_priority, prioritized=r.prioritized, seed=t.seed,
                                device=replay_device(self.device, storage), frame_stack=self.env.frame_stack)
        self.rng = np.random.default_rng(t.seed)
        self.spec_yaml = specs.to_yaml(spec)
        self.state = LoopState()
        self.means = MetricMeans()
        self.resumed_from: Path | None = None
        self.resumes = 0
        self._segments: list[list[int]] = []  # replay segments the last checkpoint lists
        self._previous_segments: list[list[int]] = []  # ... and the one before (kept as a fallback)
        self._saved_added = 0  # replay transitions already on disk
        self._writes = 0  # checkpoints written by this process (for MRSQ_FAILPOINT)
        self._stop_signal: int | None = None
        self._lock: run_lock.RunLock | None = None  # this process's claim on the run folder
        self.fresh_replays: list[dict] = []  # --fresh-replay resumes of this run (run.json)

    # ------------------------------------------------------------------------------ resuming
    @classmethod
    def resume(cls, out: Path, progress: bool = True, detect_anomaly: bool = False, warn=None,
               fresh_replay: int | None = None) -> "Trainer":
        """A Trainer for run folder ``out``, restored from its newest usable checkpoint (falling
        back to ``checkpoint.prev.pt`` with a one-line warning when the newest is damaged).

        ``fresh_replay=N``: continue from the newest checkpoint whose weights, optimisers and loop
        state load, with an *empty* replay buffer refilled by N random warm-up steps before
        updates resume (for a run whose replay segments are damaged or lost). The run is then no
        longer an exact continuation: a warning says so and run.json records it."""
        out = Path(out)
        warn = warn or (lambda line: print(f"mrsq: warning: {line}", file=sys.stderr))
        if not out.is_dir():
            raise ResumeError(f"--resume {out}: no such run folder")
        lock = run_lock.acquire(out, warn)  # before anything below writes (a corrupt checkpoint's rename)
        try:
            info = read_run_json(out)
            imports = list(info.get("imports") or [])
            registry.import_modules(imports)  # the run's own components, recorded when it started
            validate = _validate_resumable if fresh_replay is None else _validate_resume_state
            payload, path = load_latest(out, validate=validate, warn=warn)
            spec = specs.from_yaml(payload["spec"], where=f"{path} (spec)")
            trainer = cls(spec, out, progress=progress, preset=info.get("preset"), detect_anomaly=detect_anomaly,
                          imports=imports, cautions=False)
            trainer.resumes = int(info.get("resumes", 0)) + 1
            trainer.fresh_replays = list(info.get("fresh_replay") or [])
            trainer._restore(payload, path, warn, fresh_replay)
        except BaseException:
            lock.release()
            raise
        trainer._lock = lock  # released when its run() ends
        return trainer

    def _restore(self, payload: dict, path: Path, warn, fresh_replay: int | None = None) -> None:
        resume = payload["resume"]
        try:
            self.agent.load_training_state(payload["agent"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise ResumeError(f"{path}: agent state does not match its spec ({str(exc).splitlines()[0][:200]})") from None
        loop = json.loads(resume["loop"])
        tensors = resume["tensors"]
        s = self.state
        for key in LoopState.SCALARS:
            setattr(s, key, loop[key])
        s.last_return = math.nan if s.last_return is None else s.last_return
        s.warmup = loop.get("warmup")  # absent in checkpoints written before --fresh-replay existed
        s.checkpoint_step = int(payload["step"])
        if fresh_replay is None:
            # replay: bookkeeping from the checkpoint, transitions from the segments beside it
            self.replay.load_state_dict(resume["replay"], arrays=False)
            self._segments = [list(x) for x in loop["segments"]]
            self._previous_segments = list(self._segments)
            store.load(self.replay, self.out / store.FOLDER, self._segments)
        else:
            # an empty buffer (its first segment is written from transition 0 at the next
            # checkpoint; the old segments are collected then), refilled by `fresh_replay` warm-up
            # steps; whether the env terminates is known already (it decides MR.Q's loss terms)
            self.replay._env_terminates = bool(resume["replay"]["env_terminates"])
            s.warmup = int(fresh_replay)
            self.fresh_replays.append({"step": s.step, "refill": int(fresh_replay)})
            warn(f"{self.out}: resuming at step {s.step} with a fresh replay buffer ({fresh_replay} warm-up steps "
                 "before updates resume): this run is no longer an exact continuation (run.json records it)")
        self._saved_added = self.replay.num_added
        # RNGs
        rng = loop["rng"]
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        np.random.set_state((rng["numpy"][0], np.asarray(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
        self.rng.bit_generator.state = rng["loop"]
        torch.set_rng_state(tensors["torch_rng"])
        if "cuda_rng" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(tensors["cuda_rng"]))
        # agent state that is not in its checkpointable modules
        for buf, value in zip(self.agent.planner.buffers(), tensors["planner"]):
            buf.copy_(value)
        self.agent.divergence_sums.copy_(tensors["divergence_sums"])
        self.agent._divergence_counts = list(loop["divergence_counts"])
        self.means.load_state_dict(tensors["metric_sums"], self.device)
        # environments: the eval env is always between episodes at a checkpoint; the training
        # env is rebuilt by replaying the cut episode
        self.eval_env.set_rng_state(loop["eval_env_rng"])
        s.episode_rng = loop["episode_rng"]
        s.episode_actions = list(tensors["episode_actions"].numpy())
        saved_obs = tensors["obs"].numpy()
        obs = replay_episode(self.env, s.episode_rng, s.episode_actions)
        # bitwise (NaNs and -0.0 compare exactly); a checkpoint's obs has the env's dtype
        if np.asarray(obs).tobytes() != np.asarray(saved_obs, np.asarray(obs).dtype).tobytes():
            warn(f"{self.spec.train.env}: replaying the cut episode ({len(s.episode_actions)} steps) did not reach "
                 "the checkpoint's observation bit for bit (another simulator build or machine?); continuing "
                 "from the replayed state, so this run is no longer an exact continuation")
        s.obs = obs
        self.resumed_from = path

    # ------------------------------------------------------------------------------ the loop
    def run(self, callback=None) -> RunResult:
        """Train to ``train.steps`` (or until stopped). ``callback(event: dict)`` is called with
        every train.csv row (``event["kind"] == "train"``) and every evaluation (``"eval"``), the
        row's columns included; returning ``False`` stops the run as SIGTERM does (final
        checkpoint, complete CSVs, resumable), e.g. for early stopping."""
        self._callback = callback
        self.out.mkdir(parents=True, exist_ok=True)
        if self._lock is None:  # one writer per run folder (RunLockedError before any write)
            self._lock = run_lock.acquire(self.out, lambda line: print(f"mrsq: warning: {line}", file=sys.stderr))
        try:
            return self._run()
        finally:
            self._lock.release()
            self._lock = None

    def _run(self) -> RunResult:
        t, s = self.spec.train, self.state
        fresh = self.resumed_from is None
        if fresh:
            (self.out / "spec.yaml").write_text(self.spec_yaml)
        elif s.step >= t.steps and not s.pending_eval:
            self._write_run_json("done")
            return RunResult(self.out, s.step, [tuple(s.last_eval)] if s.last_eval else [], already_complete=True)
        resume_at = None if fresh else s.step
        eval_log = CSVLog(self.out / "eval.csv", EVAL_COLUMNS, resume_at=resume_at)
        train_log = CSVLog(self.out / "train.csv", (*TRAIN_COLUMNS, *self.agent.METRICS), resume_at=resume_at)
        self._loggers = loggers.Loggers(t.loggers, self.out, self.spec.model_dump(mode="json"), resume_at,
                                        t.wandb_project)
        result = RunResult(self.out, s.step)
        if s.last_eval:
            result.evals.append(tuple(s.last_eval))
        remove_stale_tmp(self.out)
        self._write_run_json("running")
        bar = _progress(t.steps, self.progress, initial=s.step)
        self._start = time.perf_counter() - s.elapsed
        self._last_checkpoint_time = time.monotonic()
        last_log_time = time.perf_counter()
        sps = "-"  # the current steps/s (over the last second or more), shown on the progress bar
        rate_step, rate_time = s.step, time.perf_counter()
        if fresh:
            s.episode_rng = self._env_rng(self.env)
            s.obs, s.first = self.env.reset(), True
            self.agent.planner.reset()
        previous_handlers = self._catch_stop_signals()
        anomaly = torch.autograd.set_detect_anomaly(self.detect_anomaly) if self.detect_anomaly else None
        status = "failed"
        try:
            checkpoint_due = False
            while True:
                if self._stop_signal is not None:
                    self._checkpoint("interrupted")
                    result.interrupted = True
                    status = "interrupted"
                    break
                if s.pending_eval:
                    if not self._evaluate(eval_log, result):
                        continue  # abandoned for a stop: checkpointed (evaluation still pending) above
                    bar.set_postfix(sps=sps, eval=_last(result), refresh=False)
                    checkpoint_due = True
                if checkpoint_due or (t.checkpoint_minutes and
                                      time.monotonic() - self._last_checkpoint_time >= 60 * t.checkpoint_minutes):
                    self._checkpoint("done" if s.step >= t.steps else "running")
                    checkpoint_due = False
                if s.step >= t.steps:
                    status = "done"
                    break
                if self._stop_signal is not None:
                    continue  # asked during the evaluation or checkpoint just done: stop before stepping
                step = s.step + 1
                failpoint("step", step)
                self._env_step(step)
                s.step = step
                if step % t.log_every == 0 or step == t.steps:  # and a last row for the run's final steps
                    now = time.perf_counter()
                    row = {"step": step, "wall_time": now - self._start, "episodes": s.episodes,
                           "steps_per_s": (step - s.last_log_step) / max(now - last_log_time, 1e-9),
                           "episode_return": s.last_return, "reward_scale": float(self.agent.reward_scale),
                           "search/divergence": self.agent.pop_divergence(explore=True)}
                    bad = self.means.first_nonfinite()
                    row.update(self.means.pop())
                    train_log.write(row)
                    self._loggers.log("train", row, step)
                    self._notify("train", row)
                    if bad is not None:
                        raise self._nonfinite(f"{bad[0]} = {row.get(bad[0])}", bad[1])
                    s.last_log_step, last_log_time = step, now
                if step % t.eval_every == 0 or step == t.steps:
                    s.pending_eval = True
                if t.checkpoint_every and step % t.checkpoint_every == 0:
                    checkpoint_due = True
                bar.update(1)
                if self.progress and step - rate_step >= 20:
                    now = time.perf_counter()
                    if now - rate_time >= 1.0:  # the rate now, not the warm-up's
                        sps = f"{(step - rate_step) / (now - rate_time):.1f}"
                        rate_step, rate_time = step, now
                        bar.set_postfix(sps=sps, eval=_last(result), refresh=False)
            result.steps = s.step
        except NonFiniteError:
            status = "diverged"
            raise
        except KeyboardInterrupt:  # a second signal: stop now, without a checkpoint
            result.interrupted, result.steps, status = True, s.step, "interrupted"
        finally:
            self._restore_signals(previous_handlers)
            if anomaly is not None:
                torch.autograd.set_detect_anomaly(False)
            bar.close()
            eval_log.close()
            train_log.close()
            self._loggers.close()
            self.env.close()
            self.eval_env.close()
            if self._video_env is not None:
                self._video_env.close()
            self._write_run_json(status)
        return result

    def _env_step(self, step: int) -> None:
        """One environment step (random actions during warm-up), its replay add and update."""
        s, spec = self.state, self.spec
        warmup = spec.warmup_steps if s.warmup is None else s.warmup
        if self.replay.size < warmup:
            action = self.rng.uniform(-1, 1, self.env.action_dim).astype(np.float32)
        else:
            action = self.agent.act(s.obs, explore=True, first=s.first)
        next_obs, reward, terminated, truncated = self.env.step(action)
        self.replay.add(s.obs, action, reward, next_obs, terminated, truncated)
        s.episode_actions.append(action)
        s.ep_return += reward
        s.obs, s.first = next_obs, False
        if terminated or truncated:
            s.episodes, s.last_return, s.ep_return = s.episodes + 1, s.ep_return, 0.0
            s.episode_rng, s.episode_actions = self._env_rng(self.env), []
            s.obs, s.first = self.env.reset(), True
            self.agent.planner.reset()
        if self.replay.size > warmup:
            try:
                metrics = self.agent.update(self.replay)
            except Exception:
                # an earlier non-finite loss (NaN priorities, NaN actions) is the cause to report
                bad = self.means.first_nonfinite()
                if bad is not None:
                    raise self._nonfinite(bad[0], bad[1]) from None
                raise
            self.means.add(metrics, step)
            if self.detect_anomaly:  # debugging: find the exact step (a host sync per step)
                bad = self.means.first_nonfinite()
                if bad is not None:
                    raise self._nonfinite(bad[0], bad[1])

    @staticmethod
    def _env_rng(env: Env) -> dict | None:
        try:
            return env.rng_state()
        except NotImplementedError:
            return None  # trains normally; only --resume will refuse this run

    def _evaluate(self, log: CSVLog, result: RunResult) -> bool:
        """Evaluate at the current step; False if a stop signal abandoned it (what it consumed of
        the eval env's and torch's RNGs is given back, so the redone evaluation is the same)."""
        s = self.state
        self._write_run_json("running")  # compile times are known after the first updates
        env_rng, torch_rng = self._env_rng(self.eval_env), torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        try:
            ev = evaluate(self.agent, self.eval_env, self.spec.train.eval_episodes,
                          should_stop=lambda: self._stop_signal is not None)
        except EvaluationAborted:
            if env_rng is not None:
                self.eval_env.set_rng_state(env_rng)
            torch.set_rng_state(torch_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            return False
        row = {"step": s.step, "return_mean": ev.return_mean, "return_std": ev.return_std,
               "episodes": self.spec.train.eval_episodes, "wall_time": time.perf_counter() - self._start,
               **ev.diagnostics}
        log.write(row)
        self._loggers.log("eval", row, s.step)
        self._record_video(s.step)
        s.last_eval = [s.step, ev.return_mean, ev.return_std]
        result.evals.append((s.step, ev.return_mean, ev.return_std))
        s.pending_eval = False
        self._notify("eval", row)
        return True

    @staticmethod
    def _choose_render_backend(t):
        """With videos asked for, settle MuJoCo's GL backend now (it reads ``MUJOCO_GL`` once, when
        the first env imports it); the :class:`mrsq.render.RenderError` if there is none, else None."""
        if not t.video_every:
            return None
        from mrsq.render import RenderError, ensure_backend

        try:
            ensure_backend()
        except RenderError as exc:
            return exc
        return None

    def _video_setup(self, t, backend_error):
        """The env videos are recorded on (its own instance and seed), or None: no videos asked
        for, or no renderer (``backend_error``, or a GL context that cannot be made), which is a
        warning before any work (training goes on without them)."""
        if not t.video_every:
            return None
        from mrsq.render import FrameRenderer, RenderError

        env, problem = make_env(t.env, t.seed + 200), backend_error
        if problem is None:
            try:
                FrameRenderer(env, t.video_size).close()  # a renderer now: a GL context that fails shows here
            except RenderError as exc:
                problem = exc
        if problem is not None:
            env.close()
            print(f"mrsq: warning: train.video_every={t.video_every} but {problem}; training without videos",
                  file=sys.stderr)
            return None
        return env

    def _record_video(self, step: int) -> None:
        """After an evaluation: one recorded episode every ``video_every`` evaluations (by the
        evaluation's index, so a resumed run keeps the schedule). It restores the torch RNG and
        the planner's state, so the run is the same with and without videos."""
        t = self.spec.train
        if self._video_env is None or (step // t.eval_every) % t.video_every:
            return
        from mrsq.render import RenderError, record_episode

        path = self.out / "videos" / f"step_{step}.mp4"
        try:
            record_episode(self.agent, self._video_env, path, t.video_size)
        except RenderError as exc:
            print(f"mrsq: warning: video at step {step} failed ({exc}); no more videos in this run", file=sys.stderr)
            self._video_env.close()
            self._video_env = None
            return
        self._loggers.video(path, step)

    def _notify(self, kind: str, row: dict) -> None:
        if getattr(self, "_callback", None) is not None and self._callback({"kind": kind, **row}) is False:
            self.request_stop()

    # ------------------------------------------------------------------------------ checkpoints
    def _nonfinite(self, what: str, step: int) -> NonFiniteError:
        s = self.state
        kept = (f"the last good checkpoint is {self.out / CHECKPOINT} (step {s.checkpoint_step})"
                if s.checkpoint_step >= 0 else "no checkpoint was written before it")
        return NonFiniteError(f"non-finite {what} at step {step}; the run stopped and {kept}. Lower the learning "
                              "rates or clip gradients; --detect-anomaly names the operation")

    def _check_finite(self) -> None:
        """Raise :class:`NonFiniteError` rather than checkpoint a broken agent (one host sync)."""
        bad = self.means.first_nonfinite()
        if bad is not None:
            raise self._nonfinite(bad[0], bad[1])
        names = [n for n in self.agent.MODULES if any(True for _ in getattr(self.agent, n).parameters())]
        # one fused norm per module (3 ms for MR.Q's 7M parameters; isfinite() is 50x slower): a
        # norm is non-finite iff an element is, or the parameters exceed ~1e19, broken either way
        flags = [torch.stack(torch._foreach_norm([p.detach() for p in getattr(self.agent, n).parameters()]))
                 .isfinite().all() for n in names]
        if flags and not bool(torch.stack(flags).all()):
            broken = [n for n, f in zip(names, flags) if not bool(f)]
            raise self._nonfinite(f"parameters in {', '.join(broken)}", self.state.step)

    def _checkpoint(self, status: str) -> None:
        """Write the checkpoint of the current step (see the module docstring)."""
        s = self.state
        self._check_finite()
        self._writes += 1
        folder = self.out / store.FOLDER
        try:
            segment = store.write_segment(self.replay, folder, self._saved_added)
        except OSError as exc:
            raise CheckpointWriteError(f"cannot write replay segment in {folder}: {exc.strerror or exc}; "
                                       f"the previous checkpoint is intact") from None
        segments = store.needed(self._segments + ([segment] if segment else []),
                                self.replay.num_added, self.replay.capacity)
        s.elapsed = time.perf_counter() - self._start
        save_checkpoint(self.out / CHECKPOINT, spec_yaml=self.spec_yaml, agent_state=self.agent.training_state(),
                        step=s.step, resume=self._resume_state(segments), keep_previous=True,
                        extra={"obs_dim": self.env.obs_dim, "action_dim": self.env.action_dim,
                               "imports": self.imports},
                        write_number=self._writes)
        self._previous_segments, self._segments = self._segments, segments
        self._saved_added = self.replay.num_added
        s.checkpoint_step = s.step
        store.collect_garbage(folder, [self._segments, self._previous_segments])
        self._last_checkpoint_time = time.monotonic()
        self._write_run_json(status)

    def _resume_state(self, segments: list[list[int]]) -> dict:
        s = self.state
        loop = {key: getattr(s, key) for key in LoopState.SCALARS}
        loop["warmup"] = s.warmup
        loop["last_return"] = None if math.isnan(s.last_return) else s.last_return
        loop.update(
            segments=segments, episode_rng=s.episode_rng, eval_env_rng=self._env_rng(self.eval_env),
            divergence_counts=list(self.agent._divergence_counts),
            rng={"python": _rng_json(random.getstate()), "numpy": _rng_json(np.random.get_state()),
                 "loop": self.rng.bit_generator.state})
        actions = (np.stack(s.episode_actions) if s.episode_actions
                   else np.zeros((0, self.env.action_dim), np.float32))
        tensors = {"obs": torch.from_numpy(np.asarray(s.obs, self.env.obs_dtype).copy()),
                   "episode_actions": torch.from_numpy(actions.astype(np.float32)),
                   "torch_rng": torch.get_rng_state(),
                   "planner": [b.detach().cpu().clone() for b in self.agent.planner.buffers()],
                   "divergence_sums": self.agent.divergence_sums.detach().cpu().clone(),
                   "metric_sums": self.means.state_dict()}
        if self.device.type == "cuda":
            tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
        # JSON for the plain values: numpy/python RNG states hold integers beyond int64
        return {"loop": json.dumps(loop), "tensors": tensors, "replay": self.replay.bookkeeping_state()}

    # ------------------------------------------------------------------------------ signals
    def _catch_stop_signals(self):
        """SIGINT/SIGTERM set a flag the loop reads at the next step boundary (the checkpoint
        then describes a consistent state); a second one raises KeyboardInterrupt at once."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum
            print(f"\nmrsq: {signal.Signals(signum).name}: stopping at the next step with a final checkpoint "
                  "(signal again to stop at once, losing the steps since the last checkpoint)", file=sys.stderr)

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous) -> None:
        for sig, handler in (previous or {}).items():
            signal.signal(sig, handler)

    def request_stop(self) -> None:
        """Ask the loop to stop at the next step boundary, as SIGTERM does (tests, embedding code)."""
        self._stop_signal = signal.SIGTERM

    # ------------------------------------------------------------------------------ run.json
    def compile_seconds(self) -> float:
        """Seconds this run's agent spent compiling (first calls of its compiled functions)."""
        return sum(c.compile_seconds for c in self.agent.compiled_functions())

    def _write_run_json(self, status: str) -> None:
        """``run.json``: what ``auto`` resolved to on this machine (spec.yaml keeps ``auto``), the
        compile seconds once known, and the run's status (``running``, ``interrupted``, ``done``,
        ``diverged``, ``failed``) with the step of its last checkpoint."""
        info = {"preset": self.preset, "imports": self.imports, "status": status, "step": self.state.checkpoint_step,
                "steps": self.spec.train.steps, "resumes": self.resumes, "runtime": self.runtime.as_dict(),
                "compile_seconds": {c.name: c.compile_seconds for c in self.agent.compiled_functions()
                                    if c.compile_seconds}}
        if self.fresh_replays:  # not an exact continuation from these steps on
            info["fresh_replay"] = self.fresh_replays
        tmp = self.out / "run.json.tmp"
        try:
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            tmp.replace(self.out / "run.json")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if status == "running":
                raise CheckpointWriteError(f"cannot write {self.out / 'run.json'}: {exc.strerror or exc}") from None


def available_memory_bytes() -> int | None:
    """Memory the OS could give this process now (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _activation_bytes(agent, batch_size: int, horizon: int) -> int:
    """A rough upper estimate of an update's activation memory: every layer's output (a plain
    ``Linear``'s ``out_features``; a vectorized ensemble's ``members x out`` from its 3-D weight)
    kept for the backward pass, about 3 tensors per layer (pre-activation, activation, norm), for
    ``batch_size x horizon`` samples in fp32. An estimate, used only to refuse absurd batch sizes
    before training rather than to be killed by the OS in the middle of it."""
    floats = sum(m.out_features for m in agent.modules() if isinstance(m, torch.nn.Linear))
    floats += sum(p.shape[0] * p.shape[-1] for p in agent.parameters() if p.dim() == 3)
    return 3 * 4 * batch_size * horizon * floats


def _check_memory(replay_bytes: int, capacity: int, activation_bytes: int = 0, batch_size: int = 0) -> None:
    """A replay buffer (or a batch) that cannot fit is a one-line error before it is allocated
    (and before the warm-up), not an out-of-memory kill an hour later."""
    available = available_memory_bytes()
    if available is None:
        return
    if replay_bytes > 0.9 * available:
        raise specs.SpecError(f"replay.capacity: {capacity} transitions of this env need {replay_bytes / 2**30:.1f} "
                              f"GiB, but {available / 2**30:.1f} GiB of memory is available; lower replay.capacity "
                              "or train.steps")
    if replay_bytes + activation_bytes > 0.9 * available:
        raise specs.SpecError(f"batch_size: {batch_size} samples need about {activation_bytes / 2**30:.1f} GiB of "
                              f"activations per update (estimate) beside the replay's {replay_bytes / 2**30:.1f} GiB, "
                              f"but {available / 2**30:.1f} GiB of memory is available; lower batch_size")


def _validate_resume_state(payload: dict, path: Path) -> None:
    """Reject (CheckpointError) a checkpoint without resume state (replay segments not checked:
    ``--fresh-replay`` starts an empty buffer)."""
    if "resume" not in payload:
        raise CheckpointError(f"{path}: written by an mrsq without resume state (evaluate it with mrsq eval)")


def _validate_resumable(payload: dict, path: Path) -> None:
    """Reject (CheckpointError) a checkpoint that cannot be resumed: written without resume
    state, or whose replay segments are missing or damaged."""
    _validate_resume_state(payload, path)
    try:
        loop = json.loads(payload["resume"]["loop"])
        segments = loop["segments"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: damaged resume state") from None
    problem = store.check(path.parent / store.FOLDER, segments)
    if problem:
        raise CheckpointError(f"{path}: {problem} (--fresh-replay continues from its weights with an empty buffer)")


def _last(result: RunResult) -> str:
    return f"{result.evals[-1][1]:.1f}" if result.evals else "-"


def _progress(total: int, enabled: bool, initial: int = 0, unit_name: str = "step"):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit_name, dynamic_ncols=True,
                mininterval=0.5, smoothing=0.05)
