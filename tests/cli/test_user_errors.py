"""Bad inputs a newcomer gives the CLI: each is one line on stderr, exit status 2, no traceback,
and no file touched; the spec-level ones are caught by ``mrsq show`` (no training started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mrsq.components  # noqa: F401
from mrsq import specs
from mrsq.training.checkpoint import save_checkpoint
from mrsq.training.loop import Trainer

from tests.cli.test_cli import assert_one_line_error
from tests.conftest import cli_env


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


SPEC_ERRORS = [
    (["--set", "critic.num_members=true"], ["critic.num_members", "a boolean"]),
    (["--set", "optim.critic_lr=.inf"], ["optim.critic_lr", "finite"]),
    (["--set", "losses.reward=.nan"], ["losses.reward", "finite"]),
    (["--seed", "-1"], ["train.seed", "greater than or equal to 0"]),
    (["--seed", str(2**32)], ["train.seed", "less than or equal to"]),
    (["--set", "aggregators.target.type=min_of_k", "--set", "aggregators.target.k=7"],
     ["aggregators.target.k (7) exceeds critic.num_members (5)"]),
    # the cheap-pessimism components (issue 17)
    (["--set", "aggregators.planner={type: subset, k: 6}"], ["aggregators.planner.k (6) exceeds critic.num_members (5)"]),
    (["--set", "critic={type: shared_trunk, num_members: 5, shared_layers: 4}"],
     ["critic", "shared_layers (4) exceeds num_hidden (3)"]),
    (["--set", "critic={type: quantile_ensemble, num_quantiles: 3}", "--set", "aggregators.target={type: truncated_mean, drop: 3}"],
     ["aggregators.target.drop (3) drops every atom", "critic.num_quantiles (3)"]),
    (["--set", "aggregators.target={type: truncated_mean, drop: 1}"],
     ["aggregators.target.drop (1) drops every atom", "1 value per member"]),
    (["--set", "distill={head: {type: ensemble, num_members: 2}}"], ["distill", "num_members is 2"]),
    (["--set", "planner=policy", "--set", "distill={}"], ["distill", "planner 'policy' never scores"]),
    (["--set", "distill={aggregator: {type: truncated_mean, drop: 1}}"], ["distill.aggregator.drop (1) drops every atom"]),
]


@pytest.mark.parametrize("preset,args,fragments", [
    ("td3", ["--set", "distill={}"], ["'td3' is model-free", "no planner"]),
    ("tdmpc2_small", ["--set", "aggregators.target={type: subset, k: 2}"], ["aggregators.target", "planner alone"]),
])
def test_cheap_pessimism_misuse_on_other_agents(mrsq_main, preset, args, fragments):
    code, out, err = mrsq_main("show", preset, *args)
    assert code == 2 and out == ""
    assert_one_line_error(err, *fragments)


@pytest.mark.parametrize("args,fragments", SPEC_ERRORS, ids=[" ".join(a) for a, _ in SPEC_ERRORS])
def test_spec_errors_are_caught_at_show_time(mrsq_main, args, fragments):
    code, out, err = mrsq_main("show", "mrsq_small", *args)
    assert code == 2 and out == ""
    assert_one_line_error(err, *fragments)


def test_yaml_files_duplicate_keys_and_binaries(mrsq_main, tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("extends: mrq_small\nbatch_size: 64\ncritic: {hidden_dim: 64}\nbatch_size: 32\n")
    code, _, err = mrsq_main("show", dup)
    assert code == 2
    assert_one_line_error(err, str(dup), "line 4", "duplicate key 'batch_size' (first on line 2)")
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    code, _, err = mrsq_main("show", binary)
    assert code == 2
    assert_one_line_error(err, str(binary), "not a text file")


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A finished tiny run on InvertedPendulum (observations 4, actions 1)."""
    threads = torch.get_num_threads()
    spec = specs.load("mrq_small", ["train.env=gym:InvertedPendulum-v5", "train.steps=30", "train.eval_every=30",
                                    "train.eval_episodes=1", "train.threads=1", "warmup_steps=10",
                                    "batch_size=8", "train.log_every=25"])
    Trainer(spec, tmp_path / "run", progress=False, preset="mrq_small").run()
    torch.set_num_threads(threads)
    return tmp_path / "run"


