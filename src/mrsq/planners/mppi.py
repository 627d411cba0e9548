"""MPPI as in TD-MPC2 (the planner MRS.Q inherits).

Per action: encode once; roll the policy out (``num_policy_trajectories`` closed-loop rollouts
with Gaussian noise of std ``policy_noise_std`` on its actions, or one plan standing for all of
them when that is 0; they are fixed across iterations); then ``iterations`` rounds of: sample the other sequences from
``N(mean, std)`` clamped to [-1, 1], score all of them with
:func:`~mrsq.planners.sampling.trajectory_value`, keep the ``num_elites`` best, weight them by
``softmax(temperature * (V - max V))`` and refit mean and std to the weighted elites (std
clamped to ``[min_std, max_std]``). The search starts from the previous action's final mean
shifted by one step (zeros at an episode start) with ``std = max_std``. No momentum.

Executed action: the first action of one final elite drawn with the final weights (Gumbel-max),
in training AND evaluation, as TD-MPC2 does; no noise is added here (TD-MPC2 adds
``std * N(0, 1)`` while training; in mrsq exploration noise is the agent's business).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mrsq.planners.sampling import IterativeSamplingPlanner, IterativeSpec, draw_index
from mrsq.registry import PLANNERS


class MPPISpec(IterativeSpec):
    """TD-MPC2's MPPI defaults."""

    type: Literal["mppi"] = "mppi"
    temperature: float = Field(0.5, gt=0, description="elite weights: softmax(temperature * (V - max V))")


@PLANNERS.register("mppi", spec=MPPISpec, help="MPPI over latent rollouts, warm-started (TD-MPC2, MRS.Q)")
class MPPIPlanner(IterativeSamplingPlanner):
    """Softmax-weighted elite refit; acts with the first action of an elite drawn by weight."""

    spec: MPPISpec

    def __init__(self, spec: MPPISpec, action_dim: int) -> None:
        super().__init__(spec, action_dim)
        self.temperature = spec.temperature

    def elite_weights(self, elite_values: torch.Tensor) -> torch.Tensor:
        """``[K] -> softmax(temperature * (V - max V))`` ``[K]``."""
        return torch.softmax(self.temperature * (elite_values - elite_values.max()), 0)

    def choose(self, elite_actions, elite_values, weights, mean, explore):
        """Sequence ``[H, A]`` of one elite drawn with ``weights`` (also when not exploring) and
        its score; its first action is executed."""
        i = draw_index(weights).reshape(1)
        return elite_actions.index_select(0, i)[0], elite_values.index_select(0, i)[0]
