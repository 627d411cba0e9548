"""How the hardware is used: device, precision and compilation, decided in one place.

A spec says ``precision: auto | fp32 | bf16`` and ``compile: auto | on | off``; :func:`resolve`
turns those into a :class:`Runtime` for the machine at hand, and agents, planners and benchmarks
ask the runtime rather than reading CPU flags or probing compilers themselves.

* ``precision: auto`` is bf16 where bf16 matmuls are fast: CUDA devices that support bf16, and
  CPUs with AMX-BF16 (``amx_bf16`` in ``/proc/cpuinfo``; Sapphire Rapids and later). Everywhere
  else it is fp32: on AVX2 and AVX-512 CPUs without AMX bf16 matmuls are emulated and measured
  2.5x *slower* than fp32 (docs/performance.md).
* ``compile: auto`` compiles with ``torch.compile`` when a working compiler toolchain is present
  (a C++ compiler on CPU; Triton on CUDA); ``on`` compiles regardless of detection; ``off`` never
  compiles. Compilation failures at run time fall back to eager with one warning
  (:mod:`mrsq.compile`).
* The environment variables ``MRSQ_PRECISION`` (fp32 | bf16) and ``MRSQ_COMPILE`` (on | off),
  and ``MRSQ_DEVICE`` (cpu | cuda) for ``train.device: auto``, say what ``auto`` means for one process (the test suite pins them, so its hand-computed values
  do not depend on the CPU it lands on); a value set explicitly in a spec always wins.
* On CUDA, compiled functions use ``mode="reduce-overhead"`` (CUDA graphs: one graph replay per
  call, no per-kernel launch cost) and the planner compiles its whole search (``compile_scope
  "search"``: one graph per action); on CPU the default Inductor mode (fused elementwise C++
  kernels around the MKL matmuls) and only the trajectory scoring (``"scoring"``: the loop around
  it is cheap there). ``MRSQ_CUDA_GRAPHS=off`` keeps the CUDA compile but without graphs (to tell a
  CUDA-graph problem from a compile one).
* The *CUDA branch* (whole-search compile, cloned outputs) is a property of the Runtime, not of
  the device, so the CPU can run it: :func:`cuda_branch` gives a CPU runtime that takes every
  CUDA code path except the graphs themselves (tests named ``cuda_branch`` use it; the dynamo
  graph they check is the one a GPU compiles).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
CompileChoice = Literal["auto", "on", "off"]

# CPU flags worth naming beside a figure (what decides the fast path on a CPU).
_NOTABLE_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2", "fma")


@dataclass(frozen=True)
class CPUInfo:
    model: str
    flags: tuple[str, ...]  # the notable flags present, in _NOTABLE_FLAGS order
    cores: int

    @property
    def has_amx_bf16(self) -> bool:
        return "amx_bf16" in self.flags

    def describe(self) -> str:
        missing = [f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f not in self.flags]
        text = f"{self.model}, {self.cores} cores, flags {' '.join(self.flags) or 'none notable'}"
        return text + (f" (no {', '.join(missing)})" if missing else "")


@functools.lru_cache(maxsize=1)
def cpu_info() -> CPUInfo:
    """The CPU model and its notable flags (Linux ``/proc/cpuinfo``; ``platform`` elsewhere)."""
    model, flags = platform.processor() or platform.machine() or "cpu", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return CPUInfo(model, tuple(f for f in _NOTABLE_FLAGS if f in flags), os.cpu_count() or 1)


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3`` for a CUDA device, the CPU model and flags otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_info().describe()


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matmuls beat fp32 on ``device`` (see the module docstring)."""
    if device.type == "cuda":  # native bf16 tensor cores (Ampere+), not emulation (T4, V100)
        return torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and cpu_info().has_amx_bf16


@functools.lru_cache(maxsize=4)
def compiler_available(device_type: str) -> tuple[bool, str]:
    """``(available, why)``: can ``torch.compile`` generate code for ``device_type`` here?"""
    if device_type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return False, "triton is not installed"
        return True, "triton"
    candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    for cxx in filter(None, candidates):
        path = shutil.which(cxx)
        if path:
            return True, path
    return False, "no C++ compiler found (set CXX or install g++)"


