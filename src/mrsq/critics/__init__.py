from mrsq.critics import aggregators, ensemble  # noqa: F401  (registration)
from mrsq.critics.aggregators import build_aggregator
from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec

__all__ = ["EnsembleCritic", "EnsembleCriticSpec", "build_aggregator"]
