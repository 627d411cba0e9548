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
        # each part's floor is taken at the ceiling measured beside its own timed windows
        beside = r["ceiling_beside_work"]
        assert beside["probes"] >= 1 and 0 < beside["min"] <= beside["median"] <= beside["max"]
        for row in r["rows"]:
            assert row["ms"] > 0 and row["floor_ms"] >= 0
            if row["gflop"] > 0:
                assert beside["min"] * 0.999 <= row["ceiling_gflop_per_s"] <= beside["max"] * 1.001
                assert row["floor_ms"] == pytest.approx(row["gflop"] / row["ceiling_gflop_per_s"] * 1e3)
        total = r["rows"][-1]
        if len(r["rows"]) > 1:  # the total sums its parts, each floor at its own ceiling
            assert total["ms"] == pytest.approx(sum(x["ms"] for x in r["rows"][:-1]))
            assert total["floor_ms"] == pytest.approx(sum(x["floor_ms"] for x in r["rows"][:-1]))
    plan = result["results"][1]
    assert plan["preset"] == "mrsq_small" and plan["planner"] == "mppi" and plan["rows"][0]["gflop"] > 0
    loops = result["results"][2:]
    assert [r["preset"] for r in loops] == ["mrq_small", "mrsq_small"]
    assert all(r["steps_per_s"] > 0 for r in loops)
    assert f"{precision} matmul ceiling" in stdout and "beside the work" in stdout and "x best-of floor" in stdout


def test_ceiling_probe_times_the_best_shape_of_the_report():
    from mrsq.bench import CeilingProbe, _row, _total_row

    probe = CeilingProbe({"256x512x512": 10.0, "1280x512x512": 50.0, "max": 50.0}, seconds=0.01)
    assert probe.a.shape == (1280, 512) and probe.calls == 1  # 0.01 s at 50 GFLOP/s: one call
    assert probe() > 0 and probe() > 0 and len(probe.samples) == 2
    assert probe.median(1) == probe.samples[1]
    # floors: 2 GFLOP at 100 GFLOP/s is 20 ms; the total keeps each part's own floor
    a, b = _row("a", 40.0, 2e9, 100.0), _row("b", 10.0, 1e9, 50.0)
    assert a["floor_ms"] == pytest.approx(20.0) and b["floor_ms"] == pytest.approx(20.0)
    total = _total_row("total", [a, b])
    assert total["ms"] == 50.0 and total["floor_ms"] == pytest.approx(40.0)
    assert total["ceiling_gflop_per_s"] == pytest.approx(75.0)  # 3 GFLOP over 40 ms


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
