"""Tests for the ``mrsq`` command line: in-process through ``mrsq.cli.main`` where that suffices,
as a real ``python -m mrsq.cli`` subprocess for exit status, tracebacks, plug-ins and training."""

from __future__ import annotations

import json

import os

os.environ.setdefault("MUJOCO_GL", "disable")

import csv
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import mrsq.components  # noqa: F401  (registers the built-in components)
from mrsq import registry, specs
from mrsq.training.checkpoint import FORMAT_VERSION, save_checkpoint

TRAIN_ARGS = ["train", "mrq_small", "--env", "dmc:cartpole-swingup", "--eval-episodes", "1",
              "--set", "warmup_steps=100", "--set", "target_update_every=50", "--set", "train.threads=1",
              "--no-progress"]


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a single stderr line, got:\n{stderr}"
    assert lines[0].startswith("mrsq: error: "), lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows, f"{path} is empty"
    header, data = rows[0], rows[1:]
    for row in data:
        assert len(row) == len(header), f"{path}: incomplete row {row}"
    return header, data


# ---------------------------------------------------------------------------------- list
def test_list_prints_every_family(mrsq_main):
    code, out, err = mrsq_main("list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    for family, reg in registry.FAMILIES.items():
        assert f"{family}:" in lines
        for name in reg.names():
            assert any(line.split()[:1] == [name] for line in lines if line.startswith("  ")), name
    for name in ("ensemble", "min_of_k", "mrq", "dmc", "mrq_small"):
        assert f"  {name} " in out


def test_list_presets_with_descriptions(mrsq_main):
    code, out, _ = mrsq_main("list", "preset")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "preset:"
    assert len(lines) == 1 + len(registry.PRESETS)
    for line, name in zip(lines[1:], registry.PRESETS.names()):
        description = registry.PRESETS.help(name)
        assert description
        assert line.split()[0] == name and line.endswith(description)
    assert any("mrq_small" in line and "CPU-sized MR.Q" in line for line in lines)
    assert "critic:" not in lines


def test_list_unknown_family_exits_2(mrsq_main):
    code, out, err = mrsq_main("list", "nofamily")
    assert code == 2 and out == ""
    assert_one_line_error(err, "unknown family 'nofamily'", "(known: agent, aggregator,")
    code, _, err = mrsq_main("list", "presets")
    assert code == 2 and "did you mean 'preset'?" in err


def test_list_bad_import_exits_2(mrsq_main):
    code, _, err = mrsq_main("list", "--import", "no_such_module_mrsq_test")
    assert code == 2
    assert_one_line_error(err, "--import no_such_module_mrsq_test: cannot import it")


# ---------------------------------------------------------------------------------- show
def test_show_with_override(mrsq_main):
    code, out, err = mrsq_main("show", "mrq", "--set", "critic.num_members=5")
    assert code == 0 and err == ""
    data = yaml.safe_load(out)
    assert data["critic"]["num_members"] == 5
    assert "  num_members: 5\n" in out
    assert specs.from_yaml(out) == specs.load("mrq", ["critic.num_members=5"])


def test_show_flags_set_train_fields(mrsq_main):
    code, out, _ = mrsq_main("show", "mrq_small", "--env", "dmc:cheetah-run", "--steps", "7", "--seed", "3",
                             "--eval-every", "2", "--eval-episodes", "4")
    assert code == 0
    train = yaml.safe_load(out)["train"]
    assert (train["env"], train["steps"], train["seed"], train["eval_every"], train["eval_episodes"]) == \
        ("dmc:cheetah-run", 7, 3, 2, 4)


def test_show_errors_in_process(mrsq_main):
    code, out, err = mrsq_main("show", "mrq", "--set", "aggregators.target=mni")
    assert code == 2 and out == ""
    assert_one_line_error(err, "aggregators.target", "did you mean 'min'?")
    code, out, err = mrsq_main("show", "mrq_smal")
    assert code == 2 and out == ""
    assert_one_line_error(err, "unknown preset 'mrq_smal'; did you mean 'mrq_small'?")


def test_every_agent_is_listed_and_model_free_ones_refuse_search(mrsq_main):
    code, out, _ = mrsq_main("list", "agent")
    names = [line.split()[0] for line in out.splitlines()[1:] if not line.startswith("      ")]  # not field lines
    assert code == 0 and names == ["mrq", "sac", "td3", "tdmpc2"]
    code, out, _ = mrsq_main("list", "policy")
    assert "  tanh_gaussian " in out
    for preset in ("td3", "redq"):
        code, out, err = mrsq_main("train", preset, "--set", "planner.type=mppi", "--out", "/nonexistent/x")
        assert code == 2 and out == ""
        assert_one_line_error(err, "planner: ", "is model-free", "'mppi'")
    code, out, _ = mrsq_main("show", "tdmpc2", "--set", "planner.type=cem")
    assert code == 0 and "type: cem" in out


@pytest.mark.parametrize("override, fragments", [
    ("critic.num_memberz=5", ["critic.num_memberz: unknown field", "did you mean 'num_members'?", "(allowed: "]),
    ("critic.type=nope", ["critic: unknown critic 'nope'", "(known: ensemble"]),
])
def test_show_user_error_subprocess(mrsq_subprocess, override, fragments):
    proc = mrsq_subprocess("show", "mrq", "--set", override)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, *fragments)