def test_train_and_eval_misuse(mrsq_main, tmp_path, run_folder):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [
        (["train", "mrq_small", "--out", a_file], [f"--out {a_file}: is a file"]),
        (["train", "mrq_small", "--out", a_file / "run"], [f"is below the file {a_file}"]),
        (["train", "mrq_small", "--out", "/proc/mrsq-run"], ["--out /proc/mrsq-run: cannot create or write it"]),
        (["train", "mrq_small", "--env", "dmc:", "--out", tmp_path / "x"], ["empty name after the prefix"]),
        (["train", "mrq_small", "--import", ".relative", "--out", tmp_path / "x"], ["absolute module name"]),
        (["eval", run_folder / "checkpoint.pt", "--episodes", "0"], ["--episodes 0"]),
        (["eval", run_folder / "checkpoint.pt", "--seed", "-3"], ["--seed -3"]),
        (["eval", run_folder / "checkpoint.pt", "--env", "dmc:cartpole-swingup"],
         ["observations of 5 and actions of 1", "gym:InvertedPendulum-v5 with 4 and 1"]),
        (["eval", a_file], ["not an mrsq checkpoint (not a torch.save archive)"]),
        (["plot", run_folder, "--out", tmp_path], ["is a folder; give a file name"]),
        (["plot", run_folder, "--out", tmp_path / "curves.gif"], ["unsupported image type '.gif'"]),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "mrq_small", "--set", "train.device=cuda", "--out", tmp_path / "x"],
                      ["train.device is cuda, but torch sees no CUDA device"]))
    before = snapshot(tmp_path)
    for argv, fragments in cases:
        code, out, err = mrsq_main(*argv)
        assert code == 2, (argv, err)
        assert_one_line_error(err, *fragments)
    assert snapshot(tmp_path) == before  # nothing written, nothing touched


