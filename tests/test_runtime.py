"""Tests for mrsq.runtime (what ``precision``/``compile: auto`` resolve to) and mrsq.compile
(``Compiled``: plain calls, a cheap real compile, and the one-warning fall-back to eager).

The CPU and the compiler toolchain are faked with monkeypatch, so the results do not depend on
the machine; the suite-wide MRSQ_PRECISION / MRSQ_COMPILE pins (conftest.py) are removed here.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from mrsq import runtime as rt
from mrsq import specs
from mrsq.compile import Compiled, CompileFallbackWarning, is_compile_error
from mrsq.runtime import CPUInfo, Runtime

AMX = CPUInfo("Fake Xeon (SPR)", ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"), 8)
AVX2 = CPUInfo("Fake Core (AVX2)", ("avx2", "fma"), 4)


@pytest.fixture
def machine(monkeypatch):
    """``machine(cpu, compiler=(ok, tool))``: fake this machine's CPU and C++ compiler."""
    monkeypatch.delenv("MRSQ_PRECISION", raising=False)
    monkeypatch.delenv("MRSQ_COMPILE", raising=False)

    def fake(cpu: CPUInfo, compiler: tuple[bool, str] = (True, "/usr/bin/g++")) -> None:
        monkeypatch.setattr(rt, "cpu_info", lambda: cpu)
        monkeypatch.setattr(rt, "compiler_available", lambda device_type: compiler)

    return fake


# ------------------------------------------------------------------------- runtime.resolve
@pytest.mark.parametrize("cpu, expected", [(AMX, "bf16"), (AVX2, "fp32")])
def test_auto_precision_follows_amx(machine, cpu, expected):
    machine(cpu)
    r = rt.resolve("auto", "auto", "cpu")
    assert r.precision == expected
    assert r.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    assert r.requested == {"precision": "auto", "compile": "auto"}


@pytest.mark.parametrize("cpu", [AMX, AVX2])
@pytest.mark.parametrize("explicit", ["fp32", "bf16"])
def test_explicit_precision_always_wins(machine, monkeypatch, cpu, explicit):
    machine(cpu)
    assert rt.resolve(explicit, "off").precision == explicit
    pinned = "bf16" if explicit == "fp32" else "fp32"
    monkeypatch.setenv("MRSQ_PRECISION", pinned)
    assert rt.resolve(explicit, "off").precision == explicit  # the spec beats the env pin
    assert rt.resolve("auto", "off").precision == pinned  # the env pin says what auto means


def test_explicit_bf16_on_slow_cpu_warns_in_reason(machine):
    machine(AVX2)
    assert "slow" in rt.resolve("bf16", "off").reasons["precision"]
    assert "slow" not in rt.resolve("fp32", "off").reasons["precision"]


@pytest.mark.parametrize("compiler", [(True, "/usr/bin/g++"), (False, "no C++ compiler found")])
def test_compile_choices(machine, monkeypatch, compiler):
    machine(AVX2, compiler)
    auto = rt.resolve("fp32", "auto")
    assert auto.compile is compiler[0]
    assert compiler[1] in auto.reasons["compile"]
    assert rt.resolve("fp32", "on").compile is True  # explicit wins over detection
    assert rt.resolve("fp32", "off").compile is False
    for pin, expected in (("on", True), ("off", False)):
        monkeypatch.setenv("MRSQ_COMPILE", pin)
        assert rt.resolve("fp32", "auto").compile is expected
        assert rt.resolve("fp32", "on" if not expected else "off").compile is not expected
    assert all(rt.resolve("fp32", c).compile_mode is None for c in ("auto", "on", "off"))  # cpu


def test_summary_and_as_dict(machine):
    machine(AMX)
    r = rt.resolve("auto", "on", "cpu")
    line = r.summary()
    assert "precision bf16" in line and "compile on" in line
    assert "Fake Xeon (SPR)" in line and r.device_name in line
    d = json.loads(json.dumps(r.as_dict()))
    assert d["torch"] == torch.__version__
    assert d["precision"] == "bf16" and d["compile"] is True and d["device"] == "cpu"
    assert "compile off" in rt.resolve("fp32", "off").summary()