def test_user_plugin_via_import(mrsq_subprocess):
    proc = mrsq_subprocess("show", "mrq", "--import", "my_plugin", "--set", "critic.type=my_critic",
                           "--set", "critic.scale=0.5", plugins=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    critic = yaml.safe_load(proc.stdout)["critic"]
    assert critic["type"] == "my_critic" and critic["scale"] == 0.5
    assert critic["num_members"] == 2  # mrq's value carried over to the subclass spec
    assert "my_critic" not in registry.CRITICS  # the test process itself stays unpolluted
    # a plug-in critic whose forward takes no `members` cannot serve a subset aggregator: said at show time
    proc = mrsq_subprocess("show", "mrsq_small", "--import", "my_plugin", "--set", "critic.type=my_critic",
                           "--set", "aggregators.planner={type: subset, k: 2}", plugins=True)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "aggregators.planner", "'my_critic'", "takes no `members`")


# ---------------------------------------------------------------------------------- train (user errors)
def test_train_wrong_env_id_writes_nothing(mrsq_main, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = mrsq_main("train", "mrq_small", "--env", "dmc:cheetah-runn", "--steps", "10",
                               "--out", out_dir)
    assert code == 2
    assert_one_line_error(err, "unknown dm_control task 'cheetah-runn'", "did you mean cheetah-run")
    assert not out_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_train_unknown_env_prefix(mrsq_main, tmp_path):
    code, _, err = mrsq_main("train", "mrq_small", "--env", "dcm:cheetah-run", "--steps", "10",
                             "--out", tmp_path / "run")
    assert code == 2
    assert_one_line_error(err, "unknown env prefix 'dcm'; did you mean 'dmc'?")
    assert not (tmp_path / "run").exists()


def test_train_refuses_folder_holding_a_run(mrsq_main, tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    eval_csv = out_dir / "eval.csv"
    original = b"step,return_mean,return_std,episodes,wall_time\n150,28.9,0,1,4.2\n"
    eval_csv.write_bytes(original)
    code, _, err = mrsq_main("train", "mrq_small", "--env", "dmc:cartpole-swingup", "--steps", "10",
                             "--out", out_dir)
    assert code == 2
    assert_one_line_error(err, f"--out {out_dir}: already holds a run", "nothing was overwritten")
    assert eval_csv.read_bytes() == original
    assert sorted(p.name for p in out_dir.iterdir()) == ["eval.csv"]


# ---------------------------------------------------------------------------------- eval (user errors)
def test_eval_corrupt_checkpoint_subprocess(mrsq_subprocess, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(random.Random(0).randbytes(4096))
    proc = mrsq_subprocess("eval", ckpt, "--episodes", "1")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, str(ckpt), "not an mrsq checkpoint (not a torch.save archive)")


def test_eval_missing_checkpoint(mrsq_main, tmp_path):
    code, out, err = mrsq_main("eval", tmp_path / "nope.pt")
    assert code == 2 and out == ""
    assert_one_line_error(err, f"{tmp_path / 'nope.pt'}: no such checkpoint file")


def test_eval_truncated_and_foreign_checkpoints(mrsq_main, tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, spec_yaml=specs.to_yaml(specs.load("mrq_small")),
                    agent_state={"w": torch.zeros(1000)}, step=3)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    code, _, err = mrsq_main("eval", truncated)
    assert code == 2
    assert_one_line_error(err, str(truncated), "not a readable mrsq checkpoint")

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    code, _, err = mrsq_main("eval", foreign)
    assert code == 2
    assert_one_line_error(err, "not an mrsq checkpoint (no format_version)")

    future = tmp_path / "future.pt"
    torch.save({"format_version": FORMAT_VERSION + 1, "spec": "", "step": 0, "agent": {}}, future)
    code, _, err = mrsq_main("eval", future)
    assert code == 2
    assert_one_line_error(err, f"checkpoint format {FORMAT_VERSION + 1} is not supported")


def test_eval_checkpoint_whose_weights_do_not_match(mrsq_main, tmp_path):
    ckpt = tmp_path / "mismatch.pt"
    spec_yaml = specs.to_yaml(specs.load("mrq_small", ["train.env=fake:point2", "train.device=cpu"]))
    for agent_state in ({"modules": {}}, {"modules": []}, []):
        save_checkpoint(ckpt, spec_yaml=spec_yaml, agent_state=agent_state, step=1)
        code, out, err = mrsq_main("eval", ckpt, "--episodes", "1")
        assert code == 2 and out == ""
        assert_one_line_error(err, f"{ckpt}: weights do not match its spec")


# ---------------------------------------------------------------------------------- training (slow)
@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_train_then_eval_subprocess(mrsq_subprocess, tmp_path, device):
    """The same run on the CPU (pinned: `train.device=cpu`, so a GPU machine runs the CPU test)
    and, where there is one, on CUDA."""
    out_dir = tmp_path / "run"
    proc = mrsq_subprocess(*TRAIN_ARGS, "--steps", "300", "--eval-every", "150", "--set", f"train.device={device}",
                           "--set", "train.log_every=100", "--out", out_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mrsq: done after 300 steps" in proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt", "eval.csv", "replay",
                                                         "run.json", "spec.yaml", "train.csv"]
    # run.json: what `auto` resolved to here (the suite pins auto to fp32 eager); spec.yaml keeps auto
    run = json.loads((out_dir / "run.json").read_text())
    assert run["runtime"]["requested"] == {"precision": "auto", "compile": "auto"}
    assert run["runtime"]["precision"] == "fp32" and run["runtime"]["compile"] is False
    assert run["runtime"]["device"] == device and run["runtime"]["device_name"] and run["runtime"]["torch"]
    assert run["preset"] == "mrq_small"  # the label `mrsq plot` and `mrsq compare` use
    assert run["status"] == "done" and run["step"] == run["steps"] == 300
    assert f"mrsq: runtime: {device}" in proc.stderr and "precision fp32" in proc.stderr

    spec = specs.from_yaml((out_dir / "spec.yaml").read_text())
    assert spec.precision == "auto" and spec.compile == "auto"
    assert spec == specs.load("mrq_small", ["warmup_steps=100", "target_update_every=50", "train.threads=1",
                                            "train.log_every=100", "train.env=dmc:cartpole-swingup",
                                            "train.steps=300", "train.eval_every=150",
                                            "train.eval_episodes=1", f"train.device={device}"])
    assert spec.train.env == "dmc:cartpole-swingup" and spec.train.seed == 0 and spec.train.steps == 300

    header, rows = read_csv(out_dir / "eval.csv")
    assert header[:4] == ["step", "return_mean", "return_std", "episodes"]
    assert [int(r[0]) for r in rows] == [0, 150, 300]  # step 0: the untrained agent, as MR.Q
    for r in rows:
        assert 0.0 <= float(r[1]) <= 1000.0 and float(r[2]) == 0.0 and int(r[3]) == 1
        row = dict(zip(header, r))
        # 500 agent steps per episode, truncated: the states at least 459 steps before the cut count
        assert int(row["value_states"]) == 500 - 459 + 1
        assert float(row["value_error_abs"]) >= 0 and 0 <= float(row["overestimation_frac"]) <= 1
        assert float(row["search_divergence"]) == 0.0  # mrq_small acts with its policy

    header, rows = read_csv(out_dir / "train.csv")
    assert {"step", "steps_per_s", "critic/loss", "encoder/loss", "policy/loss"} <= set(header)
    assert [int(r[0]) for r in rows] == [100, 200, 300]
    last = dict(zip(header, rows[-1]))
    assert float(last["steps_per_s"]) > 0
    assert float(last["critic/loss"]) >= 0  # training ran between steps 200 and 300
    assert float(last["search/divergence"]) == 0.0

    payload = torch.load(out_dir / "checkpoint.pt", weights_only=True)
    assert payload["format_version"] == 1
    assert payload["step"] == 300
    assert isinstance(payload["spec"], str) and specs.from_yaml(payload["spec"]) == spec
    assert isinstance(payload["agent"], dict) and payload["agent"]["modules"]

    proc = mrsq_subprocess("eval", out_dir / "checkpoint.pt", "--episodes", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("dmc:cartpole-swingup: return ") and "over 1 episodes (checkpoint step 300)" in line
    assert "value error" in line and "of 42 states" in line
    assert 0.0 <= float(line.split("return ")[1].split()[0]) <= 1000.0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_cleanly(tmp_path, mrsq_env, sig):
    out_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mrsq.cli", *TRAIN_ARGS, "--steps", "5000", "--eval-every", "200",
           "--set", "train.log_every=50", "--out", str(out_dir)]
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("w") as out_f, stderr.open("w") as err_f:
        # SIGINT ignored in the child, as for a run started with `nohup ... &` from a script
        ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=mrsq_env, stdout=out_f, stderr=err_f, preexec_fn=ignore)
        try:
            deadline = time.monotonic() + 120
            train_csv = out_dir / "train.csv"
            # wait for the row at step 100 (end of warm-up) so the interrupt lands while training
            while time.monotonic() < deadline and proc.poll() is None:
                if train_csv.exists() and len(train_csv.read_text().splitlines()) >= 3:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, f"training ended early:\n{stderr.read_text()}"
            assert train_csv.exists() and len(train_csv.read_text().splitlines()) >= 3, "no train.csv rows in time"
            time.sleep(0.5)
            proc.send_signal(sig)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = stderr.read_text()
    assert code == 130, err
    assert "Traceback" not in err
    assert "mrsq: interrupted after" in err

    payload = torch.load(out_dir / "checkpoint.pt", weights_only=True)
    assert payload["format_version"] == 1 and payload["step"] >= 100
    assert payload["agent"]["modules"]
    assert not (out_dir / "checkpoint.pt.tmp").exists()

    header, rows = read_csv(out_dir / "train.csv")
    assert header[0] == "step" and len(rows) >= 2
    assert [int(r[0]) for r in rows] == [50 * (i + 1) for i in range(len(rows))]
    assert int(rows[-1][0]) <= payload["step"]
    header, rows = read_csv(out_dir / "eval.csv")
    assert header[:4] == ["step", "return_mean", "return_std", "episodes"]
    assert [int(r[0]) for r in rows] == [200 * i for i in range(len(rows))]
