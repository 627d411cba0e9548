"""benchmarks/gpu_smoke.py on the CPU: the GPU machine's first command must not fail for a reason
a CPU could have caught (a renamed function, a broken check), so the suite runs it, quick and on
the CUDA branch, every time. Its figures mean nothing here; its checks do."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_smoke_runs_every_check_on_the_cpu_cuda_branch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRSQ_COMPILE_BACKEND", "aot_eager")
    smoke = load_script()
    code = smoke.main(["--device", "cpu", "--quick", "--presets", "mrsq_small", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {r["check"].split(" incl.")[0]: r for r in json.loads((tmp_path / "gpu_smoke.json").read_text())["rows"]}
    for name in ("graph breaks", "compiled functions active (no fall-back)", "compiled plan value vs eager",
                 "mrsq train: SIGTERM, then --resume", "24 steps"):
        assert rows[name]["ok"] is True, rows[name]
    assert rows["CUDA-graph skips"]["ok"] is None and rows["no host sync in 10 plans + updates"]["ok"] is None
    assert "GPU smoke: " in (tmp_path / "gpu_smoke.md").read_text() and "| graph breaks | ok |" in out


def test_gpu_smoke_exits_1_when_a_check_fails_and_still_reports_the_rest(tmp_path, monkeypatch, capsys):
    smoke = load_script()
    monkeypatch.setattr(smoke, "check_preset", lambda preset, args, checks: checks.add(preset, "graph breaks", False, "2"))
    monkeypatch.setattr(smoke, "check_sigterm_resume",
                        lambda args, checks, out: checks.add("mrsq_small", "resume", True))
    assert smoke.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 1
    table = (tmp_path / "gpu_smoke.md").read_text()
    assert table.count("**FAIL**") == 2 and "| mrsq_small | resume | ok |" in table  # both presets reported
    assert "2 check(s) failed" in capsys.readouterr().err
    # and a crash inside one preset is a failed check, not the end of the run
    monkeypatch.setattr(smoke, "check_preset", lambda preset, args, checks: 1 / 0)
    assert smoke.main(["--device", "cpu", "--presets", "mrsq_small", "--out", str(tmp_path)]) == 1
    assert "ZeroDivisionError" in (tmp_path / "gpu_smoke.md").read_text()
