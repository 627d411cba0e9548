"""``mrsq sweep``: the sweep file, its expansion into run folders, rerun semantics, a real local
sweep on Ray, and ``mrsq plot``/``mrsq compare`` on a sweep's output folder."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mrsq import specs, sweep
from mrsq.runs import RunFolderError, load_runs

from tests.conftest import cli_env


# ---------------------------------------------------------------------------------- helpers
def _cli_has_sweep() -> bool:
    from mrsq import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return "sweep" in sub.choices


def run_cli(*argv: str) -> int:
    """``mrsq sweep ...`` in-process: through mrsq.cli once it routes `sweep`, else through
    sweep.add_arguments/main with the CLI's handling of user errors."""
    argv = [str(a) for a in argv]
    if _cli_has_sweep():
        from mrsq.cli import main

        return main(["sweep", *argv])
    return sweep._standalone(argv)


def sweep_cmd() -> list[str]:
    return [sys.executable, "-m", "mrsq.cli", "sweep"] if _cli_has_sweep() else [sys.executable, "-m", "mrsq.sweep"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    sweep.add_arguments(p)
    return p.parse_args([str(a) for a in argv])


BASIC = """\
presets: [mrq_small]
envs: [gym:InvertedPendulum-v5]
seeds: 2
"""


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("body, field, words", [
    (BASIC + "sedes: 3\n", "sedes", "unknown field"),
    ("presets: [mrq_small]\nenvs: [cartpole]\n", "envs[0]", "no prefix"),
    ("presets: [mrq_small]\nenvs: [foo:bar]\n", "envs[0]", "unknown env prefix"),
    # the task itself, before Ray starts (it used to pass --dry-run and fail each run at run time)
    ("presets: [mrq_small]\nenvs: [gym:Hopper-v5, gym:NoSuchEnv-v0]\n", "envs[1]", "unknown gymnasium id"),
    ("presets: [mrq_small]\nenvs: [dmc:cheetah-rn]\n", "envs[0]", "cheetah-rn"),
    ("presets: [mrq_small, nope_preset]\nenvs: [gym:Hopper-v5]\n", "presets[1]", "nope_preset"),
    ("presets: [missing/variant.yaml]\nenvs: [gym:Hopper-v5]\n", "presets[0]", "no such file"),
    (BASIC + "set: {critic.num_memberz: 3}\n", "presets[0]", "num_memberz"),
    (BASIC + "set: {train.seed: 3}\n", "set.train.seed", "use seeds"),
    (BASIC + "grid: {critic.num_members: []}\n", "grid.critic.num_members", "empty"),
    (BASIC + "resources: {cpus: 0}\n", "resources.cpus", "greater than or equal to 1"),
    ("presets: [mrq_small]\n", "envs", "Field required"),
    (BASIC + "set: {train.device: cuda}\n", "resources.gpus", "ask for a GPU"),
])
def test_sweep_file_errors_are_one_line_naming_file_and_field(tmp_path, capsys, body, field, words):
    file = write(tmp_path / "bad.yaml", body)
    assert run_cli(file, "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"mrsq: error: {file}: ")
    assert field in err and words in err


def test_sweep_error_is_a_user_error_of_the_cli():
    from mrsq.cli import _user_errors

    assert issubclass(sweep.SweepError, ValueError)
    assert issubclass(sweep.SweepError, _user_errors())


# ---------------------------------------------------------------------------------- expansion
def test_expansion_folders_grid_and_seeds(tmp_path):
    write(tmp_path / "variants" / "wide.yaml", "extends: mrq_small\ncritic: {hidden_dim: 64}\n")
    file = write(tmp_path / "s.yaml", """\
        presets: [mrq_small, variants/wide.yaml]
        envs: [dmc:cartpole-swingup, gym:InvertedPendulum-v5]
        seeds: [3, 5]
        set: {train.steps: 1000, train.eval_every: 500}
        grid: {critic.num_members: [2, 4], discount: [0.9, 0.99]}
        resources: {cpus: 2}
    """)
    s = sweep.load_sweep(file, out=tmp_path / "out")
    assert len(s.runs) == 2 * 2 * 4 * 2
    folders = [r.folder for r in s.runs]
    assert len(set(folders)) == len(folders)
    assert folders[0] == "dmc-cartpole-swingup/mrq_small__critic.num_members=2__discount=0.9/seed3"
    assert "gym-InvertedPendulum-v5/wide__critic.num_members=4__discount=0.99/seed5" in folders
    run = next(r for r in s.runs if r.folder == "gym-InvertedPendulum-v5/wide__critic.num_members=4__discount=0.99/seed5")
    assert run.source == str((tmp_path / "variants" / "wide.yaml").resolve())  # relative to the sweep file
    assert run.variant == "wide__critic.num_members=4__discount=0.99" and run.preset == "variants/wide.yaml"
    assert run.overrides == ["train.steps=1000", "train.eval_every=500", "critic.num_members=4", "discount=0.99"]
    assert run.steps == 1000 and run.path == (tmp_path / "out" / run.folder).resolve()
    assert {r.start for r in s.runs} == {"fresh"}

    cmd = sweep.train_command(run, s, resume=False)
    assert cmd[:4] == ["-m", "mrsq.cli", "train", run.source]
    assert cmd[cmd.index("--env") + 1] == "gym:InvertedPendulum-v5" and cmd[cmd.index("--seed") + 1] == "5"
    assert "train.threads=2" in cmd and "--no-progress" in cmd and cmd[-2:] == ["--out", str(run.path)]
    assert sweep.train_command(run, s, resume=True)[3:] == ["--resume", str(run.path), "--no-progress"]
    assert sweep.child_env(s)["OMP_NUM_THREADS"] == "2" and sweep.child_env(s)["MKL_NUM_THREADS"] == "2"
    assert sweep.child_env(s)["CUDA_VISIBLE_DEVICES"] == ""  # no GPU asked for: the run may not use one
    s.config.resources.gpus = 1
    assert "CUDA_VISIBLE_DEVICES" not in sweep.child_env(s)  # Ray sets it to the GPU it gave the task

    one = sweep.load_sweep(write(tmp_path / "one.yaml", BASIC.replace("seeds: 2", "seeds: 3")))
    assert [r.seed for r in one.runs] == [0, 1, 2] and one.out == (Path.cwd() / "runs" / "one").resolve()
    assert [r.folder for r in one.runs][0] == "gym-InvertedPendulum-v5/mrq_small/seed0"


def test_values_of_set_round_trip_through_yaml(tmp_path):
    file = write(tmp_path / "s.yaml", BASIC + 'set: {compile: "off", precision: fp32, train.steps: 400}\n')
    s = sweep.load_sweep(file, out=tmp_path / "out")
    spec = specs.load("mrq_small", s.runs[0].overrides)
    assert spec.compile == "off" and spec.precision == "fp32" and spec.train.steps == 400


def _complete_run(run: sweep.Run, threads: int = 1, status: str = "done", checkpoint: str = "checkpoint.pt",
                  spec_overrides: tuple[str, ...] = ()) -> None:
    spec = specs.load(run.source, [*run.overrides, f"train.env={run.env}", f"train.seed={run.seed}",
                                   f"train.threads={threads}", *spec_overrides])
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / "spec.yaml").write_text(specs.to_yaml(spec))
    (run.path / "run.json").write_text(json.dumps({"preset": run.variant, "status": status, "step": 100, "steps": 300}))
    (run.path / checkpoint).write_bytes(b"x")
    (run.path / "eval.csv").write_text("step,return_mean\n0,1.5\n100,2.5\n")


def test_dry_run_states_and_spec_mismatch(tmp_path, capsys):
    file = write(tmp_path / "s.yaml", BASIC.replace("seeds: 2", "seeds: 5") + f"out: {tmp_path / 'out'}\n")
    runs = sweep.load_sweep(file).runs
    _complete_run(runs[0])                                          # complete
    _complete_run(runs[1], status="interrupted")                    # resumable
    _complete_run(runs[2], status="done", checkpoint="checkpoint.prev.pt")  # done but checkpoint.pt gone
    _complete_run(runs[3], status="diverged")                       # stopped by a non-finite loss
    runs[4].path.mkdir(parents=True)
    (runs[4].path / "eval.csv").write_text("step,return_mean\n0,1\n")  # crashed before any checkpoint

    assert run_cli(file, "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out] == ["skip", "resume", "resume", "diverged", "fresh"]
    assert out[0].split()[0] == "gym-InvertedPendulum-v5/mrq_small/seed0"

    _complete_run(runs[0], spec_overrides=("discount=0.5",))  # a run of another spec in the way
    assert run_cli(file, "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another spec" in err and "discount" in err and str(runs[0].path) in err


def test_all_complete_is_nothing_to_do(tmp_path, capsys):
    file = write(tmp_path / "s.yaml", BASIC + f"out: {tmp_path / 'out'}\n")
    for run in sweep.load_sweep(file).runs:
        _complete_run(run)
    assert run_cli(file) == 0
    assert f"mrsq: all 2 runs complete in {tmp_path / 'out'}; nothing to do" in capsys.readouterr().err


def test_fresh_start_removes_only_what_mrsq_train_writes(tmp_path):
    d = tmp_path / "run"
    for name in ("eval.csv", "train.csv", "spec.yaml", "run.json", "checkpoint.pt", "checkpoint.prev.pt",
                 "replay/0-150.npy", "notes.txt", "sweep.log", "plots/a.png"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("x")
    sweep.clean_for_fresh_start(d)
    left = sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))
    assert left == ["notes.txt", "plots", "plots/a.png", "sweep.log"]


def test_progress_is_read_from_the_run_folder(tmp_path):
    assert sweep.read_progress(tmp_path) == (0, None)
    (tmp_path / "train.csv").write_text("step,wall_time\n100,1\n200,2\n")
    (tmp_path / "eval.csv").write_text("step,return_mean,return_std\n0,1.5,0\n150,7.25,0\n")
    assert sweep.read_progress(tmp_path) == (200, 7.25)
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "step": 250}))
    assert sweep.read_progress(tmp_path) == (250, 7.25)
    (tmp_path / "train.csv").write_text("step,wall_time\n100,1\n200,2\n30")  # a row being written
    assert sweep.read_progress(tmp_path)[0] == 250


