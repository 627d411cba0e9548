"""train.loggers: every train.csv / eval.csv column reaches TensorBoard and W&B (offline) with the
env step as its step, resumed runs continue the same TensorBoard folder and W&B run without
duplicated steps, and a backend that is not installed is one line before any work."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import struct
from collections import Counter

import pytest

from mrsq.training import loggers

from test_resume import TINY, run_cli, sigterm_mid_run

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

ARGS = ["train", "mrq_small", "--env", "gym:InvertedPendulum-v5", "--steps", "300", "--no-progress", "--out", "run",
        "--set", "train.log_every=25", "--set", "train.eval_every=100", "--set", "train.checkpoint_every=100",
        "--set", "train.loggers=[csv, tensorboard, wandb]"]
ARGS += [a for o in TINY for a in ("--set", o)]


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: offline, never a prompt


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()  # honours purge_step: events a killed process wrote after its checkpoint are dropped
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(run_folder, last_process_only: bool = False) -> list[dict]:
    """History rows of every offline W&B file of a run folder. The files are W&B's LevelDB-style
    log (a 7-byte ':W&B' header, 32 KiB blocks of records with a 7-byte crc/length/type header)
    of protobuf ``Record`` messages; read by hand because wandb 0.31 no longer ships a reader."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    paths = sorted(glob.glob(str(run_folder / "wandb" / "offline-run-*" / "run-*.wandb")))  # by start time
    for path in paths[-1:] if last_process_only else paths:
        data = open(path, "rb").read()
        assert data[:4] == b":W&B"
        pos, pending = 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind == 0 and length == 0:
                continue
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):  # FULL or LAST: a whole record
                record = pb.Record()
                record.ParseFromString(pending)
                if record.WhichOneof("record_type") == "history":
                    rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                 for i in record.history.item})
                pending = b""
    return rows


def check_every_column(run, tb, history, kinds=("train", "eval")):
    """Each numeric CSV cell is in TensorBoard at its step (once) and in W&B's history."""
    by_step = {}
    for row in history:
        by_step.setdefault(row["_step"], {}).update(row)
    for kind in kinds:
        rows = csv_rows(run / f"{kind}.csv")
        for column in rows[0]:
            cells = [(int(r["step"]), float(r[column])) for r in rows if column != "step" and r[column] not in ("", "nan")
                     and math.isfinite(float(r[column]))]
            if not cells:
                continue
            got = tb[f"{kind}/{column}"]
            assert [s for s, _ in got] == [s for s, _ in cells], (kind, column)  # no duplicated step
            for (_, want), (_, value) in zip(cells, got):
                assert value == pytest.approx(want, rel=1e-4, abs=1e-5)
            for step, want in cells:
                assert by_step[step][f"{kind}/{column}"] == pytest.approx(want, rel=1e-4, abs=1e-5), (kind, column, step)


@pytest.mark.slow
def test_sigterm_and_resume_reach_tensorboard_and_wandb_once(tmp_path, no_wandb_account):
    code, err = sigterm_mid_run(ARGS, tmp_path, tmp_path / "run")
    assert code == 130, err
    resumed = run_cli(["train", "--resume", "run", "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    run = tmp_path / "run"
    history = wandb_history(run)
    files = glob.glob(str(run / "wandb" / "offline-run-*"))
    state = json.loads((run / loggers.STATE_FILE).read_text())
    assert len(files) == 2 and all(f.endswith(state["wandb"]["id"]) for f in files)  # one W&B run, resumed
    steps = [r["_step"] for r in history]
    assert steps == sorted(steps)  # increasing across the two processes
    sent = Counter((r["_step"], key) for r in history for key in r if not key.startswith("_"))
    assert sent and max(sent.values()) == 1, [pair for pair, n in sent.items() if n > 1][:5]  # no value sent twice
    check_every_column(run, tensorboard_scalars(run / "tensorboard"), history)
    assert json.loads((run / "run.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_a_killed_runs_tensorboard_rows_after_its_checkpoint_are_purged(tmp_path, no_wandb_account):
    """SIGKILL at step 175 (rows 125 and 150 logged after the step-100 checkpoint), resume: each
    TensorBoard step once, with the resumed values."""
    killed = run_cli(ARGS, tmp_path, failpoint="step:175")
    assert killed.returncode == -9, killed.stderr
    assert run_cli(["train", "--resume", "run", "--no-progress"], tmp_path).returncode == 0
    run = tmp_path / "run"
    tb = tensorboard_scalars(run / "tensorboard")
    rows = csv_rows(run / "train.csv")
    assert [s for s, _ in tb["train/episode_return"]] == [int(r["step"]) for r in rows
                                                          if r["episode_return"] not in ("", "nan")]
    assert [s for s, _ in tb["train/critic/loss"]] == [int(r["step"]) for r in rows if r["critic/loss"] not in ("", "nan")]
    # W&B (no purge: the killed process's rows 125 and 150 stay in its own file): the resumed
    # process logged every row after the checkpoint, each value once
    resumed = wandb_history(run, last_process_only=True)
    sent = Counter((r["_step"], key) for r in resumed for key in r if not key.startswith("_"))
    assert sent and max(sent.values()) == 1, [pair for pair, n in sent.items() if n > 1][:5]
    resumed_steps = {r["_step"] for r in resumed if r["_step"] > 100}
    assert resumed_steps == {int(r["step"]) for r in rows if int(r["step"]) > 100} | {200, 300}


def test_a_backend_that_is_not_installed_is_one_line_before_any_work(tmp_path, monkeypatch, mrsq_main):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, out, err = mrsq_main("train", "mrq_small", "--env", "fake:point2", "--out", tmp_path / "run",
                               "--set", "train.loggers=[csv, wandb]", "--no-progress")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["mrsq: error: train.loggers: 'wandb' is not installed; install mrsq's "
                                        "extra: pip install -e \".[wandb]\" (or pip install wandb)"]
    assert not (tmp_path / "run").exists()
    code, _, err = mrsq_main("show", "mrq", "--set", "train.loggers=[csv, mlflow]")
    assert code == 2 and "train.loggers" in err


def test_wandb_is_offline_unless_the_user_set_it_up(monkeypatch, tmp_path):
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert loggers.wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    os.chmod(tmp_path / ".netrc", 0o600)
    assert loggers.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.wandb_mode() == "disabled"


def test_rows_flatten_to_numbers_and_specs_to_hyperparameters():
    assert loggers.numeric({"step": 5, "a": "1.5", "b": "", "c": float("nan"), "d": "x", "e": 2}) == {"a": 1.5, "e": 2.0}
    assert loggers.flatten({"critic": {"num_members": 10, "x": None}, "loggers": ["csv"]}) == {
        "critic.num_members": 10, "critic.x": "None", "loggers": "['csv']"}