def test_import_of_a_module_that_raises(mrsq_main, tmp_path, monkeypatch):
    (tmp_path / "broken_components.py").write_text("raise RuntimeError('missing licence key')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = mrsq_main("show", "mrq_small", "--import", "broken_components")
    assert code == 2
    assert_one_line_error(err, "--import broken_components: the module raised RuntimeError while importing: "
                               "missing licence key")


def test_run_outputs_newcomers_expect(run_folder):
    """A final train.csv row at the end of the run (30 steps, rows every 25), '\\n' line ends."""
    text = (run_folder / "train.csv").read_bytes()
    assert b"\r" not in text and b"\r" not in (run_folder / "eval.csv").read_bytes()
    steps = [line.split(b",")[0] for line in text.splitlines()[1:]]
    assert steps == [b"25", b"30"]


def test_threads_flag(mrsq_main, run_folder):
    threads = torch.get_num_threads()
    try:
        code, out, err = mrsq_main("eval", run_folder / "checkpoint.pt", "--episodes", "1", "--threads", "1",
                                   "--no-progress")
        assert code == 0 and torch.get_num_threads() == 1, err
        code, out, _ = mrsq_main("show", "mrq_small", "--threads", "1")
        assert code == 0 and "threads: 1" in out
    finally:
        torch.set_num_threads(threads)


def test_rerunning_a_run_folders_spec_keeps_its_preset_name(run_folder, tmp_path):
    from mrsq.cli import _default_out, _preset_name

    spec_file = run_folder / "spec.yaml"
    assert _preset_name(str(spec_file)) == "mrq_small"
    out = _default_out(str(spec_file), specs.load(str(spec_file)))
    assert out.name.startswith("mrq_small_gym-InvertedPendulum-v5_s0_")


@pytest.mark.slow
def test_a_run_with_user_components_works_from_its_folder_alone(tmp_path):
    """Trained with --import: `eval`, `--resume` and `train RUN/spec.yaml` need no --import again."""
    import json
    import subprocess
    import sys

    from tests.conftest import PLUGIN_DIR, cli_env

    def mrsq(*argv, plugins=False):
        return subprocess.run([sys.executable, "-m", "mrsq.cli", *map(str, argv)], cwd=tmp_path, text=True,
                              capture_output=True, env=cli_env([PLUGIN_DIR] if plugins else None), timeout=300)

    run = tmp_path / "run"
    small = ["--set", "warmup_steps=20", "--set", "batch_size=8", "--set", "train.log_every=20",
             "--eval-episodes", "1", "--threads", "1", "--no-progress"]
    trained = mrsq("train", "mrq_small", "--import", "my_plugin", "--set", "critic.type=my_critic",
                   "--env", "gym:InvertedPendulum-v5", "--steps", "40", "--eval-every", "20", *small,
                   "--out", run, plugins=True)
    assert trained.returncode == 0, trained.stderr
    assert json.loads((run / "run.json").read_text())["imports"] == ["my_plugin"]
    # the module must still be importable (on PYTHONPATH), but nobody has to remember to --import it
    evaluated = mrsq("eval", run / "checkpoint.pt", "--episodes", "1", "--no-progress", plugins=True)
    assert evaluated.returncode == 0, evaluated.stderr
    resumed = mrsq("train", "--resume", run, "--no-progress", plugins=True)
    assert resumed.returncode == 0 and "already complete" in resumed.stderr, resumed.stderr
    again = mrsq("train", run / "spec.yaml", "--steps", "20", "--eval-every", "20", "--no-progress",
                 "--out", tmp_path / "again", plugins=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "run.json").read_text())["preset"] == "mrq_small"
    # without the module on the path: one line naming it
    missing = mrsq("eval", run / "checkpoint.pt", "--episodes", "1")
    assert missing.returncode == 2 and "--import my_plugin: cannot import it" in missing.stderr


def test_out_reuses_a_folder_whose_run_failed_before_its_first_checkpoint(mrsq_main, tmp_path):
    import json

    out = tmp_path / "run"
    out.mkdir()
    (out / "eval.csv").write_text("step,return_mean\n")
    (out / "run.json").write_text(json.dumps({"status": "failed", "step": -1}))
    (out / "notes.md").write_text("mine")
    code, _, err = mrsq_main("train", "mrq_small", "--env", "gym:InvertedPendulum-v5", "--steps", "2",
                             "--eval-every", "2", "--eval-episodes", "1", "--no-progress", "--threads", "1",
                             "--out", out)
    assert code == 0, err
    assert "failed before its first checkpoint; starting over" in err
    assert (out / "notes.md").read_text() == "mine" and (out / "checkpoint.pt").is_file()
    torch.set_num_threads(2)


def test_a_plugin_that_breaks_its_contract_is_refused_before_training(mrsq_subprocess, tmp_path):
    out = tmp_path / "run"
    proc = mrsq_subprocess("train", "mrq_small", "--import", "broken_plugin", "--set", "critic.type=flat_critic",
                           "--out", out, plugins=True)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "critic 'flat_critic' (from broken_plugin) breaks mrsq's critic contract")
    assert not out.exists()
    ok = mrsq_subprocess("show", "mrq", "--import", "my_plugin", "--set", "critic.type=my_critic", plugins=True)
    assert ok.returncode == 0, ok.stderr  # a plug-in that keeps the contract passes the same checks


def test_list_one_family_shows_fields_with_defaults(mrsq_main):
    code, out, _ = mrsq_main("list", "aggregator")
    assert code == 0
    assert "      k: int = 2  # members drawn without replacement per call" in out
    code, out, _ = mrsq_main("list", "critic")
    assert "      activation: elu|relu" in out or "activation: elu" in out


