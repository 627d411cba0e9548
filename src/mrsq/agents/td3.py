"""TD3 (Fujimoto et al., 2018) with any critic ensemble and aggregators.

Clipped double Q is the ``min`` aggregator over a 2-member ensemble in the target; the actor
maximises member 0 (``first``: TD3's Q1). Target policy smoothing (``N(0, 0.2^2)`` clipped to
+-0.5), a policy update (and soft target updates, tau 0.005) every 2nd critic update, Gaussian
exploration noise 0.1, 25k random warm-up steps, Adam 3e-4, 256-256 ReLU networks, batch 256:
the authors' published settings (their repository's current defaults). ``td3_ens10_min`` ports
MRS.Q's fix: 10 critics, the min over all of them in the target, their mean in the actor loss.

Deviation: networks use MR.Q's xavier initialisation instead of PyTorch's default.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field

from mrsq.agents.model_free import ModelFreeAgent, ModelFreeSpec
from mrsq.agents.spec import AggregatorChoice
from mrsq.nn import soft_update_
from mrsq.registry import AGENTS, CRITICS, POLICIES
from mrsq.specs import component


class TD3Spec(ModelFreeSpec):
    """TD3's published hyperparameters (Fujimoto et al., 2018; author code)."""

    type: Literal["td3"] = "td3"
    critic: component(CRITICS) = Field(default_factory=lambda: {
        "type": "ensemble", "num_members": 2, "hidden_dim": 256, "num_hidden": 2, "activation": "relu",
        "layer_norm": False}, validate_default=True)
    policy: component(POLICIES) = Field(default_factory=lambda: {
        "type": "tanh", "hidden_dim": 256, "layer_norm": False}, validate_default=True)
    aggregators: AggregatorChoice = Field(default_factory=lambda: AggregatorChoice(
        target={"type": "min"}, policy={"type": "first"}, planner={"type": "min"}))
    warmup_steps: int = Field(25_000, ge=0, description="random actions, no training, until the buffer holds this many")
    exploration_noise: float = Field(0.1, ge=0, description="Gaussian std on the action while training (0: none)")
    policy_delay: int = Field(2, ge=1, description="critic updates per policy (and target) update")
    target_policy_noise: float = Field(0.2, ge=0)
    noise_clip: float = Field(0.5, ge=0)


@AGENTS.register("td3", spec=TD3Spec, help="TD3 (model-free); any critic ensemble and aggregators")
class TD3(ModelFreeAgent):
    MODULES = (*ModelFreeAgent.MODULES, "policy_target")

    def __init__(self, spec: TD3Spec, obs_dim: int, action_dim: int, runtime=None) -> None:
        super().__init__(spec, obs_dim, action_dim, runtime)
        self.policy_target = copy.deepcopy(self.policy).requires_grad_(False)
        self.noise_std, self.noise_clip = spec.target_policy_noise, spec.noise_clip

    def target_noise(self, batch_size: int) -> torch.Tensor:
        """Target policy smoothing noise ``clip(N(0, sigma^2), +-c)`` ``[B, A]``."""
        noise = torch.randn(batch_size, self.action_dim, device=self.device) * self.noise_std
        return noise.clamp(-self.noise_clip, self.noise_clip)

    def next_value(self, next_obs, noise, members=None):
        features = self.features(next_obs, target=True)
        action = (self.policy_target.act(features) + noise).clamp(-1, 1)
        return self.q_target_atoms(features, action, members)

    def policy_loss_terms(self, features, members=None):
        action, _ = self.policy(features.detach())
        q = self.q_aggregate(features.detach(), action, self.policy_aggregate, members)
        return (-q.mean(),)

    def soft_update_targets(self, policy_updated: bool) -> None:
        if policy_updated:  # TD3 moves every target only with the delayed policy update
            self.soft_update_critic()
            soft_update_(self.policy_target, self.policy, self.spec.tau)
