from mrsq.critics import aggregators, ensemble, quantile, twohot  # noqa: F401  (registration)
from mrsq.critics.aggregators import build_aggregator, draw_members
from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec, SharedTrunkCritic, SharedTrunkCriticSpec
from mrsq.critics.quantile import QuantileEnsembleCritic, QuantileEnsembleCriticSpec
from mrsq.critics.twohot import TwoHotEnsembleCritic, TwoHotEnsembleCriticSpec

__all__ = ["EnsembleCritic", "EnsembleCriticSpec", "SharedTrunkCritic", "SharedTrunkCriticSpec",
           "QuantileEnsembleCritic", "QuantileEnsembleCriticSpec", "TwoHotEnsembleCritic", "TwoHotEnsembleCriticSpec",
           "build_aggregator", "draw_members"]