def test_an_overridden_preset_says_so_in_its_description():
    plain = specs.load("mrsq_small", ["train.steps=100"]).description
    changed = specs.load("mrsq_small", ["critic.num_members=3", "train.steps=100"]).description
    assert "[overridden" not in plain
    assert changed == f"{plain} [overridden: critic.num_members=3]"


def test_a_replay_that_cannot_fit_is_refused_before_allocating(mrsq_main, tmp_path, monkeypatch):
    monkeypatch.setattr("mrsq.training.loop.available_memory_bytes", lambda: 50 * 2**20)
    code, _, err = mrsq_main("train", "mrq_small", "--env", "gym:InvertedPendulum-v5", "--steps", "1000000",
                             "--out", tmp_path / "run")
    assert code == 2
    assert_one_line_error(err, "replay.capacity: 1000000 transitions of this env need", "GiB of memory is available")
    assert not (tmp_path / "run").exists()
    code, _, err = mrsq_main("train", "mrq_small", "--env", "gym:InvertedPendulum-v5", "--steps", "1000",
                             "--set", "batch_size=100000", "--out", tmp_path / "run")
    assert code == 2
    assert_one_line_error(err, "batch_size: 100000 samples need about", "lower batch_size")
    assert not (tmp_path / "run").exists()


def test_check_component_works_in_a_fresh_process(tmp_path):
    """A user's test file imports only mrsq.testing: the built-ins register themselves."""
    import subprocess
    import sys

    code = "from mrsq.testing import check_component; check_component('critic', 'ensemble'); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


FAMILY_PLUGINS = {
    # family: (broken module text, the id to train with, the message's start)
    "aggregator": ('''
from typing import Literal
from mrsq.registry import AGGREGATORS
from mrsq.specs import Spec
class S(Spec):
    type: Literal["lazy_min"] = "lazy_min"
@AGGREGATORS.register("lazy_min", spec=S)
def lazy_min(values):
    return values  # forgets to reduce the members
''', "fake:point2", "aggregator 'lazy_min' (from broken_aggregator) breaks mrsq's aggregator contract: "
                    "lazy_min: returned shape (5, 5, 1)"),
    "planner": ('''
from typing import Literal
import torch
from mrsq.planners.base import Planner
from mrsq.registry import PLANNERS
from mrsq.specs import Spec
class S(Spec):
    type: Literal["bang_bang"] = "bang_bang"
@PLANNERS.register("bang_bang", spec=S)
class BangBang(Planner):
    def __init__(self, spec, action_dim):
        super().__init__()
        self.action_dim = action_dim
    def plan(self, model, obs, first=False, explore=True):
        return torch.full((self.action_dim,), 2.0)  # out of bounds
''', "fake:point2", "planner 'bang_bang' (from broken_planner) breaks mrsq's planner contract: "
                    "bang_bang: action [2.0, 2.0] outside [-1, 1]"),
    "encoder": ('''
from typing import Literal
from mrsq.encoders.elu import EluEncoder, EluEncoderSpec
from mrsq.registry import ENCODERS
class S(EluEncoderSpec):
    type: Literal["short_zs"] = "short_zs"
@ENCODERS.register("short_zs", spec=S)
class ShortZs(EluEncoder):
    def zs(self, obs):
        return super().zs(obs)[:, :-1]  # one latent unit short
''', "fake:point2", "encoder 'short_zs' (from broken_encoder) breaks mrsq's encoder contract: short_zs: zs shape"),
    "policy": ('''
from typing import Literal
from mrsq.policies.tanh import TanhPolicy, TanhPolicySpec
from mrsq.registry import POLICIES
class S(TanhPolicySpec):
    type: Literal["nan_policy"] = "nan_policy"
@POLICIES.register("nan_policy", spec=S)
class NaNPolicy(TanhPolicy):
    def forward(self, zs):
        action, pre = super().forward(zs)
        return action * float("nan"), pre
''', "fake:point2", "policy 'nan_policy' (from broken_policy) breaks mrsq's policy contract"),
    "env": ('''
import numpy as np
from mrsq.registry import ENVS
from mrsq.testing import PointEnv
class Wide(PointEnv):
    def _obs(self):
        return super()._obs().astype(np.float64)
@ENVS.register("wide")
def make(name, seed):
    return Wide(seed=seed)
''', "wide:point", "env 'wide:point' (from broken_env) breaks mrsq's env contract: wide:point: reset gave float64"),
}


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """tmp_path importable, and every registry and sys.modules as they were afterwards (the
    plug-ins register into the process's registries: in-process is ~10 s cheaper per case)."""
    from mrsq.registry import FAMILIES

    monkeypatch.syspath_prepend(str(tmp_path))
    saved = {family: dict(reg._entries) for family, reg in FAMILIES.items()}
    modules = set(sys.modules)
    yield tmp_path
    for family, reg in FAMILIES.items():
        reg._entries.clear()
        reg._entries.update(saved[family])
    for name in set(sys.modules) - modules:
        if name.startswith(("broken_", "fixed_")):
            del sys.modules[name]


