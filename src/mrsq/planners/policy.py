"""No search: act with the policy network (MR.Q)."""

from __future__ import annotations

from typing import Literal

import torch

from mrsq.planners.base import Planner, PlanningModel
from mrsq.planners.sampling import reference_action
from mrsq.registry import PLANNERS
from mrsq.specs import Spec


class PolicyPlannerSpec(Spec):
    type: Literal["policy"] = "policy"


@PLANNERS.register("policy", spec=PolicyPlannerSpec, help="no search: the policy's action (MR.Q)")
class PolicyPlanner(Planner):
    """``a = pi(f(obs))``; exploration noise, if any, is the agent's business."""

    def __init__(self, spec: PolicyPlannerSpec, action_dim: int) -> None:
        super().__init__()
        self.spec = spec

    def plan(self, model: PlanningModel, obs: torch.Tensor, first: bool = False,
             explore: bool = True) -> torch.Tensor:
        z0 = model.encode(obs.reshape(1, -1))
        action = model.policy(z0)[0]
        # the divergence's reference pi(z0): the action itself unless the policy samples
        self.last_reference = reference_action(model, z0) if getattr(model, "stochastic_policy", False) else action
        return action
