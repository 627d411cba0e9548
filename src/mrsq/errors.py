"""Errors a user can cause, and their plumbing: the one-line message, exit status 2.

:func:`user_errors` is the tuple of exception types the CLI (``mrsq.cli.main``), ``mrsq sweep``
and ``mrsq diagnose`` turn into ``mrsq: error: <one line>`` and exit 2, without a traceback;
:func:`import_checked` and :func:`check_user_env` run mrsq's contract checks on a user's
``--import``ed components before any work, raising :class:`UsageError` naming the broken one.
Its own module so that ``cli``, ``sweep`` and ``diagnose`` all import it, and none imports
another for its errors.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A user-caused problem detected before any work (a bad flag, a broken plug-in)."""


def user_errors() -> tuple[type[BaseException], ...]:
    from mrsq.envs import EnvError
    from mrsq.registry import RegistryError
    from mrsq.runs import RunFolderError
    from mrsq.specs import SpecError
    from mrsq.training.checkpoint import CheckpointError
    from mrsq.training.loop import ResumeError
    from mrsq.replay.store import ReplayStoreError
    from mrsq.training.lock import RunLockedError
    from mrsq.training.loggers import LoggerUnavailableError

    return (UsageError, SpecError, RegistryError, EnvError, CheckpointError, RunFolderError, ResumeError,
            ReplayStoreError, RunLockedError, LoggerUnavailableError)


def import_checked(modules) -> None:
    """Import the user's modules, then run mrsq's contract checks (:mod:`mrsq.testing`) on each
    component they registered, with its default spec: a broken component is one line naming it
    and the contract it breaks, before any training starts."""
    from mrsq import registry

    registry.load_builtins()  # the built-ins first, so only the user's are new

    registry.import_modules(modules)
    from mrsq.testing import CHECKS

    for family, reg in registry.FAMILIES.items():
        for name in reg.names():
            # the user's components (from --import or an installed entry point), not mrsq's own
            if getattr(reg.get(name), "__module__", "mrsq").split(".")[0] == "mrsq":
                continue
            if family not in CHECKS or family in ("agent", "env") or reg.spec(name) is None:
                continue  # agents are checked by their first update; envs by check_user_env
            try:
                CHECKS[family](name)
            except Exception as exc:  # noqa: BLE001 - any failure is the component's, reported in one line
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                origin = getattr(reg.get(name), "__module__", "?")
                raise UsageError(f"{family} {name!r} (from {origin}) breaks mrsq's {family} contract: {first}") from None


def check_user_env(env_id: str) -> None:
    """A user's environment (its prefix registered by an --import'ed module) gets the env contract
    check before any work; one line naming the broken contract."""
    from mrsq.envs import parse_env_id
    from mrsq.registry import ENVS
    from mrsq.testing import check_env

    prefix, _ = parse_env_id(env_id)
    factory = ENVS.get(prefix)
    origin = getattr(factory, "__module__", "mrsq") or "mrsq"
    if origin.split(".")[0] == "mrsq":
        return
    from mrsq.envs import EnvError

    try:
        check_env(env_id, steps=20)
    except EnvError:
        raise  # an unknown task name of the user's family: its own one-line message
    except Exception as exc:  # noqa: BLE001 - any failure is the env's, reported in one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"env {env_id!r} (from {origin}) breaks mrsq's env contract: {first}") from None
