"""Shared fixtures: run the ``mrsq`` CLI in-process or as a real subprocess."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "disable")
# What `precision: auto` / `compile: auto` mean in this suite (mrsq.runtime): fp32 eager, so
# hand-computed values do not depend on whether the CPU has AMX, and building an agent does not
# cost a compilation. The tests of bf16 and of compilation set them explicitly.
os.environ["MRSQ_PRECISION"] = "fp32"
os.environ["MRSQ_COMPILE"] = "off"
# and `train.device: auto` means the CPU: on a GPU machine the CPU tests (bit-for-bit resume,
# runtime.device == "cpu") stay CPU tests; the CUDA tests ask for cuda explicitly
os.environ["MRSQ_DEVICE"] = "cpu"

import subprocess
import sys
from pathlib import Path

import pytest

# `make test` runs the suite on two pytest-xdist workers (one per core of the CI machine): each
# worker's in-process torch gets one thread, so two workers do not oversubscribe the cores.
# Tests that need a thread count set their own; subprocesses choose theirs as a user's run would.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
PLUGIN_DIR = TESTS_DIR / "plugins"


def cli_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    """Environment for a ``python -m mrsq.cli`` subprocess (headless, optional extra PYTHONPATH)."""
    env = dict(os.environ, MUJOCO_GL="disable", PYTHONUNBUFFERED="1")
    if extra_path:
        parts = [str(p) for p in extra_path] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


@pytest.fixture
def mrsq_main(capsys):
    """``mrsq_main(*argv) -> (exit_code, stdout, stderr)`` through :func:`mrsq.cli.main`, in-process."""
    from mrsq.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def mrsq_env() -> dict[str, str]:
    """Environment for a hand-made ``python -m mrsq.cli`` subprocess (e.g. ``subprocess.Popen``)."""
    return cli_env()


@pytest.fixture
def mrsq_subprocess(tmp_path):
    """``mrsq_subprocess(*argv, plugins=False, timeout=120) -> CompletedProcess`` (text output)."""

    def run(*argv: str, plugins: bool = False, timeout: float = 120):
        return subprocess.run([sys.executable, "-m", "mrsq.cli", *map(str, argv)], cwd=tmp_path,
                              env=cli_env([PLUGIN_DIR] if plugins else None), capture_output=True,
                              text=True, timeout=timeout)

    return run
