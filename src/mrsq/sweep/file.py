"""The sweep file: its schema, and its expansion into runs (presets x envs x seeds x grid)."""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mrsq.specs import SpecError
from mrsq.sweep.common import RESERVED, Run, SweepError
from mrsq.sweep.folders import _start_state

# ---------------------------------------------------------------------------------- the file
class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpus: int = Field(1, ge=1, description="CPUs per run; also the run's torch threads")
    gpus: float = Field(0, ge=0, description="GPUs per run (fractions share a GPU)")


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    presets: list[str] = Field(min_length=1)
    envs: list[str] = Field(min_length=1)
    seeds: Union[int, list[int]] = 1
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(2, ge=0)
    out: str | None = None
    imports: list[str] = Field(default_factory=list)


def _value(value: Any) -> str:
    """A YAML value as the text of a ``--set key=value`` (read back with yaml.safe_load)."""
    if isinstance(value, str) and value and yaml.safe_load(value) == value and "\n" not in value:
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("...").strip()


def _dirname(text: str) -> str:
    """Text usable as one folder name."""
    return text.replace(":", "-").replace("/", "-").replace(os.sep, "-").replace(" ", "")


@dataclass
class Sweep:
    file: Path
    config: SweepFile
    out: Path
    runs: list[Run] = field(default_factory=list)
    import_roots: list[str] = field(default_factory=list)  # where the imports were found


def _import_root(module: str) -> str | None:
    """The ``sys.path`` folder ``module`` (already imported) was found in; None if not a file."""
    origin = getattr(sys.modules.get(module), "__file__", None)
    if not origin:
        return None
    depth = len(module.split(".")) - (0 if Path(origin).name == "__init__.py" else 1)
    return str(Path(origin).resolve().parents[depth])


def _load_imports(file: Path, config: SweepFile) -> list[str]:
    """Import and contract-check ``imports``; return the folders they were found in."""
    from mrsq.errors import UsageError, import_checked
    from mrsq.registry import RegistryError

    roots = []
    for i, module in enumerate(config.imports):
        try:
            import_checked([module])
        except (UsageError, RegistryError, SpecError) as exc:
            raise _error(file, f"imports[{i}]", str(exc)) from None
        root = _import_root(module)
        if root is not None:
            roots.append(root)
    return list(dict.fromkeys(roots))


def _error(file: Path, where: str, message: str) -> SweepError:
    return SweepError(f"{file}: {where}: {message}")


def load_sweep(file: str | Path, out: str | Path | None = None) -> Sweep:
    """Read, validate and expand a sweep file: every preset loads with its overrides on every env."""
    from mrsq import specs
    from mrsq.envs import EnvError, make_env, parse_env_id
    from mrsq.registry import RegistryError

    file = Path(file)
    try:
        data = specs.read_yaml(file)
    except SpecError as exc:
        raise SweepError(str(exc)) from None
    try:
        config = SweepFile.model_validate(data)
    except ValidationError as exc:
        raise SweepError(f"{file}: {specs.format_validation_error(exc, SweepFile, data)}") from None

    if isinstance(config.seeds, int):
        if config.seeds < 1:
            raise _error(file, "seeds", f"a number of seeds must be at least 1 (got {config.seeds})")
        seeds = list(range(config.seeds))
    else:
        seeds = config.seeds
        if not seeds:
            raise _error(file, "seeds", "empty list")
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise _error(file, "seeds", f"seeds must be distinct and >= 0 (got {seeds})")
    for section in ("set", "grid"):
        for key in getattr(config, section):
            if key in RESERVED:
                raise _error(file, f"{section}.{key}", f"set by the sweep itself; use {RESERVED[key]}")
            if not key or any(not part for part in key.split(".")):
                raise _error(file, f"{section}.{key}", "bad key (expected a dotted path like critic.num_members)")
    for key, values in config.grid.items():
        if not values:
            raise _error(file, f"grid.{key}", "empty list of values")
        if key in config.set:
            raise _error(file, f"grid.{key}", "also in set; give it in one of them")

    import_roots = _load_imports(file, config)  # before the presets: they may name these components

    env_dirs: dict[str, str] = {}
    for i, env in enumerate(config.envs):
        try:
            parse_env_id(env)
            make_env(env, 0).close()  # the task itself (an unknown gym id, a dm_control typo), before Ray
        except EnvError as exc:
            raise _error(file, f"envs[{i}]", str(exc)) from None
        name = _dirname(env)
        if name in env_dirs:
            raise _error(file, f"envs[{i}]", f"{env!r} and {env_dirs[name]!r} share the folder name {name!r}")
        env_dirs[name] = env

    sources: list[tuple[str, str, str]] = []  # (as written, source for mrsq train, name)
    for i, preset in enumerate(config.presets):
        if preset.endswith((".yaml", ".yml")) or "/" in preset or os.sep in preset:
            path = Path(preset) if Path(preset).is_absolute() else file.parent / preset
            if not path.is_file():
                raise _error(file, f"presets[{i}]", f"no such file {str(path)!r}")
            sources.append((preset, str(path.resolve()), path.stem))
        else:
            sources.append((preset, preset, preset))
    names = [name for _, _, name in sources]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise _error(file, f"presets[{i}]", f"{config.presets[i]!r} has the same name {name!r} as "
                                                 f"{config.presets[names.index(name)]!r}; rename one")

    base = [f"{k}={_value(v)}" for k, v in config.set.items()]
    variants: list[tuple[str, list[str]]] = []  # (suffix, overrides)
    keys = list(config.grid)
    for combo in itertools.product(*(config.grid[k] for k in keys)):
        pairs = [(k, _value(v)) for k, v in zip(keys, combo)]
        variants.append(("".join(f"__{_dirname(k)}={_dirname(v)}" for k, v in pairs),
                         [f"{k}={v}" for k, v in pairs]))
    if len({s for s, _ in variants}) != len(variants):
        raise _error(file, "grid", "two combinations give the same folder name; use distinct values")

    cpus = config.resources.cpus
    out_dir = Path(out or config.out or Path("runs") / file.stem).resolve()
    sweep = Sweep(file, config, out_dir, import_roots=import_roots)
    for env in config.envs:
        for i, (written, source, name) in enumerate(sources):
            for suffix, grid_overrides in variants:
                overrides = base + grid_overrides
                for seed in seeds:
                    try:
                        spec = specs.load(source, [*overrides, f"train.env={env}", f"train.seed={seed}",
                                                   f"train.threads={cpus}"])
                    except (SpecError, RegistryError) as exc:
                        where = f"presets[{i}]" + (f" with {', '.join(overrides)}" if overrides else "")
                        raise _error(file, where, str(exc)) from None
                    if not config.resources.gpus and str(spec.train.device).startswith("cuda"):
                        raise _error(file, "resources.gpus", f"0, but {name}{suffix} sets train.device: "
                                                             f"{spec.train.device}; ask for a GPU per run")
                    folder = f"{_dirname(env)}/{name}{suffix}/seed{seed}"
                    run = Run(folder, out_dir / folder, written, source, name + suffix, env, seed, overrides,
                              spec.train.steps)
                    run.start = _start_state(run, specs.to_dict(spec))
                    sweep.runs.append(run)
    return sweep
