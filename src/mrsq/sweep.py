"""``mrsq sweep SWEEP.yaml``: presets x envs x seeds (x a grid of overrides), each run a Ray task.

The sweep file (validated before anything starts; unknown fields are errors)::

    presets: [mrq_small, mrsq_small, variants/my_variant.yaml]  # names or YAML paths (relative to this file)
    envs: [dmc:cartpole-swingup, gym:Hopper-v5]
    seeds: [0, 1, 2]                      # or n, meaning 0..n-1
    set: {train.steps: 20000}             # overrides of every run (keys as in `mrsq train --set`)
    grid: {critic.num_members: [2, 10]}   # optional: every combination is a variant
    resources: {cpus: 1, gpus: 0}         # what each run asks Ray for; its torch threads = cpus
    retries: 2                            # a failed run is resumed this many times
    out: runs/sweep                       # relative to the current folder; --out wins
    imports: [my_pkg.components]          # modules registering your own components (as --import)

Each run is an ordinary ``mrsq train`` run folder, ``OUT/<env>/<variant>/seed<k>/``, where
``<env>`` is the env id with ``:`` and ``/`` replaced by ``-`` and ``<variant>`` the preset name
(or YAML file stem) followed by ``__key=value`` for each grid key. The task runs ``mrsq train`` in
a subprocess, so a crash cannot take a Ray worker down. Rerunning the sweep skips complete runs,
resumes interrupted or failed ones from their checkpoint, and starts the others afresh.
``OUT/sweep.json`` lists the runs and how they ended, for scripts; ``mrsq plot OUT`` and
``mrsq compare OUT`` read the folder directly.

``imports`` are imported and contract-checked before anything starts (as ``mrsq train --import``
does), and every run gets ``--import`` for each. The runs' ``PYTHONPATH`` starts with the folder
each module was found in, so a module found through ``PYTHONPATH=.`` is still found by a Ray
worker that runs in another folder.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mrsq.runs import read_run_json
from mrsq.specs import SpecError

SWEEP_JSON = "sweep.json"
LOG_FILE = "sweep.log"  # the run's mrsq train output, appended per attempt (not a file mrsq train writes)
STDERR_TAIL = 20  # lines of a run's stderr kept for its error report
STOP_GRACE_S = 120  # how long a stopped run may take to write its final checkpoint before SIGKILL

# `mrsq train` exit codes (mrsq.cli)
EXIT_OK, EXIT_USER, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130

# what `mrsq train` writes in a run folder: removed (and nothing else) before a fresh start
TRAIN_FILES = ("eval.csv", "train.csv", "spec.yaml", "run.json", "run.json.tmp")
TRAIN_GLOBS = ("checkpoint*",)
TRAIN_DIRS = ("replay",)

# keys the sweep sets itself
RESERVED = {"train.env": "envs", "train.seed": "seeds", "train.threads": "resources.cpus"}


class SweepError(SpecError):
    """A user-caused problem with a sweep file or its output folder (one line naming file and
    field). A :class:`~mrsq.specs.SpecError`, so the CLI reports it like a bad spec (status 2)."""


# ---------------------------------------------------------------------------------- the file
class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpus: int = Field(1, ge=1, description="CPUs per run; also the run's torch threads")
    gpus: float = Field(0, ge=0, description="GPUs per run (fractions share a GPU)")


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    presets: list[str] = Field(min_length=1)
    envs: list[str] = Field(min_length=1)
    seeds: Union[int, list[int]] = 1
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(2, ge=0)
    out: str | None = None
    imports: list[str] = Field(default_factory=list)


def _value(value: Any) -> str:
    """A YAML value as the text of a ``--set key=value`` (read back with yaml.safe_load)."""
    if isinstance(value, str) and value and yaml.safe_load(value) == value and "\n" not in value:
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("...").strip()


def _dirname(text: str) -> str:
    """Text usable as one folder name."""
    return text.replace(":", "-").replace("/", "-").replace(os.sep, "-").replace(" ", "")


@dataclass
class Run:
    folder: str  # relative to OUT: <env>/<variant>/seed<k>
    path: Path  # absolute
    preset: str  # as written in the sweep file
    source: str  # what `mrsq train` gets: a preset name or an absolute YAML path
    variant: str  # preset name or file stem + grid suffix: the label plot/compare use
    env: str
    seed: int
    overrides: list[str]  # set + grid (not env, seed, threads)
    steps: int  # train.steps
    start: str = "fresh"  # what the run would do now: fresh, resume, skip, diverged
    state: str = "pending"
    attempts: int = 0
    error: str | None = None
    step: int = 0
    last_return: float | None = None
    resumes: int = 0

    def record(self) -> dict:
        return {"folder": self.folder, "variant": self.variant, "preset": self.preset, "source": self.source,
                "env": self.env, "seed": self.seed, "overrides": self.overrides, "steps": self.steps,
                "state": self.state, "attempts": self.attempts, "error": self.error}


@dataclass
class Sweep:
    file: Path
    config: SweepFile
    out: Path
    runs: list[Run] = field(default_factory=list)
    import_roots: list[str] = field(default_factory=list)  # where the imports were found


def _import_root(module: str) -> str | None:
    """The ``sys.path`` folder ``module`` (already imported) was found in; None if not a file."""
    origin = getattr(sys.modules.get(module), "__file__", None)
    if not origin:
        return None
    depth = len(module.split(".")) - (0 if Path(origin).name == "__init__.py" else 1)
    return str(Path(origin).resolve().parents[depth])


def _load_imports(file: Path, config: SweepFile) -> list[str]:
    """Import and contract-check ``imports``; return the folders they were found in."""
    from mrsq.errors import UsageError, import_checked
    from mrsq.registry import RegistryError

    roots = []
    for i, module in enumerate(config.imports):
        try:
            import_checked([module])
        except (UsageError, RegistryError, SpecError) as exc:
            raise _error(file, f"imports[{i}]", str(exc)) from None
        root = _import_root(module)
        if root is not None:
            roots.append(root)
    return list(dict.fromkeys(roots))


def _error(file: Path, where: str, message: str) -> SweepError:
    return SweepError(f"{file}: {where}: {message}")


def load_sweep(file: str | Path, out: str | Path | None = None) -> Sweep:
    """Read, validate and expand a sweep file: every preset loads with its overrides on every env."""
    from mrsq import specs
    from mrsq.envs import EnvError, make_env, parse_env_id
    from mrsq.registry import RegistryError

    file = Path(file)
    try:
        data = specs.read_yaml(file)
    except SpecError as exc:
        raise SweepError(str(exc)) from None
    try:
        config = SweepFile.model_validate(data)
    except ValidationError as exc:
        raise SweepError(f"{file}: {specs.format_validation_error(exc, SweepFile, data)}") from None

    if isinstance(config.seeds, int):
        if config.seeds < 1:
            raise _error(file, "seeds", f"a number of seeds must be at least 1 (got {config.seeds})")
        seeds = list(range(config.seeds))
    else:
        seeds = config.seeds
        if not seeds:
            raise _error(file, "seeds", "empty list")
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise _error(file, "seeds", f"seeds must be distinct and >= 0 (got {seeds})")
    for section in ("set", "grid"):
        for key in getattr(config, section):
            if key in RESERVED:
                raise _error(file, f"{section}.{key}", f"set by the sweep itself; use {RESERVED[key]}")
            if not key or any(not part for part in key.split(".")):
                raise _error(file, f"{section}.{key}", "bad key (expected a dotted path like critic.num_members)")
    for key, values in config.grid.items():
        if not values:
            raise _error(file, f"grid.{key}", "empty list of values")
        if key in config.set:
            raise _error(file, f"grid.{key}", "also in set; give it in one of them")

    import_roots = _load_imports(file, config)  # before the presets: they may name these components

    env_dirs: dict[str, str] = {}
    for i, env in enumerate(config.envs):
        try:
            parse_env_id(env)
            make_env(env, 0).close()  # the task itself (an unknown gym id, a dm_control typo), before Ray
        except EnvError as exc:
            raise _error(file, f"envs[{i}]", str(exc)) from None
        name = _dirname(env)
        if name in env_dirs:
            raise _error(file, f"envs[{i}]", f"{env!r} and {env_dirs[name]!r} share the folder name {name!r}")
        env_dirs[name] = env

    sources: list[tuple[str, str, str]] = []  # (as written, source for mrsq train, name)
    for i, preset in enumerate(config.presets):
        if preset.endswith((".yaml", ".yml")) or "/" in preset or os.sep in preset:
            path = Path(preset) if Path(preset).is_absolute() else file.parent / preset
            if not path.is_file():
                raise _error(file, f"presets[{i}]", f"no such file {str(path)!r}")
            sources.append((preset, str(path.resolve()), path.stem))
        else:
            sources.append((preset, preset, preset))
    names = [name for _, _, name in sources]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise _error(file, f"presets[{i}]", f"{config.presets[i]!r} has the same name {name!r} as "
                                                 f"{config.presets[names.index(name)]!r}; rename one")

    base = [f"{k}={_value(v)}" for k, v in config.set.items()]
    variants: list[tuple[str, list[str]]] = []  # (suffix, overrides)
    keys = list(config.grid)
    for combo in itertools.product(*(config.grid[k] for k in keys)):
        pairs = [(k, _value(v)) for k, v in zip(keys, combo)]
        variants.append(("".join(f"__{_dirname(k)}={_dirname(v)}" for k, v in pairs),
                         [f"{k}={v}" for k, v in pairs]))
    if len({s for s, _ in variants}) != len(variants):
        raise _error(file, "grid", "two combinations give the same folder name; use distinct values")

    cpus = config.resources.cpus
    out_dir = Path(out or config.out or Path("runs") / file.stem).resolve()
    sweep = Sweep(file, config, out_dir, import_roots=import_roots)
    for env in config.envs:
        for i, (written, source, name) in enumerate(sources):
            for suffix, grid_overrides in variants:
                overrides = base + grid_overrides
                for seed in seeds:
                    try:
                        spec = specs.load(source, [*overrides, f"train.env={env}", f"train.seed={seed}",
                                                   f"train.threads={cpus}"])
                    except (SpecError, RegistryError) as exc:
                        where = f"presets[{i}]" + (f" with {', '.join(overrides)}" if overrides else "")
                        raise _error(file, where, str(exc)) from None
                    if not config.resources.gpus and str(spec.train.device).startswith("cuda"):
                        raise _error(file, "resources.gpus", f"0, but {name}{suffix} sets train.device: "
                                                             f"{spec.train.device}; ask for a GPU per run")
                    folder = f"{_dirname(env)}/{name}{suffix}/seed{seed}"
                    run = Run(folder, out_dir / folder, written, source, name + suffix, env, seed, overrides,
                              spec.train.steps)
                    run.start = _start_state(run, specs.to_dict(spec))
                    sweep.runs.append(run)
    return sweep


# ---------------------------------------------------------------------------------- run folders


def is_complete(path: Path) -> bool:
    return read_run_json(path).get("status") == "done" and (path / "checkpoint.pt").is_file()


def is_resumable(path: Path) -> bool:
    return not is_complete(path) and any((path / c).is_file() for c in ("checkpoint.pt", "checkpoint.prev.pt"))


def _start_state(run: Run, expected: dict) -> str:
    """fresh, resume, skip (complete) or diverged (stopped by a non-finite loss: rerunning it would
    diverge again; delete the folder to retry). Refuses a folder holding a run of another spec."""
    path = run.path
    if not (is_complete(path) or is_resumable(path)):
        return "fresh"
    spec_file = path / "spec.yaml"
    if spec_file.is_file():
        try:
            found = yaml.safe_load(spec_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            found = None
        if isinstance(found, dict):
            expected = yaml.safe_load(yaml.safe_dump(expected))  # the same value types as the file
            # the description is words, not settings (and a variant's is derived, so it changes
            # with how mrsq words it): never a reason to refuse a run folder
            diff = [d for d in _differences(expected, found) if not d.startswith("description")]
            if diff:
                raise SweepError(f"{path}: holds a run of another spec ({'; '.join(diff[:3])}); delete the folder "
                                 "or give another --out")
    if is_complete(path):
        return "skip"
    if read_run_json(path).get("status") == "diverged":
        return "diverged"
    return "resume"


def _differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (keys present on one side only are ignored: fields added
    or removed by another mrsq version)."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in expected.keys() & found.keys():
            out += _differences(expected[key], found[key], f"{prefix}{key}.")
        return sorted(out)
    if expected != found:
        return [f"{prefix[:-1]}: {found!r} there, {expected!r} here"]
    return []


def clean_for_fresh_start(path: Path) -> None:
    """Remove what ``mrsq train`` writes in ``path``, and nothing else."""
    for name in TRAIN_FILES:
        (path / name).unlink(missing_ok=True)
    for pattern in TRAIN_GLOBS:
        for p in path.glob(pattern):
            if p.is_file():
                p.unlink()
    for name in TRAIN_DIRS:
        if (path / name).is_dir():
            shutil.rmtree(path / name)


def _last_line(path: Path) -> tuple[list[str], list[str]] | None:
    """(header, last row) of a CSV file, reading only its start and end."""
    try:
        with path.open("rb") as f:
            header = f.readline().decode(errors="replace").strip().split(",")
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if len(lines) < 2 and (not lines or lines[-1].split(",") == header):
        return None
    row = lines[-1].split(",")
    if row == header or len(row) != len(header):
        return None
    return header, row


def _column(table: tuple[list[str], list[str]] | None, name: str) -> float | None:
    if table is None or name not in table[0]:
        return None
    try:
        return float(table[1][table[0].index(name)])
    except ValueError:
        return None


def read_progress(path: Path) -> tuple[int, float | None]:
    """(last step reached, last evaluation return) from the run folder's files."""
    ev = _last_line(path / "eval.csv")
    steps = [_column(_last_line(path / "train.csv"), "step"), _column(ev, "step"), read_run_json(path).get("step")]
    step = max((int(s) for s in steps if isinstance(s, (int, float)) and math.isfinite(s)), default=0)
    return step, _column(ev, "return_mean")


