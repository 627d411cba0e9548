"""Cross-entropy method: MPPI's loop with an unweighted elite refit.

Same sampling, scoring, policy trajectories, warm start and std clamps as
:mod:`mrsq.planners.mppi`; the refit is the plain mean and (population) std of the elites.
Executed action (``action``): ``"best"`` (default) is the first action of the best-scoring
final elite, a sequence that was actually scored; ``"mean"`` is the first step of the final
refit mean (the classic CEM choice, never scored itself). Both are deterministic given the
samples, so training and evaluation act the same way.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from mrsq.planners.sampling import IterativeSamplingPlanner, IterativeSpec
from mrsq.registry import PLANNERS


class CEMSpec(IterativeSpec):
    type: Literal["cem"] = "cem"
    action: Literal["best", "mean"] = Field("best", description="execute the best elite's or the mean's first action")

    @model_validator(mode="after")
    def _mean_is_a_plan(self):
        if self.action == "mean" and self.center == "policy":
            raise ValueError("action 'mean' executes the refit mean as a plan, but with center 'policy' the mean is "
                             "a residual on the policy, not a plan; use action 'best'")
        return self


@PLANNERS.register("cem", spec=CEMSpec, help="cross-entropy method: unweighted elite refit, warm-started")
class CEMPlanner(IterativeSamplingPlanner):
    """Uniform elite weights; acts with the best elite's (or the mean's) first action."""

    spec: CEMSpec

    def elite_weights(self, elite_values: torch.Tensor) -> torch.Tensor:
        """``[K] -> 1 / K`` ``[K]``."""
        return torch.full_like(elite_values, 1.0 / elite_values.shape[0])

    def choose(self, elite_actions, elite_values, weights, mean, explore):
        """``[H, A]``: the best elite (``topk`` sorts, so row 0), or ``mean``; its first action is
        executed."""
        if self.spec.action == "mean":  # never scored itself: the search scores it once more
            return self.to_steps(mean[None])[0].clamp(-1, 1), None
        return elite_actions[0], elite_values[0]