class _FakeRay:
    def __init__(self, outcome):
        self.outcome = outcome

    def get(self, ref):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize("rc, attempts, state, decision, error", [
    (0, 1, "done", "final", None),
    (2, 1, "failed", "final", "bad spec"),
    (3, 1, "diverged", "final", "bad spec"),
    (1, 1, "retrying", "retry", "exit status 1: bad spec"),
    (-9, 2, "retrying", "retry", "killed by SIGKILL (out of memory?)"),
    (1, 3, "failed", "final", "exit status 1: bad spec"),
    (130, 1, "retrying", "retry", "interrupted (SIGINT/SIGTERM from outside the sweep)"),
])
def test_exit_codes_decide_retries(tmp_path, rc, attempts, state, decision, error):
    file = write(tmp_path / "s.yaml", BASIC + "retries: 2\n")
    s = sweep.load_sweep(file, out=tmp_path / "out")
    run = s.runs[0]
    run.attempts = attempts
    tail = ["Traceback (most recent call last):", "mrsq: error: bad spec", "something after"]
    assert sweep._finish(_FakeRay({"rc": rc, "tail": tail}), None, run, s) == decision
    assert (run.state, run.error) == (state, error)


def test_a_dead_worker_is_retried(tmp_path):
    from ray.exceptions import WorkerCrashedError

    s = sweep.load_sweep(write(tmp_path / "s.yaml", BASIC + "retries: 1\n"), out=tmp_path / "out")
    run = s.runs[0]
    run.attempts = 1
    assert sweep._finish(_FakeRay(WorkerCrashedError()), None, run, s) == "retry"
    assert run.error.startswith("Ray: ")
    run.attempts = 2
    assert sweep._finish(_FakeRay(WorkerCrashedError()), None, run, s) == "final" and run.state == "failed"