# ---------------------------------------------------------------------------------- the Ray task
def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """SIGTERM the run if the Ray worker that started it dies (Linux), so it checkpoints and stops."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_train(cmd: list[str], env: dict[str, str], log: str) -> dict:
    """Body of a sweep's Ray task: run ``cmd`` (``mrsq train``) and wait for it. A cancelled task
    (``ray.cancel``, which raises KeyboardInterrupt here) sends the run SIGTERM, so it writes a final
    checkpoint, and waits for it to stop. Returns ``{"rc", "tail"}``."""
    child_env = dict(os.environ, **env)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    cmd = [sys.executable, *cmd]
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as log_file:
        log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename}: {' '.join(cmd)}\n")
        log_file.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.PIPE,
                                env=child_env, start_new_session=True,
                                preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)

        def pump():
            for raw in proc.stderr:
                line = raw.decode(errors="replace")
                log_file.write(line)
                log_file.flush()
                for part in line.replace("\r", "\n").splitlines():  # progress bars redraw with \r
                    if part.strip():
                        tail.append(part.rstrip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:  # cancelled: stop the run cleanly, then let Ray see the cancellation
            _stop(proc)
            raise
        reader.join(timeout=5)
    return {"rc": rc, "tail": list(tail)}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # a second cancellation: do not wait any longer
            break
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def train_command(run: Run, sweep: Sweep, resume: bool) -> list[str]:
    """Arguments after the Python executable."""
    if resume:
        return ["-m", "mrsq.cli", "train", "--resume", str(run.path), "--no-progress"]
    cmd = ["-m", "mrsq.cli", "train", run.source, "--env", run.env, "--seed", str(run.seed)]
    for module in sweep.config.imports:  # a resume re-imports what run.json recorded
        cmd += ["--import", module]
    for item in run.overrides:
        cmd += ["--set", item]
    return [*cmd, "--set", f"train.threads={sweep.config.resources.cpus}", "--no-progress", "--out", str(run.path)]


def child_env(sweep: Sweep) -> dict[str, str]:
    n = str(sweep.config.resources.cpus)
    env = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "MUJOCO_GL": "disable", "PYTHONUNBUFFERED": "1"}
    if not sweep.config.resources.gpus:  # Ray leaves every GPU visible to a task that asked for none
        env["CUDA_VISIBLE_DEVICES"] = ""
    if sweep.import_roots:  # absolute folders: a Ray worker's working folder is not the driver's
        inherited = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*sweep.import_roots, *inherited]))
    return env


def _error_line(tail: list[str]) -> str:
    for line in reversed(tail):
        if line.startswith("mrsq: error:"):
            return line.removeprefix("mrsq: error:").strip()
    for line in reversed(tail):
        if line.strip():
            return line.strip()[:300]
    return ""


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


# ---------------------------------------------------------------------------------- display
def _fmt_return(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


class Display:
    """An overall tqdm bar and one line per run on a terminal; otherwise one plain line per run
    state change."""

    def __init__(self, sweep: Sweep, fancy: bool, every: float = 60.0) -> None:
        self.sweep, self.fancy = sweep, fancy
        self.every = every  # plain mode: a progress line per running run this often (seconds)
        self.rates: dict[str, tuple[float, int]] = {}  # folder -> (time, step) of its last progress line
        self.width = max(len(r.folder) for r in sweep.runs)
        self.shown: dict[str, tuple] = {}
        self.total = sum(r.steps for r in sweep.runs)
        self.done_steps = sum(min(r.step, r.steps) for r in sweep.runs)
        if fancy:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done_steps, position=0, desc="sweep", unit="step",
                            file=sys.stderr, dynamic_ncols=True, leave=True)
            self.lines = {r.folder: tqdm(total=0, position=i + 1, bar_format="{desc}", file=sys.stderr, leave=True)
                          for i, r in enumerate(sweep.runs)}
        for r in sweep.runs:
            self.update(r)

    def line(self, r: Run) -> str:
        return (f"{r.folder:<{self.width}}  {r.state:<11} {min(r.step, r.steps):>8}/{r.steps:<8} "
                f"return {_fmt_return(r.last_return)}")

    def update(self, r: Run) -> None:
        if self.fancy:
            key = (r.state, r.step, r.last_return)
            if self.shown.get(r.folder) != key:
                self.shown[r.folder] = key
                self.lines[r.folder].set_description_str(self.line(r), refresh=True)
            done = sum(min(x.step, x.steps) for x in self.sweep.runs)
            if done > self.done_steps:  # (a run resumed from its previous checkpoint may step back)
                self.bar.update(done - self.done_steps)
                self.done_steps = done
        elif self.shown.get(r.folder) != (r.state,):
            self.shown[r.folder] = (r.state,)
            self.rates[r.folder] = (time.monotonic(), r.step)
            print(f"mrsq: {self.line(r)}" + (f"  ({r.error})" if r.error and r.state in ("failed", "diverged", "retrying") else ""),
                  file=sys.stderr, flush=True)
        elif r.state in ("running", "resumed") or r.state.startswith("retry"):
            self._progress_line(r)

    def _progress_line(self, r: Run) -> None:
        """Without a terminal: step, steps/s since the last line, last return and ETA of a
        running run, every ``every`` seconds (state changes alone would say nothing for hours)."""
        now = time.monotonic()
        then, step = self.rates.get(r.folder, (now, r.step))
        if now - then < self.every:
            return
        rate = (r.step - step) / max(now - then, 1e-9)
        left = max(r.steps - r.step, 0)
        eta = _fmt_duration(left / rate) if rate > 0 else "-"
        self.rates[r.folder] = (now, r.step)
        print(f"mrsq: {self.line(r)}  {rate:.1f} steps/s  ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.fancy:
            for bar in self.lines.values():
                bar.close()
            self.bar.close()


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def summary(sweep: Sweep) -> str:
    width = max(len("run"), *(len(r.folder) for r in sweep.runs))
    lines = [f"{'run':<{width}}  {'state':<11} {'steps':>17}  {'return':>8}  error",
             f"{'-' * width}  {'-' * 11} {'-' * 17}  {'-' * 8}  -----"]
    for r in sweep.runs:
        steps = f"{min(r.step, r.steps)}/{r.steps}"
        lines.append(f"{r.folder:<{width}}  {r.state:<11} {steps:>17}  {_fmt_return(r.last_return):>8}  {r.error or ''}")
    return "\n".join(lines)


def write_sweep_json(sweep: Sweep) -> None:
    info = {"sweep": str(sweep.file.resolve()), "out": str(sweep.out), "resources": sweep.config.resources.model_dump(),
            "retries": sweep.config.retries, "imports": sweep.config.imports,
            "runs": [r.record() for r in sweep.runs]}
    sweep.out.mkdir(parents=True, exist_ok=True)
    tmp = sweep.out / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(sweep.out / SWEEP_JSON)


# ---------------------------------------------------------------------------------- the driver
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _start_ray(sweep: Sweep, address: str | None, max_parallel: int | None):
    import logging
    import warnings

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", module="ray")
    import ray

    res = sweep.config.resources
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"--address {address}: cannot connect to a Ray cluster there "
                             f"({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})") from None
    else:
        cpus = os.cpu_count() or 1
        if res.cpus > cpus:
            raise _error(sweep.file, "resources.cpus", f"{res.cpus} per run, but this machine has {cpus} CPUs")
        if max_parallel:
            cpus = min(cpus, max(res.cpus, max_parallel * res.cpus))
        ray.init(address="local", num_cpus=cpus, object_store_memory=100 * 1024 ** 2, **quiet)
    return ray


def _capacity(ray, sweep: Sweep) -> int:
    """How many runs the cluster holds at once (refuses a request no node can ever grant)."""
    res = sweep.config.resources
    total = ray.cluster_resources()
    n = int(total.get("CPU", 0) // res.cpus)
    if n < 1:
        raise _error(sweep.file, "resources.cpus", f"{res.cpus} per run, but the Ray cluster has {total.get('CPU', 0):g} CPUs")
    if res.gpus > 0:
        g = int(total.get("GPU", 0) // res.gpus)
        if g < 1:
            raise _error(sweep.file, "resources.gpus", f"{res.gpus:g} per run, but the Ray cluster has "
                                                       f"{total.get('GPU', 0):g} GPUs")
        n = min(n, g)
    return n


def execute(sweep: Sweep, address: str | None = None, max_parallel: int | None = None,
            progress: bool = True, progress_every: float = 60.0) -> int:
    """Run what is not complete; 0 when every run completed, 1 when any failed or diverged, 130
    when stopped by Ctrl-C or SIGTERM."""
    todo = [r for r in sweep.runs if r.start in ("fresh", "resume")]
    for r in sweep.runs:
        r.step, r.last_return = read_progress(r.path) if r.start != "fresh" else (0, None)
        if r.start == "skip":
            r.state, r.step = "skipped", r.steps
        elif r.start == "diverged":
            r.state, r.error = "diverged", "diverged before (delete the folder to retry)"
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # a sweep started in the background inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    ray = _start_ray(sweep, address, max_parallel)
    if main_thread:  # ray.init replaces the driver's SIGTERM handler
        signal.signal(signal.SIGTERM, _raise_interrupt)
    display = None
    stopped = False
    try:
        limit = _capacity(ray, sweep)
        if max_parallel:
            limit = min(limit, max_parallel)
        res = sweep.config.resources
        task = ray.remote(run_train).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)
        write_sweep_json(sweep)
        display = Display(sweep, fancy=progress and sys.stderr.isatty(), every=progress_every)
        pending = collections.deque(todo)
        inflight: dict[Any, Run] = {}

        def submit(r: Run) -> None:
            resume = is_resumable(r.path)
            if not resume and r.path.is_dir():
                clean_for_fresh_start(r.path)
            r.path.mkdir(parents=True, exist_ok=True)
            r.attempts += 1
            r.error = None
            if r.attempts > 1:
                r.state = f"retry {r.attempts - 1}"
            else:
                r.state = "resumed" if resume else "running"
            inflight[task.remote(train_command(r, sweep, resume), child_env(sweep), str(r.path / LOG_FILE))] = r
            display.update(r)

        last_poll = 0.0
        try:
            while pending or inflight:
                while pending and len(inflight) < limit:
                    submit(pending.popleft())
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    r = inflight.pop(ref)
                    if _finish(ray, ref, r, sweep) == "retry":
                        pending.appendleft(r)
                    display.update(r)
                if time.monotonic() - last_poll >= 1.0:
                    last_poll = time.monotonic()
                    for r in inflight.values():
                        r.step, r.last_return = read_progress(r.path)
                        display.update(r)
        except KeyboardInterrupt:
            stopped = True
            _stop_all(ray, inflight, display)
            for r in pending:
                r.state = "not started"
    except KeyboardInterrupt:  # before the loop ran
        stopped = True
    finally:
        if display is not None:
            display.close()
        ray.shutdown()
    write_sweep_json(sweep)
    print(summary(sweep), file=sys.stderr)
    print(f"mrsq: results in {sweep.out}/; compare with: mrsq compare {sweep.out}", file=sys.stderr)
    if stopped:
        print(f"mrsq: stopped; rerun `mrsq sweep {sweep.file} --out {sweep.out}` to continue", file=sys.stderr)
        return 130
    ok = all(r.state in ("done", "skipped") for r in sweep.runs)
    return 0 if ok else 1


def _finish(ray, ref, r: Run, sweep: Sweep) -> str:
    """Record how a task ended: "final" or "retry"."""
    from ray.exceptions import RayError, TaskCancelledError

    try:
        result = ray.get(ref)
        rc, tail = result["rc"], result["tail"]
        error = _error_line(tail)
    except TaskCancelledError:
        rc, error = EXIT_INTERRUPTED, "cancelled"
    except RayError as exc:  # the worker or its node died
        rc, error = None, f"Ray: {str(exc).strip().splitlines()[0][:200]}"
    r.step, r.last_return = read_progress(r.path)
    if rc == EXIT_OK:
        r.state, r.error, r.step = "done", None, max(r.step, r.steps)
        return "final"
    if rc == EXIT_USER:
        r.state, r.error = "failed", error or "mrsq train: user error (status 2)"
        return "final"
    if rc == EXIT_DIVERGED:
        r.state, r.error = "diverged", error or "non-finite loss"
        return "final"
    if rc is not None and rc < 0:
        error = f"killed by {_signal_name(rc)}" + (" (out of memory?)" if rc == -signal.SIGKILL else "")
    elif rc == EXIT_INTERRUPTED:
        error = "interrupted (SIGINT/SIGTERM from outside the sweep)"
    elif rc is not None:
        error = f"exit status {rc}: {error}" if error else f"exit status {rc}"
    r.error = error
    if r.attempts <= sweep.config.retries:
        r.state = "retrying"
        return "retry"
    r.state = "failed"
    return "final"


def _stop_all(ray, inflight: dict, display: Display | None) -> None:
    """Ctrl-C: cancel the running tasks (their runs get SIGTERM and write a final checkpoint) and
    wait for them; a second Ctrl-C stops waiting."""
    print(f"\nmrsq: stopping: {len(inflight)} running runs write a final checkpoint "
          "(Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
    for ref in inflight:
        ray.cancel(ref, force=False)
    try:
        if inflight:
            ray.wait(list(inflight), num_returns=len(inflight), timeout=STOP_GRACE_S + 10)
    except KeyboardInterrupt:
        pass
    for r in inflight.values():
        r.step, r.last_return = read_progress(r.path)
        status = read_run_json(r.path).get("status")
        r.state = "done" if is_complete(r.path) else "interrupted"
        r.error = None if r.state == "done" else f"stopped (run.json: {status or 'none'}); rerun the sweep to resume"


# ---------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP.yaml",
                   help="sweep file: presets, envs, seeds, set, grid, resources, retries, out, imports")
    p.add_argument("--address", help="an existing Ray cluster (e.g. 10.0.0.1:6379 or ray://host:10001); OUT must "
                                     "then be on a filesystem every node shares, at the same path, and mrsq be "
                                     "installed on every node (default: a local Ray started for this sweep)")
    p.add_argument("--max-parallel", type=int, metavar="N", help="at most N runs at a time")
    p.add_argument("--out", help="output folder (default: the file's `out`, else runs/<file stem>)")
    p.add_argument("--retries", type=int, metavar="K", help="resume a failed run up to K times (default: the file's "
                                                            "`retries`, else 2)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and what each would do; start nothing")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    p.add_argument("--progress-every", type=float, default=60.0, metavar="SECONDS",
                   help="plain lines (--no-progress, or no terminal): a line per running run this often, with its "
                        "steps/s and ETA (default 60)")


def main(args) -> int:
    if args.max_parallel is not None and args.max_parallel < 1:
        raise SweepError(f"--max-parallel {args.max_parallel}: must be at least 1")
    if args.retries is not None and args.retries < 0:
        raise SweepError(f"--retries {args.retries}: must be at least 0")
    sweep = load_sweep(args.sweep, args.out)
    if args.retries is not None:
        sweep.config.retries = args.retries
    n = len(sweep.runs)
    if args.dry_run:
        width = max(len(r.folder) for r in sweep.runs)
        for r in sweep.runs:
            print(f"{r.folder:<{width}}  {r.start}")
        counts = collections.Counter(r.start for r in sweep.runs)
        print(f"mrsq: {n} run{'s' * (n != 1)} in {sweep.out}: " + ", ".join(f"{counts[s]} {s}" for s in
                                                          ("fresh", "resume", "skip", "diverged") if counts[s]),
              file=sys.stderr)
        return 0
    if all(r.start == "skip" for r in sweep.runs):
        print(f"mrsq: all {n} runs complete in {sweep.out}; nothing to do", file=sys.stderr)
        return 0
    if all(r.start in ("skip", "diverged") for r in sweep.runs):
        print(f"mrsq: nothing to run in {sweep.out}: every run is complete or diverged "
              "(delete a diverged run's folder to retry it)", file=sys.stderr)
        return 1
    counts = collections.Counter(r.start for r in sweep.runs)
    print(f"mrsq: sweep {sweep.file}: {n} run{'s' * (n != 1)} ({counts['fresh']} to start, {counts['resume']} to resume, "
          f"{counts['skip']} complete) -> {sweep.out}/", file=sys.stderr, flush=True)
    if args.progress_every <= 0:
        raise SweepError(f"--progress-every {args.progress_every}: must be positive (seconds)")
    return execute(sweep, args.address, args.max_parallel, progress=not args.no_progress,
                   progress_every=args.progress_every)


def _standalone(argv: list[str] | None = None) -> int:
    """``python -m mrsq.sweep ...``: the same as ``mrsq sweep ...``."""
    from mrsq.errors import UsageError
    from mrsq.errors import user_errors as _user_errors

    p = argparse.ArgumentParser(prog="mrsq sweep", description="run a sweep of mrsq train runs on Ray")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return main(args)
    except (*_user_errors(), SweepError, UsageError) as exc:
        print(f"mrsq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrsq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from mrsq.sweep import _standalone as _entry  # the module's functions as mrsq.sweep, not __main__

    sys.exit(_entry())
