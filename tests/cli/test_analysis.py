"""`mrsq plot` and `mrsq compare` on real run folders (tiny agents trained in-process)."""

from __future__ import annotations

import numpy as np
import pytest

from mrsq import specs
from mrsq.cli import main
from mrsq.compare import auc
from mrsq.training.loop import Trainer

TINY = ["encoder.zs_dim=16", "encoder.za_dim=8", "encoder.zsa_dim=16", "encoder.hidden_dim=16",
        "critic.hidden_dim=16", "policy.hidden_dim=16", "batch_size=8", "target_update_every=20",
        "warmup_steps=30", "train.steps=100", "train.eval_every=50", "train.eval_episodes=1",
        "train.log_every=50", "train.env=fake:point2", "train.threads=1"]
SEARCH = ["planner.num_samples=16", "planner.num_elites=4", "planner.num_policy_trajectories=2",
          "planner.iterations=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for preset in ("mrq_small", "mrsq_small"):
        for seed in (0, 1):
            extra = SEARCH if preset == "mrsq_small" else []
            spec = specs.load(preset, [*TINY, *extra, f"train.seed={seed}"])
            out = root / f"{preset}_s{seed}"
            Trainer(spec, out, progress=False, preset=preset).run()
            paths.append(out)
    return paths


def test_plot_writes_a_png_grouped_by_preset(runs, tmp_path, capsys):
    png = tmp_path / "fig" / "curves.png"
    assert main(["plot", *map(str, runs), "--out", str(png), "--title", "tiny"]) == 0
    assert png.stat().st_size > 20_000
    assert f"wrote {png}" in capsys.readouterr().out


def test_compare_prints_a_table_per_env(runs, capsys):
    assert main(["compare", *map(str, runs), "--reps", "100"]) == 0
    out = capsys.readouterr().out
    assert "## fake:point2 (at step 100" in out
    lines = [line for line in out.splitlines() if line.startswith("| mr")]
    assert [line.split("|")[1].strip() for line in lines] == ["mrq_small", "mrsq_small"]
    for line in lines:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells[1] == "2" and "+-" in cells[2] and "[" in cells[3]


def test_compare_numbers_are_the_runs_numbers(runs, capsys):
    from mrsq.runs import load_run

    main(["compare", str(runs[0]), str(runs[1]), "--reps", "100"])
    out = capsys.readouterr().out
    a, b = load_run(runs[0]), load_run(runs[1])
    finals = np.array([a.columns["return_mean"][-1], b.columns["return_mean"][-1]])
    assert f"{finals.mean():.1f} +- {finals.std():.1f}" in out


def test_auc_is_the_mean_return_over_the_span():
    assert auc(np.array([0, 10, 20]), np.array([0.0, 10.0, 10.0])) == pytest.approx(7.5)
    assert auc(np.array([5]), np.array([3.0])) == 3.0


def test_not_a_run_folder_is_a_user_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "no eval.csv" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
