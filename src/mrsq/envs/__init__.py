"""Environments by prefixed id: ``make_env("gym:HalfCheetah-v5", seed)``, ``make_env("dmc:cheetah-run", seed)``.

Importing this package registers the ``gym``, ``dmc`` and ``nchain`` factories in :data:`mrsq.registry.ENVS`.
"""

from mrsq.envs import dmc, gym, nchain  # noqa: F401  (imported to register their factories)
from mrsq.envs.base import Env, EnvError, make_env, parse_env_id

__all__ = ["Env", "EnvError", "make_env", "parse_env_id"]
