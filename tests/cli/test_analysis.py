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
    # search divergence: each searching run's mean over its evaluations after step 0 (the point
    # env's truncated 50-step episodes leave no state whose value can be scored: value bias "-")
    main(["compare", str(runs[2]), str(runs[3]), "--reps", "100"])
    out = capsys.readouterr().out
    c, d = load_run(runs[2]), load_run(runs[3])
    per_run = np.array([np.mean(np.asarray(r.columns["search_divergence"], float)[1:]) for r in (c, d)])
    assert per_run.min() > 0 and f"{per_run.mean():.4f} +- {per_run.std():.4f} |" in out
    assert out.splitlines()[4].split("|")[-3].strip() == "-"


def test_auc_is_the_mean_return_over_the_span():
    assert auc(np.array([0, 10, 20]), np.array([0.0, 10.0, 10.0])) == pytest.approx(7.5)
    assert auc(np.array([5]), np.array([3.0])) == 3.0


def test_not_a_run_folder_is_a_user_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "no eval.csv" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2


def test_frontier_on_a_committed_sweep(tmp_path, capsys):
    """`mrsq frontier` on issue 9's sweep folder: counted FLOPs per step relative to mrsq_small,
    the pessimism columns averaged over the post-warm-up evaluations by hand, a figure and JSON."""
    import json
    from pathlib import Path

    from mrsq.runs import load_run

    sweep = Path(__file__).resolve().parents[2] / "docs" / "results" / "sweep_small"
    png, out = tmp_path / "frontier.png", tmp_path / "frontier.json"
    assert main(["frontier", str(sweep), "--out", str(png), "--json", str(out), "--threads", "1"]) == 0
    assert "| mrq_mpc_small | 3 |" in capsys.readouterr().out and png.stat().st_size > 20_000
    block = json.loads(out.read_text())["dmc:cartpole-swingup"]
    rows = {r["variant"]: r for r in block["rows"]}
    assert block["reference"] == "mrsq_small" and rows["mrsq_small"]["flops_rel"] == 1.0
    # the same sizes and planner, 2 critics instead of 5: the critic FLOPs scale by 2/5 exactly
    assert rows["mrq_mpc_small"]["critic_flops_rel"] == pytest.approx(0.4, rel=1e-3)
    assert rows["mrq_small"]["flops_rel"] < rows["mrq_mpc_small"]["flops_rel"] < 1.0  # no search: no planning FLOPs
    # value bias: each seed's mean over evaluations after its 2000-step warm-up, then over seeds
    per_seed = []
    for seed in range(3):
        run = load_run(sweep / "dmc-cartpole-swingup" / "mrsq_small" / f"seed{seed}")
        keep = run.steps > 2000
        per_seed.append(run.columns["value_bias"][keep].mean())
    assert rows["mrsq_small"]["value_bias"]["mean"] == pytest.approx(np.mean(per_seed))
    assert rows["mrsq_small"]["value_bias"]["std"] == pytest.approx(np.std(per_seed))


def test_frontier_refuses_a_bad_image_name(tmp_path, capsys):
    assert main(["frontier", str(tmp_path), "--out", str(tmp_path / "f.txt")]) == 2
    assert "unsupported image type" in capsys.readouterr().err
