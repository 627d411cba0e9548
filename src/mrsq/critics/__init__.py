from mrsq.critics import aggregators, ensemble, twohot  # noqa: F401  (registration)
from mrsq.critics.aggregators import build_aggregator
from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.critics.twohot import TwoHotEnsembleCritic, TwoHotEnsembleCriticSpec

__all__ = ["EnsembleCritic", "EnsembleCriticSpec", "TwoHotEnsembleCritic", "TwoHotEnsembleCriticSpec",
           "build_aggregator"]