def test_cpu_describe_names_missing_flags():
    assert "no amx_bf16, avx512_bf16, avx512f" in AVX2.describe()
    assert "Fake Core (AVX2), 4 cores" in AVX2.describe() and "avx2 fma" in AVX2.describe()
    assert "no " not in AMX.describe()
    assert "none notable" in CPUInfo("x", (), 1).describe()
    assert AMX.has_amx_bf16 and not AVX2.has_amx_bf16


# ------------------------------------------------------------------------- spec parsing
@pytest.mark.parametrize("override, expected", [("compile=on", "on"), ("compile=off", "off"),
                                                ("compile=true", "on"), ("compile=false", "off"),
                                                ("compile=auto", "auto")])
def test_spec_compile_values(override, expected):
    assert specs.load("mrq", [override]).compile == expected


def test_spec_defaults_and_bad_precision():
    spec = specs.load("mrq")
    assert (spec.precision, spec.compile) == ("auto", "auto")
    assert specs.load("mrq", ["precision=bf16"]).precision == "bf16"
    with pytest.raises(specs.SpecError, match="precision"):
        specs.load("mrq", ["precision=fp16"])
    with pytest.raises(specs.SpecError, match="compile"):
        specs.load("mrq", ["compile=maybe"])


# ------------------------------------------------------------------------- mrsq.compile
def double_plus_one(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x) * 2 + 1


class FakeInductorError(RuntimeError):
    """Looks like an Inductor failure to ``is_compile_error`` (by its module)."""


FakeInductorError.__module__ = "torch._inductor.exc"


def raising(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc
    return fn


def test_compiled_off_calls_plain_function():
    calls = []
    c = Compiled(lambda x: calls.append(x) or x + 1, Runtime(compile=False), "plain")
    assert not c.active and c(1) == 2 and c(2) == 3
    assert calls == [1, 2] and c.compile_seconds == 0.0 and c.failed is None
    assert Compiled(lambda x: x, None, "none")(5) == 5


def test_compiled_aot_eager_matches_eager(monkeypatch):
    monkeypatch.setenv("MRSQ_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    c = Compiled(double_plus_one, Runtime(compile=True), "aot")
    x = torch.linspace(-2, 2, 7)
    torch.testing.assert_close(c(x), double_plus_one(x))
    assert c.active and c.compile_seconds > 0 and c.failed is None
    first = c.compile_seconds
    torch.testing.assert_close(c(x + 1), double_plus_one(x + 1))
    assert c.compile_seconds == first  # only the first call counts as compilation


def test_compile_failure_falls_back_once():
    c = Compiled(double_plus_one, Runtime(compile=True), "scorer")
    c._compiled = raising(FakeInductorError("C++ compile error\nsecond line"))
    x = torch.ones(3)
    with pytest.warns(CompileFallbackWarning, match="scorer") as record:
        out = c(x)
    assert len(record) == 1
    torch.testing.assert_close(out, double_plus_one(x))
    assert not c.active
    assert c.failed == "FakeInductorError: C++ compile error"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: eager from now on
        torch.testing.assert_close(c(x), double_plus_one(x))


def test_model_error_is_not_swallowed():
    c = Compiled(double_plus_one, Runtime(compile=True), "loss")
    c._compiled = raising(ValueError("shape mismatch in the model"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="shape mismatch"):
            c(torch.ones(3))
    assert c.active and c.failed is None
    assert c.fall_back(ValueError("x")) is False and c.active


@pytest.mark.parametrize("exc, expected", [
    (FakeInductorError("boom"), True),
    (RuntimeError("BackendCompilerFailed: backend='inductor' raised"), True),
    (RuntimeError("CppCompileError: C++ compile error"), True),
    (ValueError("shape mismatch"), False),
    (RuntimeError("CUDA out of memory"), False),
    (KeyError("obs"), False),
])
def test_is_compile_error(exc, expected):
    assert is_compile_error(exc) is expected


def test_mrsq_device_pins_what_auto_means(monkeypatch):
    from mrsq.training.loop import resolve_device

    monkeypatch.setenv("MRSQ_DEVICE", "cpu")  # what the suite's conftest sets
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("MRSQ_DEVICE", "cuda")
    assert resolve_device("auto") == torch.device("cuda")  # no CUDA needed to name the device
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit device always wins
    monkeypatch.delenv("MRSQ_DEVICE")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
