"""``torch.compile`` for the hot functions, with a safe fall-back to eager.

:class:`Compiled` wraps one function (an update's loss, a planner's trajectory scoring). When the
runtime says compile, the first call compiles it (static shapes: ``dynamic=False``, so steady
state never recompiles; the recompile test counts this) and times the compilation. If Inductor
fails (no working compiler, an unsupported op in a user's component), the wrapper warns once,
in one line, and runs eager from then on: a run never dies because compilation failed.

Failures can also surface in the first *backward* of a compiled loss (AOTAutograd compiles the
backward lazily); agents call :meth:`Compiled.fall_back` from their optimisation step for that.

``MRSQ_COMPILE_BACKEND`` (default ``inductor``) selects another backend, e.g. ``aot_eager`` to
tell an Inductor bug from a tracing problem, or to make tests of the compile plumbing fast.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
import weakref
from typing import Any, Callable

import torch

from mrsq.runtime import Runtime

# Every Compiled instance, so a run or a bench can report total compile time.
_REGISTRY: "weakref.WeakSet[Compiled]" = weakref.WeakSet()


class CompileFallbackWarning(UserWarning):
    """Compilation failed; the function runs eager."""


class Compiled:
    """``fn`` compiled per ``runtime`` (or plain ``fn`` when it says no), with eager fall-back."""

    def __init__(self, fn: Callable[..., Any], runtime: Runtime | None, name: str,
                 cuda_graphs: bool = False) -> None:
        """``cuda_graphs``: the function may run as a CUDA graph on the CUDA branch
        (``runtime.compile_scope == "search"``); its tensor outputs are then cloned on return
        (a replayed graph overwrites its outputs, and callers keep losses, metrics and latents
        across calls), and ``reduce-overhead`` is used where the runtime has CUDA graphs."""
        self.fn, self.name = fn, name
        self.clone_outputs = False
        self.compile_seconds = 0.0
        self.failed: str | None = None
        self._calls = 0
        self._compiled = None
        if runtime is not None and runtime.compile:
            backend = os.environ.get("MRSQ_COMPILE_BACKEND", "inductor")
            # CUDA graphs only where asked: replayed graphs overwrite their outputs, so those are
            # cloned (one small copy each) before anyone keeps them
            self.clone_outputs = cuda_graphs and runtime.compile_scope == "search"
            use_mode = runtime.compile_mode and backend == "inductor" and cuda_graphs and runtime.cuda_graphs
            kwargs = {"mode": runtime.compile_mode} if use_mode else {}
            self._compiled = torch.compile(fn, dynamic=False, fullgraph=False, backend=backend, **kwargs)
        _REGISTRY.add(self)

    @property
    def active(self) -> bool:
        """True while calls go through the compiled function."""
        return self._compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is None or _EAGER[0]:
            return self.fn(*args, **kwargs)
        start = time.perf_counter()
        try:  # every call: a recompilation (new shapes) can fail as well as the first
            out = self._compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a compiler failure means: run eager
            if not self.fall_back(exc):
                raise
            return self.fn(*args, **kwargs)
        if not self._calls:  # the first successful call includes the compilation
            self.compile_seconds += time.perf_counter() - start
        self._calls += 1
        return _clone_tensors(out) if self.clone_outputs else out

    def fall_back(self, exc: BaseException) -> bool:
        """Switch to eager after a compilation failure ``exc``; False if ``exc`` is not one."""
        if self._compiled is None or not is_compile_error(exc):
            return False
        self._compiled = None
        self.failed = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        warnings.warn(f"torch.compile failed for {self.name}, running it eager ({self.failed[:200]})",
                      CompileFallbackWarning, stacklevel=3)
        return True


def _clone_tensors(out: Any) -> Any:
    """``out`` with every tensor in it (a tensor, or a tuple / list of them) cloned; a clone is
    differentiable, so a loss cloned out of a graph still backpropagates through it."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_clone_tensors(o) for o in out)
    return out


def mark_step(runtime: Runtime | None) -> None:
    """Tell CUDA-graph trees a new iteration starts (before each update and each plan), so the
    graphs of the last one may reuse their memory; a no-op without CUDA graphs."""
    if runtime is not None and runtime.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()


_EAGER = [False]


@contextlib.contextmanager
def eager():
    """Run every :class:`Compiled` function eager inside this block (e.g. to count FLOPs with
    ``FlopCounterMode``, which sees eager aten calls only)."""
    before = _EAGER[0]
    _EAGER[0] = True
    try:
        yield
    finally:
        _EAGER[0] = before


def is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from dynamo / AOTAutograd / Inductor rather than from the model."""
    if type(exc).__name__ == "RecompileError":  # a guard failing under error_on_recompile: a bug to see
        return False
    module = type(exc).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor", "torch._functorch", "torch.fx")):
        return True
    text = f"{type(exc).__name__} {exc}"
    return any(k in text for k in ("BackendCompilerFailed", "InductorError", "CppCompileError",
                                   "compile_fx", "torch._dynamo"))


def compile_report() -> dict[str, float]:
    """``{name: compile seconds}`` of the compiled functions that have run."""
    out: dict[str, float] = {}
    for c in _REGISTRY:
        if c.compile_seconds:
            out[c.name] = out.get(c.name, 0.0) + c.compile_seconds
    return out
