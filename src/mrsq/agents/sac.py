"""SAC (Haarnoja et al., 2018) and REDQ (Chen et al., 2021) with any critic ensemble.

Tanh-squashed Gaussian policy, soft TD target ``min_i Qbar_i(s', a') - alpha log pi(a'|s')`` with
``a' ~ pi(s')``, policy loss ``alpha log pi(a|s) - agg_i Q_i(s, a)``, and the temperature tuned
automatically towards the entropy target ``-|A|`` (``alpha = exp(log_alpha)``, initial 1).
Soft target updates (tau 0.005) after every critic update. Defaults are SAC's published ones:
2 critics of 256-256 ReLU, Adam 3e-4, batch 256, 1 update per step, 10k random warm-up steps.

REDQ is a preset of this agent: 10 critics, the min over 2 members drawn per update in the
target (``min_of_k``), the mean over all 10 in the policy loss, ``updates_per_step: 20`` (G)
critic updates per environment step with the policy updated once per step
(``policy_delay: 20``), 5k warm-up steps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from mrsq.agents.base import require
from mrsq.agents.model_free import ModelFreeAgent, ModelFreeSpec
from mrsq.agents.spec import AggregatorChoice
from mrsq.registry import AGENTS, CRITICS, POLICIES
from mrsq.specs import component


class SACSpec(ModelFreeSpec):
    """SAC's published hyperparameters (Haarnoja et al., 2018, v2 with automatic temperature)."""

    type: Literal["sac"] = "sac"
    critic: component(CRITICS) = Field(default_factory=lambda: {
        "type": "ensemble", "num_members": 2, "hidden_dim": 256, "num_hidden": 2, "activation": "relu",
        "layer_norm": False}, validate_default=True)
    policy: component(POLICIES) = Field(default_factory=lambda: {"type": "tanh_gaussian"}, validate_default=True)
    aggregators: AggregatorChoice = Field(default_factory=lambda: AggregatorChoice(
        target={"type": "min"}, policy={"type": "min"}, planner={"type": "min"}))
    exploration_noise: float = Field(0.0, ge=0, description="extra Gaussian action noise (SAC: 0; the policy samples)")
    initial_temperature: float = Field(1.0, gt=0, description="alpha at the start")
    temperature_lr: float = Field(3e-4, gt=0)
    target_entropy: float | None = Field(None, description="None: -action_dim (SAC's heuristic)")
    learn_temperature: bool = Field(True, description="False: alpha stays at initial_temperature")

    @field_validator("policy")
    @classmethod
    def _stochastic(cls, policy):
        return require(POLICIES, policy, "stochastic", "has no log-probabilities; SAC's entropy term needs a "
                                                         "stochastic policy such as 'tanh_gaussian'")


class _Temperature(nn.Module):
    def __init__(self, initial: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))


@AGENTS.register("sac", spec=SACSpec, help="SAC with automatic temperature (model-free); REDQ is a preset of it")
class SAC(ModelFreeAgent):
    MODULES = (*ModelFreeAgent.MODULES, "temperature")
    OPTIMIZERS = (*ModelFreeAgent.OPTIMIZERS, "temperature_optim")
    METRICS = (*ModelFreeAgent.METRICS, "policy/entropy", "alpha")

    def __init__(self, spec: SACSpec, obs_dim: int, action_dim: int, runtime=None) -> None:
        super().__init__(spec, obs_dim, action_dim, runtime)
        self.temperature = _Temperature(spec.initial_temperature)
        self.temperature_optim = self.adam(self.temperature.parameters(), spec.temperature_lr, fused=spec.optim.fused)
        self.target_entropy = float(-action_dim if spec.target_entropy is None else spec.target_entropy)

    @property
    def alpha(self) -> torch.Tensor:
        return self.temperature.log_alpha.detach().exp()

    def policy_action(self, obs, explore):
        features = self.features(obs)
        return (self.policy.sample(features)[0] if explore else self.policy.act(features))[0]

    def next_value(self, next_obs, noise, members=None):
        # a' from the online policy at s' (SAC); the critic's features of s' from the target encoder
        action, log_prob, _ = self.policy.sample(self.features(next_obs))
        q = self.q_target_atoms(self.features(next_obs, target=True), action, members)
        return q - self.alpha * log_prob.float()

    def policy_loss_terms(self, features, members=None):
        action, log_prob, _ = self.policy.sample(features.detach())
        q = self.q_aggregate(features.detach(), action, self.policy_aggregate, members)
        log_prob = log_prob.float()
        return (self.alpha * log_prob - q).mean(), log_prob.detach()

    def after_policy_update(self, log_prob):
        entropy = -log_prob.mean()
        if self.spec.learn_temperature:
            # alpha loss: -log_alpha * (log pi + target entropy), on the policy update's samples
            loss = -(self.temperature.log_alpha * (log_prob + self.target_entropy)).mean()
            self.temperature_optim.zero_grad(set_to_none=True)
            loss.backward()
            self.temperature_optim.step()
        return {"policy/entropy": entropy, "alpha": self.alpha}

    def soft_update_targets(self, policy_updated: bool) -> None:
        self.soft_update_critic()
