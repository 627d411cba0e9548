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
    # as a user's fresh shell has it: no PYTHONPATH (`--import` looks in the current folder)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
           "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "run.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddpg_ens10_min"
    assert (run / "checkpoint.pt").is_file()
    rows = (run / "eval.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header, steps 0, 200, 400
    assert "num_members: 10" in (run / "spec.yaml").read_text()
    assert "3 passed" in proc.stdout


COMPONENT_DOC = DOC.parent / "adding-a-component.md"


@pytest.mark.slow
def test_the_adding_a_component_page_runs_as_written(tmp_path):
    """Its modules (my_pkg/critics.py, my_pkg/search.py) and its test file written to a new
    folder; its `mrsq show` commands and the test run there from a plain shell (no PYTHONPATH)."""
    text = COMPONENT_DOC.read_text()
    files = dict(re.findall(r"```python\n# (?:file: )?(\S+\.py)\n(.*?)```", text, re.S))
    assert {"my_pkg/critics.py", "my_pkg/search.py", "test_my_components.py"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    bash = re.search(r"## 2\. Use it\n\n```bash\n(.*?)```", text, re.S).group(1)
    shows = [line for line in bash.replace("\\\n", " ").splitlines() if line.startswith("mrsq show")]
    assert shows
    bindir = str(Path(sys.executable).parent)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
           "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
    script = "set -e\n" + "\n".join(f"{line} > /dev/null" for line in shows) + "\npython -m pytest -q test_my_components.py\n"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
