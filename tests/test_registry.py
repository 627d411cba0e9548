"""Tests for mrsq.registry: registration, lookup errors, help text, --import and entry points.

Every test uses its own ``Registry("thing")`` so the global registries are never polluted.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from mrsq import registry
from mrsq.registry import Registry, RegistryError, UnknownComponentError


@pytest.fixture
def things() -> Registry:
    return Registry("thing")


class AlphaSpec:
    pass


def test_decorator_returns_object_unchanged(things):
    def alpha(x):
        """Alpha: the first thing."""
        return x + 1

    class Beta:
        """Beta thing."""

    assert things.register("alpha", spec=AlphaSpec)(alpha) is alpha
    assert things.register("beta")(Beta) is Beta
    assert alpha(1) == 2  # still the same callable
    assert things.get("alpha") is alpha and things.get("beta") is Beta
    assert things.spec("alpha") is AlphaSpec
    assert things.spec("beta") is None
    assert "alpha" in things and "gamma" not in things
    assert len(things) == 2


def test_duplicate_name_raises_naming_it_and_first_owner(things):
    @things.register("alpha")
    def first():
        pass

    with pytest.raises(RegistryError) as info:
        things.register("alpha")(lambda: None)
    msg = str(info.value)
    assert "thing 'alpha' is already registered" in msg
    assert f"{__name__}.test_duplicate_name_raises_naming_it_and_first_owner.<locals>.first" in msg
    assert things.get("alpha") is first  # the first registration is kept
    with pytest.raises(RegistryError, match="'alpha'"):
        things.add("alpha", object())


def test_unknown_name_lists_known_and_closest_match(things):
    for name in ("alpha", "beta", "gamma"):
        things.add(name, object())
    with pytest.raises(UnknownComponentError) as info:
        things.get("alpah")
    exc = info.value
    assert isinstance(exc, RegistryError) and isinstance(exc, KeyError)
    assert str(exc) == "unknown thing 'alpah'; did you mean 'alpha'? (known: alpha, beta, gamma)"
    # spec() and help() use the same lookup
    with pytest.raises(UnknownComponentError, match="did you mean 'gamma'"):
        things.spec("gamam")
    with pytest.raises(UnknownComponentError, match="did you mean 'beta'"):
        things.help("betta")


def test_unknown_name_without_close_match(things):
    with pytest.raises(UnknownComponentError) as info:
        things.get("zzz")
    assert str(info.value) == "unknown thing 'zzz' (known: none)"
    things.add("alpha", object())
    with pytest.raises(UnknownComponentError) as info:
        things.get("qqqqqq")
    assert "did you mean" not in str(info.value)
    assert "(known: alpha)" in str(info.value)


def test_names_are_sorted(things):
    for name in ("mango", "apple", "zucchini", "banana"):
        things.add(name, object())
    assert things.names() == ["apple", "banana", "mango", "zucchini"]
    assert list(things) == things.names()
    assert repr(things) == "Registry('thing', ['apple', 'banana', 'mango', 'zucchini'])"


def test_help_from_docstring_first_line(things):
    class Documented:
        """
            Does the thing, quickly.

        More detail that must not appear in the one-line help.
        """

    class Undocumented:
        pass

    def overridden():
        """Docstring that the explicit help replaces."""

    things.add("documented", Documented)
    things.add("undocumented", Undocumented)
    things.register("overridden", help="explicit one-liner")(overridden)
    assert things.help("documented") == "Does the thing, quickly."
    assert things.help("undocumented") == ""
    assert things.help("overridden") == "explicit one-liner"


def test_global_families():
    assert sorted(registry.FAMILIES) == sorted(
        ["encoder", "pixel_encoder", "critic", "aggregator", "policy", "planner", "agent", "env", "preset"])
    for family, reg in registry.FAMILIES.items():
        assert reg.family == family


def test_import_module_failure_is_a_registry_error():
    with pytest.raises(RegistryError, match=r"--import no_such_module_mrsq_test: cannot import it"):
        registry.import_module("no_such_module_mrsq_test")


# ------------------------------------------------------------------------------ entry points
class FakeEntryPoint:
    def __init__(self, name: str, value: str, load):
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def _patch_entry_points(monkeypatch, eps):
    calls = []

    def fake_entry_points(**kwargs):
        calls.append(kwargs)
        return list(eps) if kwargs.get("group") == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return calls


def test_entry_point_registers_component(monkeypatch, things):
    def plugin_module():  # what importing the plug-in's module does
        @things.register("from_plugin")
        class FromPlugin:
            """Registered by an installed package."""

        return FromPlugin

    calls = _patch_entry_points(monkeypatch, [FakeEntryPoint("my_pkg", "my_pkg.components", plugin_module)])
    registry.load_entry_points()
    assert calls == [{"group": "mrsq.components"}]
    assert things.names() == ["from_plugin"]
    assert things.help("from_plugin") == "Registered by an installed package."
    # loaded once: a second call neither queries nor re-registers (which would raise)
    registry.load_entry_points()
    assert len(calls) == 1


def test_failing_entry_point_raises_naming_it(monkeypatch):
    def broken():
        raise ImportError("No module named 'missing_dependency'")

    _patch_entry_points(monkeypatch, [FakeEntryPoint("broken_pkg", "broken_pkg.components", broken)])
    with pytest.raises(RegistryError) as info:
        registry.load_entry_points()
    msg = str(info.value)
    assert "entry point 'broken_pkg' (broken_pkg.components)" in msg
    assert "'mrsq.components'" in msg
    assert "missing_dependency" in msg
