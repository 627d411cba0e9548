"""mrsq: search-based model-based RL from composable parts (MR.Q, MRS.Q and their ablations).

``mrsq.Experiment`` is the Python API (:mod:`mrsq.api`); the ``mrsq`` command line is
:mod:`mrsq.cli`. Imported lazily, so ``import mrsq`` stays cheap.
"""

__all__ = ["Experiment", "PlanningActor"]


def __getattr__(name: str):
    if name in __all__:
        from mrsq import api

        return getattr(api, name)
    raise AttributeError(f"module 'mrsq' has no attribute {name!r}")
