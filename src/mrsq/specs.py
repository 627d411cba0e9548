"""Pydantic specs: the one path from YAML (or a preset name) to a validated, fully resolved spec.

* Every component's spec subclasses :class:`Spec` (``extra="forbid"``, a ``type`` tag naming the
  registered component) and lives beside the component it builds.
* A field that holds a component of some family is declared with :func:`component`; its value is
  resolved through that family's registry by its ``type``, so specs registered by users' own
  modules nest exactly like the built-in ones.
* Presets are YAML files that may ``extends:`` another preset and state only their differences
  (merged recursively; a mapping that changes ``type`` replaces the base mapping instead).
* ``--set a.b.c=value`` overrides are parsed as YAML scalars and validated like the file.
* Every validation error is reported as ``dotted.path: what is wrong (allowed: ...)``.
"""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable

import yaml
from pydantic import (BaseModel, ConfigDict, SerializeAsAny, ValidationError, WrapValidator, field_validator,
                      model_validator)

from mrsq.registry import PRESETS, Registry, UnknownComponentError

PRESET_DIR = Path(__file__).parent / "presets"


class SpecError(ValueError):
    """A user-caused spec problem; the message names the dotted path of the bad field."""


def _mentions(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a field annotation is, or is a union/Annotated holding, one of ``kinds``."""
    if annotation in kinds:
        return True
    return any(_mentions(a, kinds) for a in typing.get_args(annotation) if not isinstance(a, (str, int, float)))


def no_bool_for_numbers(model: type[BaseModel], value: Any, info: Any) -> Any:
    """YAML's ``true`` is not a count: pydantic would turn ``num_members: true`` into 1 critic."""
    if isinstance(value, bool) and info.field_name in model.model_fields:
        annotation = model.model_fields[info.field_name].annotation
        if _mentions(annotation, (int, float)) and not _mentions(annotation, (bool,)):
            raise ValueError(f"expected a number, got {str(value).lower()} (a boolean)")
    return value


# Shared by every spec model: unknown fields are errors, numbers are finite (a learning rate or a
# loss weight of inf/NaN validates nothing), and assignments are validated too.
STRICT = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Spec(BaseModel):
    """Base of every component spec."""

    model_config = ConfigDict(**STRICT, frozen=False)
    type: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: Any) -> Any:
        return no_bool_for_numbers(cls, value, info)

    @model_validator(mode="before")
    @classmethod
    def _partial_components(cls, data: Any) -> Any:
        """A partial mapping for a field whose default comes from a factory keeps the default's
        other fields: ``critic: {num_members: 10}`` keeps the default critic's type, widths...;
        ``aggregators: {target: min}`` keeps the agent's default policy and planner aggregators;
        ``replay: {capacity: 1000}`` keeps the agent's default ``prioritized``."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if not isinstance(value, dict) or field.default_factory is None:
                continue
            default = field.default_factory()
            if any(isinstance(m, _Component) for m in field.metadata):
                # the same type as the default (or none given): merge, as `extends` does
                if isinstance(default, dict) and value.get("type", default.get("type")) == default.get("type"):
                    data = {**data, name: deep_merge(default, value)}
            elif isinstance(default, BaseModel):
                # only what the factory set: the rest re-defaults, so a default that depends on a
                # sibling field (train.steps on train.env) sees the merged mapping
                data = {**data, name: deep_merge(default.model_dump(exclude_unset=True), value)}
        return data


def component(registry: Registry) -> Any:
    """Annotation for a spec field holding a component of ``registry``'s family."""

    def resolve(value: Any, handler: Any, info: Any) -> Spec:
        if isinstance(value, Spec):
            return value
        if isinstance(value, str):  # shorthand: `aggregator: min`
            value = {"type": value}
        if not isinstance(value, dict) or "type" not in value:
            raise ValueError(f"expected a mapping with a 'type' naming a registered "
                             f"{registry.family} (known: {', '.join(registry.names())})")
        try:
            spec_cls = registry.spec(value["type"])
        except UnknownComponentError as exc:
            raise ValueError(str(exc)) from None
        return spec_cls.model_validate(value)

    return Annotated[SerializeAsAny[Spec], WrapValidator(resolve), _Component(registry)]


# ---------------------------------------------------------------------------------- errors
def format_validation_error(exc: ValidationError, root: type[BaseModel] | None = None,
                            data: Any = None) -> str:
    """One line per error: ``dotted.path: message`` (unknown fields list the allowed ones)."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + _allowed_fields(root, data, err["loc"])
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err['input']!r}"
        elif "input" in err and not isinstance(err["input"], (dict, list)) and "got " not in msg:
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{path}: {msg}" if path else msg)  # a cross-field check names its own fields
    return "; ".join(lines)


class _Component:
    """Marker kept in a component field's metadata: which registry resolves it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry


def _allowed_fields(root: type[BaseModel] | None, data: Any, loc: tuple) -> str:
    model = root
    for part in loc[:-1]:
        if model is None or not isinstance(data, dict):
            return ""
        field = model.model_fields.get(str(part))
        data = data.get(part)
        if field is None:
            return ""
        marker = next((m for m in field.metadata if isinstance(m, _Component)), None)
        if marker is not None:
            kind = data.get("type") if isinstance(data, dict) else data
            if kind is None:  # a partial mapping ({num_member: 5}): the field's default component
                default = field.get_default(call_default_factory=True)
                kind = default.get("type") if isinstance(default, dict) else getattr(default, "type", None)
            model = marker.registry.spec(kind) if kind in marker.registry else None
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
        else:
            return ""
    if model is None:
        return ""
    names = sorted(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed: {', '.join(names)})"


