"""Random shooting: score uniform random sequences once, act with the best one's first action.

``num_samples`` sequences in total: ``num_policy_trajectories`` copies of the policy's own plan
(default none; noisy closed-loop rollouts when ``policy_noise_std > 0``) and uniform draws in [-1, 1]^(H x A), all scored with
:func:`~mrsq.planners.sampling.trajectory_value`. No warm start and no state; training and
evaluation act the same way.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mrsq.planners.base import Planner, PlanningModel
from mrsq.planners.sampling import SampleCountSpec, policy_noise, policy_rollout, reference_action, trajectory_value
from mrsq.registry import PLANNERS


class RandomShootingSpec(SampleCountSpec):
    type: Literal["random_shooting"] = "random_shooting"
    num_samples: int = Field(1024, ge=1, description="sequences scored, policy ones included")
    num_policy_trajectories: int = Field(0, ge=0, description="of num_samples, rollouts of the policy")


@PLANNERS.register("random_shooting", spec=RandomShootingSpec,
                   help="best of uniform random action sequences (one round, no refit)")
class RandomShootingPlanner(Planner):
    def __init__(self, spec: RandomShootingSpec, action_dim: int) -> None:
        super().__init__()
        self.spec, self.action_dim = spec, action_dim

    def sample(self, n: int, device: torch.device) -> torch.Tensor:
        """``n`` uniform sequences in [-1, 1] -> ``[n, H, A]``."""
        return torch.rand(n, self.spec.horizon, self.action_dim, device=device) * 2 - 1

    @torch.no_grad()
    def plan(self, model: PlanningModel, obs: torch.Tensor, first: bool = False,
             explore: bool = True) -> torch.Tensor:
        s = self.spec
        z0 = model.encode(obs.reshape(1, -1))  # [1, Z]
        actions = self.sample(s.num_samples - s.num_policy_trajectories, z0.device)
        values = trajectory_value(model, z0, actions)  # [N - P, 1]
        if s.num_policy_trajectories > 0:  # without noise identical copies: one is enough to compete
            noise = policy_noise(s.policy_noise_std, s.num_policy_trajectories, s.horizon, self.action_dim, z0.device)
            pi_actions, pi_value = policy_rollout(model, z0, s.horizon, noise)
            actions, values = torch.cat([pi_actions, actions]), torch.cat([pi_value, values])
        self.last_reference = reference_action(model, z0)  # the divergence's pi(z0), no second encode
        best = values[:, 0].argmax().reshape(1)
        self.last_sequence = actions.index_select(0, best)[0]  # [H, A]
        self.last_value = values.index_select(0, best)[0, 0]  # []: its score
        return self.last_sequence[0]
