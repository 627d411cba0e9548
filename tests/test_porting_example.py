"""docs/porting-ensemble-min.md runs: its ``# file:`` blocks are written to a folder and its
``run.sh`` is executed there (a user's own agent registered outside the package, composed from
YAML, trained with ``mrsq train --import`` and checked with ``mrsq.testing``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "porting-ensemble-min.md"
BLOCK = re.compile(r"```(?:python|yaml|bash)\n# file: (\S+)\n(.*?)```", re.S)


def doc_files() -> dict[str, str]:
    return {name: body for name, body in BLOCK.findall(DOC.read_text())}


def test_the_doc_holds_the_whole_example():
    assert set(doc_files()) == {"my_ddpg.py", "ddpg_ens10_min.yaml", "test_my_ddpg.py", "run.sh"}


@pytest.mark.slow
def test_the_porting_example_runs_as_written(tmp_path):
    pytest.importorskip("mujoco")
    for name, body in doc_files().items():
        (tmp_path / name).write_text(body)
    bindir = str(Path(sys.executable).parent)  # the environment's `mrsq` and `python`
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "run.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddpg_ens10_min"
    assert (run / "checkpoint.pt").is_file()
    rows = (run / "eval.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header, steps 0, 200, 400
    assert "num_members: 10" in (run / "spec.yaml").read_text()
    assert "3 passed" in proc.stdout