# ---------------------------------------------------------------------------------- plot/compare
def _fake_run(path: Path, env: str, seed: int, preset: str, returns: list[float]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "spec.yaml").write_text(f"train:\n  env: {env}\n  seed: {seed}\n")
    (path / "run.json").write_text(json.dumps({"preset": preset, "status": "done"}))
    rows = "".join(f"{150 * i},{r}\n" for i, r in enumerate(returns))
    (path / "eval.csv").write_text("step,return_mean\n" + rows)


def test_a_sweep_folder_expands_to_its_runs_labelled_by_variant(tmp_path):
    out = tmp_path / "out"
    for env in ("gym:A-v1", "dmc:b-c"):
        for variant in ("mrq_small", "mrq_small__critic.num_members=4"):
            for seed in (0, 1):
                _fake_run(out / env.replace(":", "-") / variant / f"seed{seed}", env, seed, "mrq_small", [1, 2 + seed])
    (out / "sweep.json").write_text(json.dumps({"runs": []}))  # the labels then come from the layout
    runs = load_runs([out])
    assert len(runs) == 8 and [r.path for r in runs] == sorted(r.path for r in runs)
    assert {r.label for r in runs} == {"mrq_small", "mrq_small__critic.num_members=4"}

    (out / "dmc-b-c" / "mrq_small" / "seed1" / "eval.csv").write_text("step,return_mean\n")  # not evaluated yet
    assert len(load_runs([out])) == 7
    with pytest.raises(RunFolderError, match="labels are per run folder"):
        load_runs([out], labels=["x"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(RunFolderError, match="no eval.csv"):
        load_runs([tmp_path / "empty"])
    plain = tmp_path / "plain" / "a_s0"  # not in a sweep: run.json's preset
    _fake_run(plain, "gym:A-v1", 0, "td3", [1, 2])
    assert [r.label for r in load_runs([tmp_path / "plain"])] == ["td3"]


# ---------------------------------------------------------------------------------- a real sweep (slow)
SWEEP = """\
presets: [mrq_small, td3]
envs: [gym:InvertedPendulum-v5]
seeds: 2
set:
  train.steps: 300
  train.eval_every: 150
  train.eval_episodes: 1
  warmup_steps: 250
  batch_size: 32
  replay.capacity: 1000
  compile: "off"
resources: {cpus: 1}
out: out
"""


def _sweep(tmp: Path, *argv: str, probe_ray: bool = False) -> subprocess.CompletedProcess:
    env = dict(cli_env(), OMP_NUM_THREADS="1")
    if probe_ray:  # in-process entry point, then report whether Ray was even imported
        code = ("import sys; from mrsq.sweep import _standalone; rc = _standalone(sys.argv[1:]); "
                "print('RAY_IMPORTED' if 'ray' in sys.modules else 'RAY_NOT_IMPORTED'); sys.exit(rc)")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = sweep_cmd()
    return subprocess.run([*cmd, "sweep.yaml", *argv], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)


def _mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    write(tmp / "sweep.yaml", SWEEP)
    proc = _sweep(tmp, "--max-parallel", "2", "--no-progress")
    return tmp, proc


@pytest.mark.slow
def test_local_sweep_completes(local_sweep):
    tmp, proc = local_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp / "out"
    folders = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("eval.csv"))
    assert folders == [f"gym-InvertedPendulum-v5/{p}/seed{s}" for p in ("mrq_small", "td3") for s in (0, 1)]
    for f in folders:
        steps = [line.split(",")[0] for line in (out / f / "eval.csv").read_text().splitlines()[1:]]
        assert steps == ["0", "150", "300"], f
        assert sweep.is_complete(out / f)
        assert "train.threads=1" in (out / f / "sweep.log").read_text()
    info = json.loads((out / "sweep.json").read_text())
    assert [r["state"] for r in info["runs"]] == ["done"] * 4 and [r["attempts"] for r in info["runs"]] == [1] * 4
    assert f"compare with: mrsq compare {out.resolve()}" in proc.stderr


@pytest.mark.slow
def test_rerun_does_nothing_then_reruns_only_a_damaged_run(local_sweep):
    tmp, proc = local_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp / "out"
    before = _mtimes(out)

    again = _sweep(tmp, probe_ray=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"mrsq: all 4 runs complete in {out.resolve()}; nothing to do" in again.stderr
    assert "RAY_NOT_IMPORTED" in again.stdout
    assert _mtimes(out) == before

    damaged = out / "gym-InvertedPendulum-v5" / "td3" / "seed1"
    (damaged / "checkpoint.pt").unlink()
    third = _sweep(tmp, "--no-progress")
    assert third.returncode == 0, third.stderr[-3000:]
    after = _mtimes(out)
    for f in ("mrq_small/seed0", "mrq_small/seed1", "td3/seed0"):
        assert after[f"gym-InvertedPendulum-v5/{f}/eval.csv"] == before[f"gym-InvertedPendulum-v5/{f}/eval.csv"], f
    assert sweep.is_complete(damaged)
    assert after["gym-InvertedPendulum-v5/td3/seed1/eval.csv"] != before["gym-InvertedPendulum-v5/td3/seed1/eval.csv"]
    states = {r["folder"]: r["state"] for r in json.loads((out / "sweep.json").read_text())["runs"]}
    assert states == {"gym-InvertedPendulum-v5/mrq_small/seed0": "skipped", "gym-InvertedPendulum-v5/mrq_small/seed1": "skipped",
                      "gym-InvertedPendulum-v5/td3/seed0": "skipped", "gym-InvertedPendulum-v5/td3/seed1": "done"}


@pytest.mark.slow
def test_compare_and_plot_read_the_sweep_folder(local_sweep, tmp_path):
    from mrsq.compare import compare_tables
    from mrsq.plot import plot_runs

    tmp, proc = local_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = compare_tables([tmp / "out"], reps=50)
    assert table.count("## gym:InvertedPendulum-v5") == 1
    rows = [line for line in table.splitlines() if line.startswith("| mrq_small") or line.startswith("| td3")]
    assert [r.split("|")[1:3] for r in rows] == [[" mrq_small ", " 2 "], [" td3 ", " 2 "]]
    png = plot_runs([tmp / "out"], tmp_path / "curves.png")
    assert png.stat().st_size > 10_000


# ---------------------------------------------------------------------------------- user components
PLUGINS = Path(__file__).parent / "plugins"
PLUGIN_SWEEP = """\
presets: [mrq_small]
envs: [gym:InvertedPendulum-v5]
seeds: 1
set: {critic.type: my_critic, critic.scale: 2.0}
"""
INSPECT = ("import json, sys; from mrsq import sweep; s = sweep.load_sweep('sweep.yaml', 'out'); "
           "print(json.dumps({'cmd': sweep.train_command(s.runs[0], s, resume=False), "
           "'env': sweep.child_env(s)})); sys.exit(sweep._standalone(['sweep.yaml', '--dry-run']))")


def _in(tmp: Path, *cmd: str, pythonpath: str) -> subprocess.CompletedProcess:
    env = dict(cli_env(), PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, *cmd], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def test_imports_register_user_components_for_every_run(tmp_path, monkeypatch, capsys):
    """``imports:`` are imported (and contract-checked) before the presets load; every run gets
    ``--import`` and a PYTHONPATH holding the folder the module was found in, made absolute: the
    user's ``PYTHONPATH=.`` means nothing in a Ray worker's folder. (The plug-ins are imported
    in subprocesses only, so this process's registries stay as they are.)"""
    shutil.copy(PLUGINS / "my_plugin.py", tmp_path / "my_plugin.py")
    shutil.copy(PLUGINS / "broken_plugin.py", tmp_path / "broken_plugin.py")
    write(tmp_path / "sweep.yaml", PLUGIN_SWEEP + "imports: [my_plugin]\n")
    proc = _in(tmp_path, "-c", INSPECT, pythonpath=".")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, dry = proc.stdout.split("\n", 1)
    got = json.loads(first)
    cmd = got["cmd"]
    assert cmd[cmd.index("--import") + 1] == "my_plugin" and "critic.type=my_critic" in cmd
    assert got["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path.resolve())
    assert "." not in got["env"]["PYTHONPATH"].split(os.pathsep)  # the inherited entry made absolute
    assert "mrq_small/seed0  fresh" in dry  # the dry run found the component too

    def one_line_error(imports: str, words: str, subprocess_: bool = False) -> None:
        write(tmp_path / "sweep.yaml", PLUGIN_SWEEP + imports)
        if subprocess_:
            bad = _in(tmp_path, "-m", "mrsq.cli", "sweep", "sweep.yaml", "--dry-run", pythonpath=".")
            code, err = bad.returncode, bad.stderr.strip()
        else:  # nothing gets registered on these paths: safe in this process
            monkeypatch.chdir(tmp_path)
            code, err = run_cli("sweep.yaml", "--dry-run"), capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and "Traceback" not in err, err
        assert err.startswith("mrsq: error: sweep.yaml: ") and words in err, err

    # without the import the component is unknown; a bad or broken module is named, one line each
    one_line_error("", "unknown critic 'my_critic'")
    one_line_error("imports: [no_such_module]\n", "imports[0]: --import no_such_module: cannot import")
    one_line_error("imports: [my_plugin, broken_plugin]\n",
                   "imports[1]: critic 'flat_critic' (from broken_plugin) breaks mrsq's critic contract",
                   subprocess_=True)


def test_plain_display_prints_a_progress_line_per_running_run_every_interval(monkeypatch, capsys):
    """Without a terminal (a log file, a cluster job) state changes alone said nothing for hours:
    each running run gets step, steps/s, last return and ETA every `every` seconds."""
    from types import SimpleNamespace

    clock = [1000.0]
    monkeypatch.setattr(sweep.time, "monotonic", lambda: clock[0])
    run = SimpleNamespace(folder="gym-Hopper-v5/mrq_small/seed0", steps=30_000, step=0, state="running",
                          last_return=None, error=None)
    display = sweep.Display(SimpleNamespace(runs=[run]), fancy=False, every=60)
    assert capsys.readouterr().err.count("\n") == 1  # the state line
    run.step, run.last_return, clock[0] = 1_200, 57.5, 1030.0
    display.update(run)
    assert capsys.readouterr().err == ""  # not yet a minute
    run.step, clock[0] = 3_000, 1060.0
    display.update(run)
    line = capsys.readouterr().err.strip()
    assert "3000/30000" in line and "return 57.5" in line and "50.0 steps/s" in line and "ETA 9m00s" in line
    run.state = "done"
    display.update(run)
    assert capsys.readouterr().err.count("\n") == 1