@dataclass(frozen=True)
class Runtime:
    """What a run uses: resolved precision and compilation for one device (no 'auto' left)."""

    device: str = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    compile_mode: str | None = None  # torch.compile mode ("reduce-overhead" on CUDA)
    # what a planner compiles: "scoring" (the trajectory scorer, CPU) or "search" (the whole
    # search as one graph, CUDA); and whether compiled update losses and the search run as CUDA
    # graphs (their outputs are then cloned before anything keeps them)
    compile_scope: Literal["scoring", "search"] = "scoring"
    cuda_graphs: bool = False
    threads: int = field(default_factory=torch.get_num_threads)
    device_name: str = ""
    requested: dict = field(default_factory=dict)  # the spec's values, e.g. {"precision": "auto"}
    reasons: dict = field(default_factory=dict)  # why each choice was made, one phrase each

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the acting/planning weights (training keeps fp32 master weights)."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def summary(self) -> str:
        """One line for the start of a run and the top of every bench."""
        comp = f"on ({self.compile_mode or 'default'}, {self.compile_scope})" if self.compile else "off"
        return (f"runtime: {self.device} ({self.device_name}), {self.threads} threads, "
                f"precision {self.precision} [{self.reasons.get('precision', '')}], "
                f"compile {comp} [{self.reasons.get('compile', '')}]")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["torch"] = torch.__version__
        return out


def resolve(precision: Precision = "auto", compile: CompileChoice = "auto",
            device: torch.device | str = "cpu") -> Runtime:
    """Turn the spec's ``auto`` choices into concrete ones for ``device`` on this machine."""
    device = torch.device(device)
    fast = bf16_is_fast(device)
    env_p, env_c = os.environ.get("MRSQ_PRECISION", ""), os.environ.get("MRSQ_COMPILE", "")
    if precision == "auto" and env_p in ("fp32", "bf16"):
        chosen, why = env_p, "auto, pinned by MRSQ_PRECISION"
    elif precision == "auto":
        chosen, why = ("bf16", "auto: bf16 matmuls are fast here") if fast else (
            "fp32", "auto: no fast bf16 here" + (" (CPU lacks amx_bf16)" if device.type == "cpu" else ""))
    else:
        chosen, why = precision, "set in the spec" + ("" if precision == "fp32" or fast else
                                                      "; warning: bf16 is slow on this device")
    ok, tool = compiler_available(device.type)
    if compile == "auto" and env_c in ("on", "off"):
        comp, cwhy = env_c == "on", "auto, pinned by MRSQ_COMPILE"
    elif compile == "auto":
        comp, cwhy = ok, f"auto: {tool}" if ok else f"auto: eager, {tool}"
    else:
        comp, cwhy = compile == "on", "set in the spec"
    cuda = comp and device.type == "cuda"
    graphs = cuda and os.environ.get("MRSQ_CUDA_GRAPHS", "on") != "off"
    if cuda:
        cwhy += ", CUDA graphs" if graphs else ", no CUDA graphs (MRSQ_CUDA_GRAPHS=off)"
    return Runtime(device=str(device), precision=chosen, compile=comp,
                   compile_mode="reduce-overhead" if graphs else None,
                   compile_scope="search" if cuda else "scoring", cuda_graphs=graphs,
                   threads=torch.get_num_threads(), device_name=device_name(device),
                   requested={"precision": precision, "compile": compile},
                   reasons={"precision": why, "compile": cwhy})


def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``. A host tensor bound for a GPU goes through pinned memory with
    ``non_blocking=True``: a copy from pageable memory would make the host wait (the driver
    stages it synchronously), and pinned blocks come from PyTorch's caching host allocator, which
    keeps a block until its copy has finished, so reusing it is safe."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_device(x, device: torch.device) -> torch.Tensor:
    """A host array or tensor as float32 on ``device`` (:func:`host_to_device`); on the CPU no
    copy at all for a float32 numpy array."""
    return host_to_device(torch.as_tensor(x, dtype=torch.float32), device)


def cuda_branch(precision: Literal["fp32", "bf16"] = "fp32") -> Runtime:
    """A CPU runtime on the CUDA code path: the planner compiles its whole search, compiled
    functions clone their outputs, in Inductor's default mode (CUDA graphs need a GPU). What the
    ``cuda_branch`` tests run, so that the graph dynamo traces for a GPU is traced, and checked
    for breaks and recompiles, on every CPU."""
    ok, tool = compiler_available("cpu")
    return Runtime(device="cpu", precision=precision, compile=True, compile_mode=None, compile_scope="search",
                   cuda_graphs=False, threads=torch.get_num_threads(), device_name=device_name(torch.device("cpu")),
                   requested={"precision": precision, "compile": "on"},
                   reasons={"precision": "set", "compile": f"cuda branch on the CPU ({tool})"})


def replay_device(device: torch.device | str, nbytes: int, fraction: float = 0.5) -> torch.device:
    """Where the replay's sampling state lives: ``device`` when it is a GPU with room for
    ``nbytes`` within ``fraction`` of its free memory (sampling and gathering there avoids a host
    round trip per update), else the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= fraction * free else torch.device("cpu")