# ---------------------------------------------------------------------------------- YAML
def deep_merge(base: dict, diff: dict) -> dict:
    """Recursive merge of ``diff`` into ``base`` (new dict). A mapping whose ``type`` changes
    replaces the base mapping, since the fields of another component do not carry over."""
    out = copy.deepcopy(base)
    for key, value in diff.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type"):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    silently keeps the last, so a pasted-twice ``critic:`` block would half-apply)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that rejects duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (a YAML spec is UTF-8 text)") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec file must hold a mapping, got {type(data).__name__}")
    return data


def register_builtin_presets() -> None:
    """Register every YAML file shipped in ``mrsq/presets`` (name = file stem)."""
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        if path.stem not in PRESETS:
            data = read_yaml(path)
            PRESETS.add(path.stem, path, help=str(data.get("description", "")).strip())


def resolve_source(source: str | Path, _seen: tuple[str, ...] = ()) -> dict:
    """Raw (unvalidated) mapping of a preset name or YAML path, with ``extends`` applied."""
    register_builtin_presets()
    source = str(source)
    if source in _seen:
        raise SpecError(f"preset cycle: {' -> '.join((*_seen, source))}")
    path = Path(source)
    if source in PRESETS:
        path = PRESETS.get(source)
    elif not (path.suffix in (".yaml", ".yml") or path.exists()):
        from mrsq.registry import AGENTS

        if source in AGENTS:  # a registered agent without a preset (a user's own): its spec's defaults
            return {"type": source}
        try:
            PRESETS.get(source)
        except UnknownComponentError as exc:
            raise SpecError(f"{exc}; or give a path to a .yaml file, or a registered agent's name") from None
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = resolve_source(_extends_source(parent, path), (*_seen, source))
    merged = deep_merge(base, data)
    if "description" not in data and isinstance(base.get("description"), str) and base["description"]:
        # a variant that does not describe itself: the parent's words plus what it changes
        changed = [k for k in _dotted_keys(data) if not k.startswith("train.")]
        if changed:
            merged["description"] = f"{base['description']} [variant {path.stem}: {', '.join(changed)}]"
    return merged


def _dotted_keys(data: dict, prefix: str = "") -> list[str]:
    """``{"critic": {"num_members": 5}, "discount": 0.9} -> ["critic.num_members", "discount"]``
    (a mapping with its own ``type`` counts as one key: it replaces the component)."""
    keys = []
    for key, value in data.items():
        if isinstance(value, dict) and value and "type" not in value:
            keys += _dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _extends_source(parent: Any, child: Path) -> str:
    """An ``extends`` value: a preset name as is; a relative path is relative to the file holding it."""
    parent = str(parent)
    sibling = child.parent / parent
    if parent in PRESETS or Path(parent).is_absolute() or not sibling.is_file():
        return parent
    return str(sibling)


# ---------------------------------------------------------------------------------- overrides
def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise SpecError(f"--set {item!r}: expected key=value, for example critic.num_members=5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SpecError(f"--set {item!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # a mapping or list only when written as one: `train.env=dmc:` is the text "dmc:", not {dmc: None}
    if isinstance(value, dict) and not raw.strip().startswith("{"):
        value = raw
    if isinstance(value, list) and not raw.strip().startswith("["):
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if isinstance(nxt, str) and i == len(path) - 2:  # `aggregator: min` shorthand
                nxt = {"type": nxt}
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise SpecError(f"--set {item}: {'.'.join(path[:i + 1])} is not a mapping")
            node[part] = nxt
            node = nxt
        last = path[-1]
        old = node.get(last)
        # a mapping merges into the one it overrides, unless it names another component type
        # (`--set aggregators.planner={type: subset, k: 2}` over a truncated_mean keeps no `drop`)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type"):
            node[last] = deep_merge(old, value)
        else:
            node[last] = value
    return data


# ---------------------------------------------------------------------------------- top level
def validate(data: dict, where: str = "spec") -> Spec:
    """Validate a raw mapping as an agent spec (its ``type`` picks the agent)."""
    from mrsq.registry import AGENTS  # its first lookup registers the built-ins (registry.load_builtins)

    agent_type = data.get("type")
    if agent_type is None:
        raise SpecError(f"{where}: missing 'type' (the agent; known: {', '.join(AGENTS.names())})")
    try:
        spec_cls = AGENTS.spec(agent_type)
    except UnknownComponentError as exc:
        raise SpecError(f"{where}: type: {exc}") from None
    try:
        return spec_cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{where}: {format_validation_error(exc, spec_cls, data)}") from None


def load(source: str | Path, overrides: Iterable[str] = ()) -> Spec:
    """Preset name or YAML path (+ ``--set`` overrides) -> validated spec."""
    data = resolve_source(source)
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    changed = [o.strip() for o in overrides if not o.strip().startswith(("train.", "description="))]
    if changed and isinstance(data.get("description"), str) and data["description"]:
        # the preset's one-line description no longer tells the whole story: say what changed
        data["description"] = f"{data['description']} [overridden: {', '.join(changed)}]"
    return validate(data, where=str(source))


def to_dict(spec: Spec) -> dict:
    data = spec.model_dump(mode="json")
    if "train" in data:  # the run section last, after the agent's own fields
        data["train"] = data.pop("train")
    return data


def to_yaml(spec: Spec) -> str:
    return yaml.safe_dump(to_dict(spec), sort_keys=False, default_flow_style=False)


def from_yaml(text: str, where: str = "spec") -> Spec:
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a spec must be a mapping")
    return validate(data, where)
