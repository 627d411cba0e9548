"""``mrsq sweep --address`` on a real two-node Ray cluster started on this machine
(``ray.cluster_utils.Cluster``: a head and a second node, each its own raylet with one CPU; OUT
on a path both see): runs land on both nodes, and a node removed mid-sweep has its run resumed
from its checkpoint on the other node."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import cli_env

ray = pytest.importorskip("ray")

TINY = ("{encoder.zs_dim: 32, encoder.za_dim: 16, encoder.zsa_dim: 32, encoder.hidden_dim: 32, critic.hidden_dim: 32, "
        "policy.hidden_dim: 32, batch_size: 32, warmup_steps: 60, target_update_every: 40, train.steps: 900, "
        "train.eval_every: 300, train.eval_episodes: 1, train.log_every: 50, train.checkpoint_every: 50}")


def nodes_of(run_folder) -> list[str]:
    return re.findall(r"\(Ray node (\w+)\)", (run_folder / "sweep.log").read_text())


@pytest.mark.slow
def test_sweep_on_two_nodes_resumes_the_run_of_a_removed_node_on_the_other(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    out = tmp_path / "shared"  # both nodes are this machine: one filesystem
    (tmp_path / "sweep.yaml").write_text(f"presets: [mrq_small]\nenvs: [gym:InvertedPendulum-v5]\nseeds: 2\n"
                                         f"set: {TINY}\nretries: 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "mrsq.cli", "sweep", "sweep.yaml", "--address", cluster.address,
                             "--no-progress", "--out", str(out)], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = [out / "gym-InvertedPendulum-v5" / "mrq_small" / f"seed{s}" for s in (0, 1)]
        deadline = time.monotonic() + 300
        victim = None
        while time.monotonic() < deadline and victim is None and proc.poll() is None:
            time.sleep(0.5)
            for run in runs:
                if (run / "checkpoint.pt").exists() and (run / "sweep.log").exists() and \
                        nodes_of(run)[-1:] == [worker.node_id]:
                    victim = run
        assert victim is not None, "no run with a checkpoint on the second node"
        cluster.remove_node(worker)  # the node, its worker and the run's mrsq train die
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.shutdown()
    assert proc.returncode == 0, stderr[-3000:]
    info = {r["folder"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
    assert all(r["state"] == "done" for r in info.values()), info
    head = {nodes_of(run)[0] for run in runs} - {worker.node_id}
    assert len({nodes_of(run)[0] for run in runs}) == 2  # one run started on each node
    moved = nodes_of(victim)
    assert moved[0] == worker.node_id and moved[-1] in head  # resumed on the other node
    run_json = json.loads((victim / "run.json").read_text())
    assert run_json["status"] == "done" and run_json["resumes"] >= 1
    assert "retry" in stderr
