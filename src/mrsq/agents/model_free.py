"""What the model-free actor-critic agents (TD3, SAC, REDQ) share.

Observations go straight into the critics and the policy, or through an optional MLP encoder
(``encoder:``) that the critic loss trains and the policy reads detached. The critic is any
registered ensemble taking ``[features, action]``, and every ensemble use goes through the spec's
aggregators, so "TD3 with 10 critics and the min in its target" is one line of YAML.

One environment step of training (``update``) runs ``updates_per_step`` critic updates (REDQ's
update-to-data ratio G); after every ``policy_delay``-th critic update the policy is updated
(TD3: 2; SAC: 1; REDQ: G, i.e. once per environment step). The critic loss is every member's own
mean squared error against the shared target, summed over members (as TD3's and SAC's
``MSE(Q1) + MSE(Q2)``), on an n-step return (``value_horizon``; 1 in the published algorithms).
The critic owns that loss (``critic.regression_loss``), so a quantile critic (TQC) regresses its
quantiles onto truncated target atoms here with no change to the agents; a ``subset`` aggregator
evaluates only its drawn members (one draw per critic update batch and per policy update).

There is no latent model, so there is nothing to search: the spec accepts only the ``policy``
planner (:class:`~mrsq.agents.base.AgentSpec`).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from mrsq.agents.base import Agent, AgentSpec, frozen, n_step_return
from mrsq.agents.spec import ReplaySpec, Section
from mrsq.compile import Compiled
from mrsq.critics.aggregators import build_aggregator, draw_members
from mrsq.nn import MLP, ln_act, activation, soft_update_
from mrsq.registry import CRITICS, POLICIES


class FeatureEncoderSpec(Section):
    """Optional observation encoder ``obs -> h -> features`` (LN + activation on both layers)."""

    hidden_dim: int = Field(256, ge=1)
    feature_dim: int = Field(64, ge=1)
    activation: Literal["relu", "elu", "gelu", "silu", "mish", "tanh"] = "relu"


class ModelFreeOptimSpec(Section):
    """Adam (AdamW with ``weight_decay``) for each network; fused kernels on CPU and GPU."""

    critic_lr: float = Field(3e-4, gt=0)
    policy_lr: float = Field(3e-4, gt=0)
    encoder_lr: float = Field(3e-4, gt=0, description="the optional encoder's (trained by the critic loss)")
    weight_decay: float = Field(0.0, ge=0)
    critic_grad_clip: float | None = Field(None, gt=0, description="max grad norm of the critic (None: no clip)")
    fused: bool = True


class ModelFreeSpec(AgentSpec):
    """Fields of every model-free agent; TD3's and SAC's specs set their own defaults."""

    MODEL_FREE = True

    encoder: FeatureEncoderSpec | None = Field(None, description="optional MLP encoder (None: raw observations)")
    optim: ModelFreeOptimSpec = Field(default_factory=ModelFreeOptimSpec)
    replay: ReplaySpec = Field(default_factory=lambda: ReplaySpec(prioritized=False))
    tau: float = Field(0.005, gt=0, le=1, description="soft target update rate")
    value_horizon: int = Field(1, ge=1, description="n of the n-step TD target (1 in TD3, SAC and REDQ)")
    updates_per_step: int = Field(1, ge=1, description="critic updates per environment step (REDQ's G)")
    policy_delay: int = Field(1, ge=1, description="critic updates per policy update (TD3: 2)")

    @model_validator(mode="before")
    @classmethod
    def _no_distilled_head(cls, data):
        if isinstance(data, dict) and "distill" in data:
            agent = cls.model_fields["type"].default
            raise ValueError(f"distill: {agent!r} is model-free and acts with its policy: there is no planner whose "
                             f"terminal value a distilled head could replace (it is an option of latent agents "
                             f"with a search planner, such as mrq with mppi)")
        return data


class FeatureEncoder(nn.Module):
    def __init__(self, spec: FeatureEncoderSpec, obs_dim: int) -> None:
        super().__init__()
        self.net = MLP([obs_dim, spec.hidden_dim, spec.feature_dim], spec.activation)
        self.act = activation(spec.activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ln_act(self.net(obs), self.act)


class ModelFreeAgent(Agent):
    """Critic ensemble + policy (+ optional encoder) with targets; see the module docstring.

    Subclasses define :meth:`next_value` (the bootstrapped value at the n-th next state),
    :meth:`policy_loss_terms` and :meth:`soft_update_targets`' schedule."""

    MODULES = ("critic", "critic_target", "policy")
    OPTIMIZERS = ("critic_optim", "policy_optim")
    METRICS = ("critic/loss", "critic/q_mean", "critic/grad_norm", "policy/loss")

    def __init__(self, spec: ModelFreeSpec, obs_dim: int, action_dim: int, runtime=None) -> None:
        super().__init__(spec, obs_dim, action_dim, runtime)
        o = spec.optim
        self.encoder = FeatureEncoder(spec.encoder, obs_dim) if spec.encoder else None
        feature_dim = spec.encoder.feature_dim if spec.encoder else obs_dim
        self.critic = CRITICS.get(spec.critic.type)(spec.critic, feature_dim + action_dim)
        self.policy = POLICIES.get(spec.policy.type)(spec.policy, feature_dim, action_dim)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False) if self.encoder else None
        critic_params = list(self.critic.parameters())
        self.critic_optim = self.adam(critic_params, o.critic_lr, o.weight_decay, o.fused)
        self.policy_optim = self.adam(self.policy.parameters(), o.policy_lr, o.weight_decay, o.fused)
        if self.encoder is not None:
            self.MODULES = (*type(self).MODULES, "encoder", "encoder_target")
            self.OPTIMIZERS = (*type(self).OPTIMIZERS, "encoder_optim")
            self.encoder_optim = self.adam(self.encoder.parameters(), o.encoder_lr, o.weight_decay, o.fused)
        self.target_aggregate = build_aggregator(spec.aggregators.target)
        self.policy_aggregate = build_aggregator(spec.aggregators.policy)
        n = spec.value_horizon
        self.register_buffer("gammas", spec.discount ** torch.arange(n, dtype=torch.float32), persistent=False)
        self.bootstrap_discount = spec.discount ** n
        self.critic_clip = o.critic_grad_clip
        # the critic loss trains the critic and the optional encoder: one step over both, built once
        self._critic_optim = _Joint([self.critic_optim] + ([self.encoder_optim] if self.encoder is not None else []))
        self._critic_params = critic_params + (list(self.encoder.parameters()) if self.encoder is not None else [])
        self.critic_updates = 0
        r = self.runtime
        self.compiled_critic_loss = Compiled(self.critic_loss_terms, r, "critic loss", cuda_graphs=True)
        self.compiled_policy_loss = Compiled(self.policy_loss_terms, r, "policy loss", cuda_graphs=True)

    # ------------------------------------------------------------------------------ networks
    def features(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        encoder = self.encoder_target if target else self.encoder
        return obs if encoder is None else encoder(obs)

    def q_values(self, features: torch.Tensor, action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Every member's value ``[N, B, 1]`` (fp32) of ``(features [B, F], action [B, A])``."""
        critic = self.critic_target if target else self.critic
        return critic(torch.cat([features, action.to(features.dtype)], -1)).float()

    def q_aggregate(self, features: torch.Tensor, action: torch.Tensor, aggregate, members=None,
                    target: bool = False) -> torch.Tensor:
        """``aggregate`` of the members' values ``[B, 1]`` (only ``members`` evaluated, if given)."""
        critic = self.critic_target if target else self.critic
        return critic.aggregate(torch.cat([features, action.to(features.dtype)], -1), aggregate, members)

    def q_target_atoms(self, features: torch.Tensor, action: torch.Tensor, members=None) -> torch.Tensor:
        """The target critic's bootstrap atoms ``[B, K]`` (K = 1 but for a quantile critic's
        truncated atoms), under the target aggregator."""
        x = torch.cat([features, action.to(features.dtype)], -1)
        return self.critic_target.td_atoms(x, self.target_aggregate, members).float()

    def draw(self, aggregate) -> torch.Tensor | None:
        """A subset aggregator's members for one update batch (None: all members)."""
        return draw_members(aggregate, getattr(self.critic, "num_members", None), self.device)

    @property
    def replay_horizon(self) -> int:
        return self.spec.value_horizon

    # ------------------------------------------------------------------------------ acting
    def policy_action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        return self.policy.act(self.features(obs))[0]

    @torch.no_grad()
    def value_estimate(self, obs, action):
        obs, action = obs.to(self.device, torch.float32), action.to(self.device, torch.float32)
        features = self.features(obs)
        q = self.q_values(features, action)
        agg = self.target_aggregate
        if agg.subset is None and not agg.pools_atoms:
            value = agg(q)  # the values just computed
        else:
            value = self.q_aggregate(features, action, agg, self.draw(agg))
        return value[:, 0], q.std(0)[:, 0] if q.shape[0] > 1 else torch.zeros_like(q[0, :, 0])

    # ------------------------------------------------------------------------------ training
    def next_value(self, next_obs: torch.Tensor, noise: torch.Tensor, members=None) -> torch.Tensor:
        """The bootstrapped value ``[B, 1]`` (or atoms ``[B, K]``) at the n-th next observation (no
        gradient); ``members``: the target aggregator's subset."""
        raise NotImplementedError

    def target_noise(self, batch_size: int) -> torch.Tensor:
        """Random numbers the target needs, drawn outside the compiled loss ``[B, A]``."""
        return torch.randn(batch_size, self.action_dim, device=self.device)

    def critic_loss_terms(self, obs0, action0, reward, terminated, last_next_obs, noise, members=None):
        """``(loss, q [N, B, M], target [B, K], features [B, F])``; the loss sums every member's
        regression loss (MSE for scalar critics; a quantile critic's loss is averaged, as TQC's)."""
        with torch.no_grad():
            ret, not_done = n_step_return(reward, terminated, self.gammas)
            # members only when drawn: an agent written before subsets keeps next_value(next_obs, noise)
            bootstrap = (self.next_value(last_next_obs, noise) if members is None
                         else self.next_value(last_next_obs, noise, members))
            target = ret + not_done * self.bootstrap_discount * bootstrap
        features = self.features(obs0)  # the optional encoder learns from the critic loss only
        q = self.critic.atoms(torch.cat([features, action0.to(features.dtype)], -1)).float()
        # TD3/SAC sum their critics' losses (MSE(Q1) + MSE(Q2)); TQC's code averages the quantile
        # loss over its nets as well as over atoms, so a quantile critic keeps TQC's scale
        over = "mean" if getattr(self.critic, "quantile", False) else "sum"
        loss = self.critic.regression_loss(q, target, "mse", over_members=over)
        return loss, q, target, features

    def critic_step(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        clip = (self._critic_params, self.critic_clip) if self.critic_clip else None
        loss, (q, target, features), norm = self.optimize(
            self.compiled_critic_loss, self._critic_optim, batch.obs[:, 0], batch.action[:, 0], batch.reward,
            batch.terminated, batch.next_obs[:, -1], self.target_noise(batch.reward.shape[0]),
            self.draw(self.target_aggregate), clip=clip)
        td_error = self.critic.td_error(q.detach(), target)
        metrics = {"critic/loss": loss.detach(), "critic/q_mean": q.detach().mean()}
        if norm is not None:
            metrics["critic/grad_norm"] = norm.detach()
        return features.detach(), metrics, td_error

    def policy_loss_terms(self, features: torch.Tensor, members=None):
        raise NotImplementedError

    def policy_step(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        with frozen(self.critic):
            members = self.draw(self.policy_aggregate)  # passed only when drawn (as next_value)
            args = (features,) if members is None else (features, members)
            loss, out, _ = self.optimize(self.compiled_policy_loss, self.policy_optim, *args)
        return {"policy/loss": loss.detach(), **self.after_policy_update(*out)}

    def after_policy_update(self, *out) -> dict[str, torch.Tensor]:
        """Hook after each policy update, given the policy loss's other outputs; returns metrics
        (SAC tunes its temperature here)."""
        return {}

    def soft_update_targets(self, policy_updated: bool) -> None:
        """After each critic update (and the policy update, if there was one)."""
        raise NotImplementedError

    def soft_update_critic(self) -> None:
        soft_update_(self.critic_target, self.critic, self.spec.tau)
        if self.encoder is not None:
            soft_update_(self.encoder_target, self.encoder, self.spec.tau)

    def update(self, replay) -> dict[str, torch.Tensor]:
        self.begin_update()
        self.training_steps += 1
        self.env_terminates = replay.env_terminates
        spec, metrics = self.spec, {}
        for _ in range(spec.updates_per_step):
            batch = replay.sample(spec.batch_size, horizon=spec.value_horizon).to(self.device)
            features, critic_metrics, td_error = self.critic_step(batch)
            if replay.prioritized:
                replay.update_priority(batch.indices, td_error)
            metrics.update(critic_metrics)
            self.critic_updates += 1
            policy_now = self.critic_updates % spec.policy_delay == 0
            if policy_now:
                metrics.update(self.policy_step(features))
            self.soft_update_targets(policy_now)
        return metrics

    def scalars(self) -> dict:
        return {**super().scalars(), "critic_updates": int(self.critic_updates)}

    def load_scalars(self, scalars: dict) -> None:
        super().load_scalars(scalars)
        self.critic_updates = scalars["critic_updates"]


class _Joint:
    """Several optimisers stepped as one (the critic and the optional encoder share a loss)."""

    def __init__(self, optims) -> None:
        self.optims = optims

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optims:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optims:
            o.step()
