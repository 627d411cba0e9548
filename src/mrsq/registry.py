"""Typed, per-family registries of named components.

Every buildable part of mrsq (encoders, critics, aggregators, policies, planners, agents,
environments, presets) lives in one :class:`Registry` per family. A component registers with a
decorator that returns it unchanged, so IDEs keep its type::

    @ENCODERS.register("elu", spec=EluEncoderSpec)
    class EluEncoder(nn.Module): ...

Registering a name twice raises; asking for an unknown name raises :class:`UnknownComponentError`
listing the known names and the closest match. Users add components from their own modules
(``mrsq train ... --import my_pkg.my_module``) or from installed packages through the
``mrsq.components`` entry-point group (see :func:`load_entry_points`).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from importlib import metadata
from typing import Any, Callable, Generic, Iterable, TypeVar

T = TypeVar("T")

ENTRY_POINT_GROUP = "mrsq.components"


class RegistryError(ValueError):
    """A user-facing registry problem (duplicate or unknown name)."""


class UnknownComponentError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of components of one family.

    Each entry holds the component (a class or function), its pydantic spec class (or ``None``
    for entries such as presets and aggregators that have none) and a one-line description.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, tuple[T, Any, str]] = {}

    def register(self, name: str, spec: Any = None, help: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, spec=spec, help=help)
            return obj

        return decorator

    def add(self, name: str, obj: T, spec: Any = None, help: str | None = None) -> None:
        if name in self._entries:
            raise RegistryError(f"{self.family} {name!r} is already registered "
                                f"(by {_where(self._entries[name][0])}); pick another name")
        doc = help if help is not None else _first_line(getattr(obj, "__doc__", None))
        self._entries[name] = (obj, spec, doc)

    def get(self, name: str) -> T:
        return self._entry(name)[0]

    def spec(self, name: str) -> Any:
        return self._entry(name)[1]

    def help(self, name: str) -> str:
        return self._entry(name)[2]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        load_builtins()
        return len(self._entries)

    def _entry(self, name: str) -> tuple[T, Any, str]:
        load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(unknown_message(self.family, name, self.names())) from None

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


_BUILTINS = {"loaded": False, "loading": False}


def load_builtins() -> None:
    """Register mrsq's own components (import :mod:`mrsq.components`) on the first lookup.

    Why here and not at ``import mrsq`` or in :mod:`mrsq.specs`: ``import mrsq`` stays cheap (no
    torch), any lookup in any registry sees the built-ins whoever imported what, and no module of
    mrsq needs to import every component (``specs.validate`` did, which tied 28 modules into one
    import circle). Registering (``add``) never triggers it, so the components' own imports
    cannot recurse into it."""
    if _BUILTINS["loaded"] or _BUILTINS["loading"]:
        return
    _BUILTINS["loading"] = True
    try:
        importlib.import_module("mrsq.components")
        _BUILTINS["loaded"] = True
    finally:
        _BUILTINS["loading"] = False


def unknown_message(family: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {family} {name!r}{hint} (known: {', '.join(known) or 'none'})"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if doc and doc.strip() else ""


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


ENCODERS: Registry = Registry("encoder")
PIXEL_ENCODERS: Registry = Registry("pixel_encoder")
CRITICS: Registry = Registry("critic")
AGGREGATORS: Registry = Registry("aggregator")
POLICIES: Registry = Registry("policy")
PLANNERS: Registry = Registry("planner")
AGENTS: Registry = Registry("agent")
ENVS: Registry = Registry("env")
PRESETS: Registry = Registry("preset")

FAMILIES: dict[str, Registry] = {r.family: r for r in
                                 (ENCODERS, PIXEL_ENCODERS, CRITICS, AGGREGATORS, POLICIES, PLANNERS, AGENTS, ENVS,
                                  PRESETS)}


def import_module(path: str) -> None:
    """Import a user's module so its ``@register`` decorators run (``--import my_pkg.mod``)."""
    if not path or path.startswith(".") or not all(part.isidentifier() for part in path.split(".")):
        raise RegistryError(f"--import {path!r}: give an absolute module name such as my_pkg.components "
                            "(importable: on PYTHONPATH or installed)")
    # the current folder first, as `python -m` and a plain `python` session would have it (the
    # `mrsq` console script does not), so `--import my_module` finds ./my_module.py
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(path)
    except ImportError as exc:
        raise RegistryError(f"--import {path}: cannot import it ({exc}); it must be in the current folder, on "
                            "PYTHONPATH or installed") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing: one line, naming it
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise RegistryError(f"--import {path}: the module raised {type(exc).__name__} while importing"
                            + (f": {first}" if first else "")) from None


def import_modules(paths: Iterable[str]) -> None:
    """:func:`import_module` for each of ``paths``, in order, each once."""
    for path in dict.fromkeys(paths):
        import_module(path)


_entry_points_loaded = False


def load_entry_points() -> None:
    """Load every installed ``mrsq.components`` entry point once (each one a module to import)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not take the whole CLI down silently
            raise RegistryError(f"entry point {ep.name!r} ({ep.value}) in group "
                                f"{ENTRY_POINT_GROUP!r} failed to load: {exc}") from exc