@pytest.mark.parametrize("family", sorted(FAMILY_PLUGINS))
def test_a_broken_plugin_of_each_family_is_refused_before_training(family, user_modules, mrsq_main):
    text, env_id, message = FAMILY_PLUGINS[family]
    (user_modules / f"broken_{family}.py").write_text(text)
    out = user_modules / "run"
    code, _, err = mrsq_main("train", "mrq_small", "--import", f"broken_{family}", "--env", env_id, "--steps", "2",
                             "--no-progress", "--out", out)
    assert code == 2, err
    assert_one_line_error(err, message)
    assert not out.exists()


@pytest.mark.slow
def test_the_same_plugins_fixed_pass_and_train(user_modules, mrsq_main):
    fixed = {"aggregator": ("return values  # forgets to reduce the members", "return values.amin(0)"),
             "planner": ("torch.full((self.action_dim,), 2.0)  # out of bounds",
                         "model.policy(model.encode(obs.reshape(1, -1)))[0].clamp(-1, 1)"),
             "env": ("super()._obs().astype(np.float64)", "super()._obs()")}
    for family, (old, new) in fixed.items():
        text = FAMILY_PLUGINS[family][0]
        assert old in text
        (user_modules / f"fixed_{family}.py").write_text(text.replace(old, new))
    out = user_modules / "run"
    args = ["train", "mrq_small", "--env", "wide:point", "--steps", "30", "--set", "warmup_steps=10",
            "--set", "batch_size=8", "--set", "aggregators.target={type: lazy_min}",
            "--set", "planner={type: bang_bang}", "--eval-every", "30", "--eval-episodes", "1", "--no-progress",
            "--threads", "1", "--out", out]
    args += [a for family in fixed for a in ("--import", f"fixed_{family}")]
    threads = torch.get_num_threads()
    try:
        code, _, err = mrsq_main(*args)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_the_console_script_imports_from_the_current_folder_and_runs_an_agent_by_name(tmp_path):
    """`mrsq` (the console script, which unlike `python -m` does not put the current folder on
    sys.path) finds ./my_ddpg.py for --import, and a registered agent runs by its name."""
    import re
    import shutil

    doc = (Path(__file__).resolve().parents[2] / "docs" / "porting-ensemble-min.md").read_text()
    module = re.search(r"```python\n# file: my_ddpg.py\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "my_ddpg.py").write_text(module)
    script = shutil.which("mrsq", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}
    shown = subprocess.run([script, "show", "ddpg", "--import", "my_ddpg"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "type: ddpg" in shown.stdout
    code = subprocess.run([script, "show", "nope_agent"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert code.returncode == 2 and "registered agent's name" in code.stderr
