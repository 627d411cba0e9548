"""docs/python-api.md runs as written: its python blocks, in order, in one namespace, in an
empty folder (the page promises this)."""

from __future__ import annotations

import re

import numpy as np
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    namespace: dict = {}
    try:
        code = blocks()
        assert len(code) >= 4
        for i, block in enumerate(code):
            exec(compile(block, f"{PAGE.name} block {i + 1}", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    exp = namespace["exp"]
    assert (tmp_path / "runs" / "api-demo" / "eval.csv").is_file()
    assert namespace["seen"][0] == ("eval", 0) and ("train", 50) in namespace["seen"]
    assert namespace["resumed"].trainer.state.step == 300 == exp.trainer.state.step
    ev = namespace["ev"]  # InvertedPendulum pays +1 per step: the return is the episode length
    assert 1 <= ev.return_mean <= 1000 and ev.return_std >= 0
    assert abs(3 * ev.return_mean - round(3 * ev.return_mean)) < 1e-6  # the mean of 3 whole-number returns
    assert np.isfinite(ev.diagnostics["value_bias"])  # the diagnostics come with it


def test_experiment_validates_and_stops_on_request(tmp_path):
    import mrsq
    from mrsq.specs import SpecError

    with pytest.raises(SpecError, match="critic.num_memberz"):
        mrsq.Experiment("mrq_small", overrides={"critic.num_memberz": 3}, out=tmp_path / "x")
    threads = torch.get_num_threads()
    try:
        exp = mrsq.Experiment("mrq_small", env="gym:InvertedPendulum-v5", steps=60, out=tmp_path / "run",
                              progress=False, overrides={"warmup_steps": 20, "batch_size": 8, "train.threads": 1,
                                                         "train.eval_every": 20, "train.eval_episodes": 1})
        result = exp.train(callback=lambda event: event["kind"] != "eval" or event["step"] < 20)
        assert result.interrupted and exp.trainer.state.step == 20  # stopped after the step-20 evaluation
        assert exp.train().steps == 60  # continues exactly
        with pytest.raises(ValueError, match="evaluate at least one episode"):
            exp.evaluate(episodes=0)
    finally:
        torch.set_num_threads(threads)


def test_default_folder_is_created_only_by_training_and_load_leaves_nothing(tmp_path, monkeypatch):
    import tempfile

    from mrsq import Experiment

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile.gettempdir() answers tmp_path
    exp = Experiment("mrq_small", env="fake:point2", steps=16, overrides={"warmup_steps": 10, "batch_size": 8, "train.eval_every": 16,
                                                                         "train.eval_episodes": 1}, progress=False)
    assert exp.out.parent == tmp_path and not exp.out.exists()
    saved = exp.save(tmp_path / "agent.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    loaded = Experiment.load(saved, progress=False)
    loaded.act(np.zeros(4, np.float32), first=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no empty mrsq-* folder left behind
    exp.train()
    assert (exp.out / "eval.csv").is_file()
