"""`mrsq bench`: every bench runs (at toy sizes), reports the runtime it resolved, and compares its
work with the ceiling of the dtype it ran in; `bench all` writes one JSON file."""

from __future__ import annotations

import json

import pytest

TOY = ["--env", "fake:point2", "--repeats", "1", "--set", "encoder.hidden_dim=16", "--set", "encoder.zs_dim=16",
       "--set", "encoder.zsa_dim=16", "--set", "encoder.za_dim=8", "--set", "critic.hidden_dim=16",
       "--set", "policy.hidden_dim=16", "--set", "batch_size=16", "--set", "compile=off", "--threads", "1"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bench_all_writes_one_json_with_like_for_like_ceilings(mrsq_main, tmp_path, precision):
    out = tmp_path / "all.json"
    code, stdout, err = mrsq_main("bench", "all", "--preset", "mrq_small", "--plan-preset", "mrsq_small", *TOY,
                                  "--set", f"precision={precision}", "--loop-steps", "3", "--plan-iters", "1",
                                  "--no-scaling", "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    names = [r["benchmark"] for r in result["results"]]
    assert names == ["train", "plan", "loop", "loop"]
    for r in result["results"]:
        assert r["runtime"]["precision"] == precision == r["ceiling_dtype"]  # bf16 work vs bf16 ceiling
        assert r["runtime"]["compile"] is False and r["device"]
        assert r["ceiling_gflop_per_s"]["max"] > 0
        assert "reference" not in r  # no figures from other machines
        for row in r["rows"]:
            assert row["ms"] > 0 and row["floor_ms"] >= 0
    plan = result["results"][1]
    assert plan["preset"] == "mrsq_small" and plan["planner"] == "mppi" and plan["rows"][0]["gflop"] > 0
    loops = result["results"][2:]
    assert [r["preset"] for r in loops] == ["mrq_small", "mrsq_small"]
    assert all(r["steps_per_s"] > 0 for r in loops)
    assert f"{precision} matmul ceiling" in stdout


def test_bench_scaling_reports_time_and_flop_ratios(mrsq_main, tmp_path):
    out = tmp_path / "scaling.json"
    code, stdout, err = mrsq_main("bench", "scaling", "--preset", "mrq_small", "--plan-preset", "mrsq_small", *TOY,
                                  "--out", out)
    assert code == 0, err
    scaling = json.loads(out.read_text())["scaling"]
    assert set(scaling["plan"]) == {"samples", "iterations", "horizon", "ensemble"}
    assert set(scaling["update"]) == {"ensemble", "batch"}
    iters = scaling["plan"]["iterations"]
    assert [r["part"] for r in iters] == ["iterations=3", "iterations=6", "iterations=12"]
    # the policy rollouts are made once per action, not per iteration: slightly under 2x and 4x
    ratios = [r["flop_ratio"] for r in iters]
    assert ratios[0] == 1.0 and 1.85 < ratios[1] <= 2.0 and 3.6 < ratios[2] <= 4.0, ratios
    batch = scaling["update"]["batch"]
    assert batch[2]["flop_ratio"] == pytest.approx(4.0, rel=0.05)  # batch 512 vs 128
    assert "plan vs iterations" in stdout
