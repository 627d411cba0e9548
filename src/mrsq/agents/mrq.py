"""MR.Q (Fujimoto et al., 2025), whose spec also expresses MRS.Q and every ablation.

The agent takes its latent model, critic ensemble (with N), aggregators (TD target, policy loss,
planner), policy and planner from the spec, so MRS.Q is a preset of this class, not a subclass.

One training step (``update``), as in MR.Q's algorithm box:

1. Every ``target_update_every`` (250) steps: hard-copy encoder, critics and policy into their
   targets, refresh the reward scales, then run 250 encoder updates back to back.
2. One critic update on a 3-step return, TD3 target-policy smoothing, the target aggregator
   (min) over the target ensemble, Huber loss, grad-norm clip 20; LAP priorities from the
   max-over-members TD error.
3. One policy update: maximise the policy aggregator (mean) of the critics at pi(zs), plus a
   small penalty on the pre-tanh activation.

Deliberate deviations from MR.Q's public code at its current head (8a44a7d; also in
docs/design.md):

* Multi-step rewards are masked by the cumulative not-done flag of the EARLIER steps. The public
  code masks each reward by that step's own not-done flag, which drops the terminal reward
  itself; here the terminal reward counts and nothing after it does.
* The policy loss does not compute weight gradients for the critic and encoder (they are frozen
  for that backward pass); the public code computes and then discards them. Same update, less work.

LAP priorities come from the critic's TD error on the sampled (replay) actions, as in the public
code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from mrsq.agents.base import Agent, AgentSpec, alive_before, frozen
from mrsq.agents.spec import LossWeights, OptimSpec, Section, TwoHotSpec
from mrsq import runtime as rt
from mrsq.compile import Compiled
from mrsq.critics.aggregators import build_aggregator, draw_members
from mrsq.nn import hard_update_
from mrsq.registry import AGENTS, AGGREGATORS, CRITICS, ENCODERS, POLICIES
from mrsq.specs import component
from mrsq.twohot import TwoHot


class DistillSpec(Section):
    """A small value head for the planner, trained each critic update to regress the ensemble's
    aggregated value (``aggregator``, min by default) of the replay batch's state-action pairs.
    The planner's terminal value is this head alone (one small network instead of N critics);
    the TD target keeps the full ensemble. Whether the head stays as pessimistic as the min on
    the planner's own (off-distribution) actions is what ``planner_value_bias`` in eval.csv
    measures."""

    head: component(CRITICS) = Field(default_factory=lambda: {
        "type": "ensemble", "num_members": 1, "hidden_dim": 256, "num_hidden": 2}, validate_default=True)
    aggregator: component(AGGREGATORS) = Field(default_factory=lambda: {"type": "min"}, validate_default=True)
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate of the head (weight decay: optim's)")

    @model_validator(mode="after")
    def _one_value(self):
        if getattr(self.head, "num_members", 1) != 1:
            raise ValueError(f"distill.head.num_members is {self.head.num_members}: the distilled head is one "
                             f"value (1 member), which is its point")
        if getattr(type(self.aggregator), "DRAWS_SUBSET", False):
            raise ValueError(f"distill.aggregator {self.aggregator.type!r} draws a member subset; the head "
                             f"regresses an aggregate of every member's value (min, mean, ...)")
        return self


class MRQSpec(AgentSpec):
    """MR.Q's hyperparameters (MR.Q paper, Table of defaults) and the parts it is built from."""

    type: Literal["mrq"] = "mrq"
    encoder: component(ENCODERS) = Field(default_factory=lambda: {"type": "elu"}, validate_default=True)
    critic: component(CRITICS) = Field(default_factory=lambda: {"type": "ensemble"}, validate_default=True)
    policy: component(POLICIES) = Field(default_factory=lambda: {"type": "tanh"}, validate_default=True)
    losses: LossWeights = Field(default_factory=LossWeights)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    reward_bins: TwoHotSpec = Field(default_factory=TwoHotSpec)
    encoder_horizon: int = Field(5, ge=1, description="latent unroll length of the encoder loss")
    value_horizon: int = Field(3, ge=1, description="n of the n-step TD target")
    target_update_every: int = Field(250, ge=1, description="hard target copies + encoder burst period")
    target_policy_noise: float = Field(0.2, ge=0)
    noise_clip: float = Field(0.3, ge=0)
    distill: DistillSpec | None = Field(None, description="a distilled value head the planner scores with "
                                                          "instead of the critic ensemble (None: the ensemble)")

    @model_validator(mode="after")
    def _distill_needs_a_search(self):
        if self.distill is None:
            return self
        if self.planner.type == "policy":
            raise ValueError("distill: the distilled head is the planner's terminal value, and planner 'policy' "
                             "never scores anything; use a search planner (mppi, cem, ...) or drop distill")
        agg, atoms = self.distill.aggregator, getattr(self.critic, "num_quantiles", 1)
        if getattr(type(agg), "POOLS_ATOMS", False) and agg.drop >= atoms:
            raise ValueError(f"distill.aggregator.drop ({agg.drop}) drops every atom: it must be below the "
                             f"critic's {atoms} atom(s) per member")
        return self


@dataclass(frozen=True)
class _Hyper:
    """The spec's scalars as plain values: nothing pydantic is read inside update or act."""

    batch_size: int
    target_update_every: int
    encoder_horizon: int
    value_horizon: int
    exploration_noise: float
    target_policy_noise: float
    noise_clip: float
    critic_grad_clip: float
    w_dynamics: float
    w_reward: float
    w_termination: float
    w_pre_activation: float
    bf16: bool

    @classmethod
    def from_spec(cls, s: MRQSpec, runtime: rt.Runtime) -> "_Hyper":
        return cls(s.batch_size, s.target_update_every, s.encoder_horizon, s.value_horizon, s.exploration_noise,
                   s.target_policy_noise, s.noise_clip, s.optim.critic_grad_clip, s.losses.dynamics,
                   s.losses.reward, s.losses.termination, s.losses.pre_activation, runtime.bf16)


def _takes_keyword(obj, methods: tuple[str, ...], name: str) -> bool:
    """Whether every one of ``obj``'s ``methods`` accepts the keyword ``name``."""
    import inspect

    for method in methods:
        try:
            params = inspect.signature(getattr(obj, method)).parameters
        except (AttributeError, TypeError, ValueError):
            return False
        if name not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return True


class _PlanningView:
    """The agent's acting networks through :class:`mrsq.planners.base.PlanningModel`.

    In fp32 these are the online networks themselves; in bf16 they are bf16 copies refreshed
    after each update (:meth:`MRQ.acting_nets`). Latents stay in the acting dtype; rewards,
    termination probabilities and values come back as fp32 (elite selection and the softmax
    weights are computed in fp32).
    """

    def __init__(self, agent: "MRQ", nets: "_Nets") -> None:
        self.agent, self.nets = agent, nets
        self.action_dim = agent.action_dim
        self.discount = agent.spec.discount
        self.dtype = next(nets.encoder.parameters()).dtype
        self.members = None  # the planner aggregator's member subset of this planning call
        # a dropout critic (DroQ-style) scores plans without dropout, as TD-MPC2 plans: the values
        # are deterministic (stochastic_value stays honest) and no mask is drawn per scoring call
        self.value_kwargs = agent._critic_eval_kwargs  # none for a critic that takes none

    @property
    def episodic(self) -> bool:
        return self.agent.env_terminates

    @property
    def stochastic_value(self) -> bool:
        # the policy is deterministic: only an aggregator that draws per call makes values random
        return self.agent.planner_aggregate.draws_per_call

    def step(self, z, a):
        done, next_z, reward_logits = self.nets.encoder.model_all(z, a.to(self.dtype))
        return self.agent.two_hot.decode(reward_logits.float()), done.float().clamp(0, 1), next_z

    def policy(self, z: torch.Tensor) -> torch.Tensor:
        return self.nets.policy.act(z).float()

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        # A planner encodes once per planning call: a subset aggregator's members are drawn
        # here, so one draw serves every iteration of the search (None: all members).
        self.members = draw_members(self.agent.planner_aggregate, self.agent.num_members, obs.device)
        return self.nets.encoder.zs(obs.to(self.dtype))

    def value(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        # The critics learn Q / reward_scale (MR.Q's reward scaling); the planner adds them to
        # predicted raw rewards, so scale them back. The scale is a tensor (not a float) so a
        # compiled scorer does not specialise on it and recompile every 250 steps.
        zsa = self.nets.encoder.zsa(z, a.to(self.dtype))
        if self.nets.head is not None:  # the distilled head alone
            return self.nets.head(zsa)[0].float() * self.agent.scales[0]
        return (self.nets.critic.aggregate(zsa, self.agent.planner_aggregate, self.members, **self.value_kwargs)
                * self.agent.scales[0])


@dataclass
class _Nets:
    """The networks acting and planning use (plain attribute holder, not an nn.Module, so bf16
    copies stay out of state dicts and checkpoints)."""

    encoder: nn.Module
    critic: nn.Module
    policy: nn.Module
    head: nn.Module | None = None  # the distilled planning head, if any


@AGENTS.register("mrq", spec=MRQSpec, help="MR.Q; with the right spec also MRS.Q and its ablations")
class MRQ(Agent):
    MODULES = ("encoder", "encoder_target", "critic", "critic_target", "policy", "policy_target", "planner")
    OPTIMIZERS = ("encoder_optim", "critic_optim", "policy_optim")
    METRICS = ("encoder/loss", "encoder/dynamics", "encoder/reward", "encoder/termination",
               "critic/loss", "critic/q_mean", "critic/grad_norm", "policy/loss", "policy/pre_activation")

    def __init__(self, spec: MRQSpec, obs_dim: int, action_dim: int, runtime: rt.Runtime | None = None) -> None:
        super().__init__(spec, obs_dim, action_dim, runtime)
        self.hp = _Hyper.from_spec(spec, self.runtime)
        self.encoder = ENCODERS.get(spec.encoder.type)(spec.encoder, obs_dim, action_dim)
        zsa_dim = spec.encoder.zsa_dim
        self.critic = CRITICS.get(spec.critic.type)(spec.critic, zsa_dim)
        self.policy = POLICIES.get(spec.policy.type)(spec.policy, spec.encoder.zs_dim, action_dim)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.policy_target = copy.deepcopy(self.policy).requires_grad_(False)
        self.two_hot = TwoHot(spec.encoder.num_bins, spec.reward_bins.lower, spec.reward_bins.upper)
        self.target_aggregate = build_aggregator(spec.aggregators.target)
        self.policy_aggregate = build_aggregator(spec.aggregators.policy)
        self.planner_aggregate = build_aggregator(spec.aggregators.planner)
        self.num_members = getattr(self.critic, "num_members", None)

        o = spec.optim
        self.encoder_optim = self.adam(self.encoder.parameters(), o.encoder_lr, o.weight_decay, o.fused)
        self.critic_optim = self.adam(self.critic.parameters(), o.critic_lr, o.weight_decay, o.fused)
        self.policy_optim = self.adam(self.policy.parameters(), o.policy_lr, o.weight_decay, o.fused)
        self.distill_head = None
        if spec.distill is not None:  # its module, optimiser and metric join the checkpoint and train.csv
            d = spec.distill
            self.distill_head = CRITICS.get(d.head.type)(d.head, zsa_dim)
            self.distill_aggregate = build_aggregator(d.aggregator)
            self.distill_optim = self.adam(self.distill_head.parameters(), d.lr, o.weight_decay, o.fused)
            self.MODULES = (*type(self).MODULES, "distill_head")
            self.OPTIMIZERS = (*type(self).OPTIMIZERS, "distill_optim")
            self.METRICS = (*type(self).METRICS, "distill/loss")

        h = spec.value_horizon
        self.register_buffer("gammas", spec.discount ** torch.arange(h, dtype=torch.float32), persistent=False)
        self.bootstrap_discount = spec.discount ** h
        # reward_scale starts at 1 and target_reward_scale at 0, as in MR.Q; both are refreshed
        # before the first critic update. The floats are for logs and checkpoints; the buffer
        # (reward_scale, target_reward_scale) is what the (compiled) losses and planner read.
        self.register_buffer("scales", torch.tensor([1.0, 0.0]), persistent=False)
        self.reward_scale, self.target_reward_scale = 1.0, 0.0
        self._acting: _Nets | None = None  # bf16 copies for acting (built on first use)
        self._acting_stale = True
        self.planning_model = _PlanningView(self, _Nets(self.encoder, self.critic, self.policy, self.distill_head))
        self._compile()

    def _compile(self) -> None:
        """Wrap the update losses and the planner's scoring per the runtime (no-ops when eager)."""
        r = self.runtime
        self.compiled_encoder_loss = Compiled(self.encoder_loss_terms, r, "encoder loss", cuda_graphs=True)
        self.compiled_critic_loss = Compiled(self.critic_loss_terms, r, "critic loss", cuda_graphs=True)
        self.compiled_policy_loss = Compiled(self.policy_loss_terms, r, "policy loss", cuda_graphs=True)
        if self.distill_head is not None:
            self.compiled_distill_loss = Compiled(self.distill_loss_terms, r, "distill loss", cuda_graphs=True)
        if hasattr(self.planner, "set_runtime"):
            self.planner.set_runtime(r)

    @property
    def replay_horizon(self) -> int:
        return max(self.spec.encoder_horizon, self.spec.value_horizon)

    def prepare(self, replay) -> None:
        self.update_targets(replay.reward_scale())
        self.env_terminates = replay.env_terminates

    def after_optimizer_step(self) -> None:
        self._acting_stale = True  # bf16 acting copies refresh before the next action

    def acting_nets(self) -> _Nets:
        """Networks for acting and planning: the online ones in fp32; in bf16, bf16 copies of
        them, refreshed (one fused foreach copy-cast) after each update, not cast per call."""
        if not self.hp.bf16:
            return self.planning_model.nets
        masters = [m for m in (self.encoder, self.critic, self.policy, self.distill_head) if m is not None]
        if self._acting is None:
            copies = [copy.deepcopy(m).to(torch.bfloat16).requires_grad_(False) for m in masters]
            self._acting = _Nets(*copies)
            self._acting_view = _PlanningView(self, self._acting)
            self._acting_stale = False
        elif self._acting_stale:
            with torch.no_grad():
                acting = [m for m in (self._acting.encoder, self._acting.critic, self._acting.policy,
                                      self._acting.head) if m is not None]
                for src, dst in zip(masters, acting):
                    torch._foreach_copy_(list(dst.parameters()), list(src.parameters()))
            self._acting_stale = False
        return self._acting

    def acting_view(self) -> _PlanningView:
        """The :class:`PlanningModel` the planner uses now (bf16 copies refreshed if stale)."""
        self.acting_nets()
        return self._acting_view if self.hp.bf16 else self.planning_model

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .float() etc.: rebuild the bf16 acting copies from the moved masters
        self._acting = None
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------------------ acting
    def policy_action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        view = self.acting_view()
        return view.policy(view.encode(obs))[0]

    def reference_action(self, view, obs: torch.Tensor) -> torch.Tensor:
        # encoded without view.encode, which starts a planning call (and draws a planner subset)
        return view.policy(view.nets.encoder.zs(obs.to(view.dtype)))[0].float()

    @torch.no_grad()
    def value_estimate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The agent's value of ``(obs [T, obs], action [T, A])`` in return units (the value-error
        diagnostic, the paper's Figure 3): the TD target's aggregator over the online critic
        ensemble, times the reward scale (the critics learn Q / reward_scale). Online fp32
        networks. Returns ``(Q [T], per-member std [T])``, both in return units."""
        obs, action = obs.to(self.device, torch.float32), action.to(self.device, torch.float32)
        zsa = self.encoder.zsa(self.encoder.zs(obs), action)
        kwargs = self._critic_eval_kwargs  # a dropout critic's value without dropout (deterministic)
        q = self.critic(zsa, **kwargs).float()  # [N, T, 1]
        scale = self.scales[0]
        agg = self.target_aggregate
        if agg.subset is None and not agg.pools_atoms:
            value = agg(q)  # the values just computed (one forward)
        else:
            value = self.critic.aggregate(zsa, agg, draw_members(agg, self.num_members, self.device), **kwargs)
        return (value * scale)[:, 0], (q.std(0) * scale)[:, 0]

    @torch.no_grad()
    def planner_value_estimate(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The value the planner's terminal step would give ``(obs [T, obs], action [T, A])``, in
        return units ``[T]``: the distilled head if there is one, else the planner's aggregator
        over the online ensemble (eval.csv's ``planner_value_bias``)."""
        obs, action = obs.to(self.device, torch.float32), action.to(self.device, torch.float32)
        zsa = self.encoder.zsa(self.encoder.zs(obs), action)
        if self.distill_head is not None:
            value = self.distill_head(zsa)[0].float()
        else:
            members = draw_members(self.planner_aggregate, self.num_members, self.device)
            value = self.critic.aggregate(zsa, self.planner_aggregate, members, **self._critic_eval_kwargs)
        return (value * self.scales[0])[:, 0]

    @property
    def critic_eval_dropout(self) -> bool | None:
        """``False`` for a critic with dropout whose ``forward``, ``atoms`` and ``aggregate`` take
        a ``dropout`` keyword (mrsq's ensembles): its values for planning, distillation and the
        diagnostics are taken without it. ``None`` otherwise: no keyword is passed, so a user
        critic written to the documented ``forward(zsa)`` / ``aggregate(x, agg, members)`` keeps
        working (in training mode, as before)."""
        if "_eval_dropout" not in self.__dict__:
            rate = getattr(self.critic, "dropout", 0)
            takes = _takes_keyword(self.critic, ("forward", "atoms", "aggregate"), "dropout")
            self.__dict__["_eval_dropout"] = False if isinstance(rate, (int, float)) and rate > 0 and takes else None
        return self.__dict__["_eval_dropout"]

    @property
    def _critic_eval_kwargs(self) -> dict:
        dropout = self.critic_eval_dropout
        return {} if dropout is None else {"dropout": dropout}

    # ------------------------------------------------------------------------------ training
    def update(self, replay) -> dict[str, torch.Tensor]:
        """One training-phase environment step of MR.Q. Returns detached scalar tensors."""
        s = self.hp
        self.begin_update()
        self.training_steps += 1
        self.env_terminates = replay.env_terminates
        metrics: dict[str, torch.Tensor] = {}
        device = self.gammas.device
        if (self.training_steps - 1) % s.target_update_every == 0:
            self.update_targets(replay.reward_scale())
            for _ in range(s.target_update_every):
                # exactly encoder_horizon steps (the replay's windows are max(encoder, value) long)
                metrics.update(self.encoder_step(replay.sample(s.batch_size, horizon=s.encoder_horizon).to(device)))
        batch = replay.sample(s.batch_size, horizon=s.value_horizon).to(device)
        zs, value_metrics, td_error = self.critic_step(batch)
        replay.update_priority(batch.indices, td_error)  # LAPReplay moves it to its (CPU) storage
        metrics.update(value_metrics)
        metrics.update(self.policy_step(zs))
        return metrics

    def update_targets(self, reward_scale: float) -> None:
        hard_update_(self.encoder_target, self.encoder)
        hard_update_(self.critic_target, self.critic)
        hard_update_(self.policy_target, self.policy)
        self.target_reward_scale = self.reward_scale
        self.reward_scale = reward_scale

    @property
    def reward_scale(self) -> float:
        return self._reward_scale

    @reward_scale.setter
    def reward_scale(self, value: float) -> None:
        self._reward_scale = float(value)
        self.scales[0] = self._reward_scale

    @property
    def target_reward_scale(self) -> float:
        return self._target_reward_scale

    @target_reward_scale.setter
    def target_reward_scale(self, value: float) -> None:
        self._target_reward_scale = float(value)
        self.scales[1] = self._target_reward_scale

    def encoder_loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Unrolled model loss over H steps from z0 = f(s0) (MR.Q eq. for L_Encoder).

        Each step's dynamics, reward and termination terms are means over the batch, masked by
        the product of the earlier steps' not-done flags, and summed over the H steps.
        """
        loss, dyn, rew, term = self.encoder_loss_terms(batch.obs, batch.action, batch.reward,
                                                       batch.next_obs, batch.terminated)
        return loss, self._encoder_metrics(loss, dyn, rew, term)

    def _encoder_metrics(self, loss, dyn, rew, term) -> dict[str, torch.Tensor]:
        metrics = {"encoder/dynamics": dyn.detach(), "encoder/reward": rew.detach()}
        if self.env_terminates:
            metrics["encoder/termination"] = term.detach()
        metrics["encoder/loss"] = loss.detach()
        return metrics

    def encoder_loss_terms(self, obs, action, reward, next_obs, terminated):
        """Plain-tensor body of :meth:`encoder_loss` (what gets compiled): obs/next_obs
        ``[B, H, obs]``, action ``[B, H, A]``, reward/terminated ``[B, H]`` -> (loss, dyn, rew, term)."""
        hp = self.hp
        B, H = action.shape[:2]
        with torch.no_grad():
            target_zs = self.encoder_target.zs(next_obs.reshape(B * H, -1)).reshape(B, H, -1)
        zs = self.encoder.zs(obs[:, 0])
        dones, next_zs, rewards = [], [], []
        for t in range(H):
            done, zs, reward_logits = self.encoder.model_all(zs, action[:, t])
            dones.append(done)
            next_zs.append(zs)
            rewards.append(reward_logits)
        alive = alive_before(terminated)  # [B,H]
        # .float(): losses in fp32 also under bf16 autocast (no-ops in fp32)
        dyn = ((torch.stack(next_zs, 1).float() - target_zs.float()).pow(2).mean(-1) * alive).mean(0).sum()
        rew = (self.two_hot.cross_entropy(torch.stack(rewards, 1).float(), reward) * alive).mean(0).sum()
        loss = hp.w_dynamics * dyn + hp.w_reward * rew
        term = torch.zeros_like(dyn)
        if self.env_terminates:  # MR.Q: only once a terminal transition has been stored
            term = ((torch.cat(dones, 1).float() - terminated).pow(2) * alive).mean(0).sum()
            loss = loss + hp.w_termination * term
        return loss, dyn, rew, term

    def encoder_step(self, batch) -> dict[str, torch.Tensor]:
        obs, next_obs = batch.obs, batch.next_obs
        if getattr(self.encoder, "pixels", False):
            # MR.Q's random shifts (maybe_augment_state), on the frames the loss encodes: the first
            # observation of each window and every next observation
            obs, next_obs = self.encoder.augment(obs[:, :1]), self.encoder.augment(next_obs)
        loss, (dyn, rew, term), _ = self.optimize(
            self.compiled_encoder_loss, self.encoder_optim,
            obs, batch.action, batch.reward, next_obs, batch.terminated)
        return self._encoder_metrics(loss, dyn, rew, term)

    def target_noise(self, batch_size: int) -> torch.Tensor:
        """TD3 target-policy smoothing noise ``clip(N(0, sigma^2), +-c)`` ``[B, A]``. Drawn outside
        the compiled loss, so eager and compiled runs consume the same random numbers."""
        s = self.hp
        noise = torch.randn(batch_size, self.action_dim, device=self.gammas.device) * s.target_policy_noise
        return noise.clamp(-s.noise_clip, s.noise_clip)

    @torch.no_grad()
    def value_target(self, batch, noise: torch.Tensor | None = None) -> torch.Tensor:
        """n-step target ``(R + notdone * gamma^n * agg Qbar(s_n, abar) * target_scale) / scale``.

        ``R = sum_t gamma^t r_t * alive_t`` where alive_t is the product of the not-done flags of
        the steps BEFORE t (the terminal reward counts, nothing after it does).
        """
        noise = self.target_noise(batch.reward.shape[0]) if noise is None else noise
        members = draw_members(self.target_aggregate, self.num_members, self.gammas.device)
        return self._value_target(batch.reward, batch.terminated, batch.next_obs[:, -1], noise, members)

    def _value_target(self, reward, terminated, last_next_obs, noise, members=None) -> torch.Tensor:
        """``[B, K]``: one target value (K = 1), or a quantile critic's target atoms."""
        with torch.no_grad():
            alive = alive_before(terminated)  # [B,H]
            ret = (reward * alive * self.gammas).sum(1, keepdim=True)
            not_done = alive[:, -1:] * (1 - terminated[:, -1:])
            next_zs = self.encoder_target.zs(last_next_obs)
            next_action = (self.policy_target.act(next_zs) + noise).clamp(-1, 1)
            q_next = self.critic_target.td_atoms(self.encoder_target.zsa(next_zs, next_action), self.target_aggregate,
                                                 members)
            reward_scale, target_reward_scale = self.scales[0], self.scales[1]
            return (ret + not_done * self.bootstrap_discount * q_next * target_reward_scale) / reward_scale

    def critic_loss(self, batch, noise: torch.Tensor | None = None, members: torch.Tensor | None = None):
        """The critic's regression loss of every member against the shared target (MR.Q: Huber).
        Returns (loss, q, target, zs)."""
        noise = self.target_noise(batch.reward.shape[0]) if noise is None else noise
        if members is None:
            members = draw_members(self.target_aggregate, self.num_members, self.gammas.device)
        return self.critic_loss_terms(batch.obs[:, 0], batch.action[:, 0], batch.reward,
                                      batch.terminated, batch.next_obs[:, -1], noise, members)[:4]

    def critic_loss_terms(self, obs0, action0, reward, terminated, last_next_obs, noise, members=None):
        """Plain-tensor body of :meth:`critic_loss` (what gets compiled); ``members``: the target
        aggregator's subset, drawn outside (once per update batch)."""
        target = self._value_target(reward, terminated, last_next_obs, noise, members)
        with torch.no_grad():  # RL losses never train the encoder
            zs = self.encoder.zs(obs0)
            zsa = self.encoder.zsa(zs, action0)
        q = self.critic.atoms(zsa).float()  # [N,B,M] (M = 1 but for quantile critics)
        loss = self.critic.regression_loss(q, target, "huber")
        return loss, q, target, zs, zsa

    def critic_step(self, batch):
        noise = self.target_noise(batch.reward.shape[0])
        members = draw_members(self.target_aggregate, self.num_members, self.gammas.device)
        obs0, last_next_obs = batch.obs[:, 0], batch.next_obs[:, -1]
        if getattr(self.encoder, "pixels", False):  # MR.Q shifts the value batch's frames too
            obs0, last_next_obs = self.encoder.augment(obs0), self.encoder.augment(last_next_obs)
        loss, (q, target, zs, zsa), grad_norm = self.optimize(
            self.compiled_critic_loss, self.critic_optim,
            obs0, batch.action[:, 0], batch.reward, batch.terminated, last_next_obs, noise,
            members, clip=(self.critic.parameters(), self.hp.critic_grad_clip))
        q = q.detach()
        td_error = self.critic.td_error(q, target)
        metrics = {"critic/loss": loss.detach(), "critic/q_mean": q.mean(),
                   "critic/grad_norm": grad_norm.detach()}
        if self.distill_head is not None:
            if self.critic_eval_dropout is not None:  # the head serves a planner that scores without dropout
                with torch.no_grad():
                    q = self.critic.atoms(zsa.detach(), **self._critic_eval_kwargs).float()
            metrics["distill/loss"] = self.distill_step(zsa.detach(), q)
        return zs.detach(), metrics, td_error

    def distill_loss_terms(self, zsa: torch.Tensor, q: torch.Tensor):
        """Huber loss of the distilled head at the replay batch's ``zsa`` against the distill
        aggregator of the ensemble's values ``q [N, B, M]`` there (both in critic units)."""
        with torch.no_grad():
            values = q if self.distill_aggregate.pools_atoms else q.mean(-1, keepdim=True)
            target = self.distill_aggregate(values)
        pred = self.distill_head(zsa)[0].float()
        return (F.smooth_l1_loss(pred, target),)

    def distill_step(self, zsa: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        loss, _, _ = self.optimize(self.compiled_distill_loss, self.distill_optim, zsa, q)
        return loss.detach()

    def policy_loss(self, zs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``-mean_B agg_i Q_i(g(zs, pi(zs))) + w * mean(pre_tanh^2)`` (agg: mean in MR.Q)."""
        with frozen(self.encoder, self.critic):
            loss, penalty = self.policy_loss_terms(zs, self._policy_members())
        return loss, {"policy/loss": loss.detach(), "policy/pre_activation": penalty.detach()}

    def _policy_members(self) -> torch.Tensor | None:
        return draw_members(self.policy_aggregate, self.num_members, self.gammas.device)

    def policy_loss_terms(self, zs: torch.Tensor, members: torch.Tensor | None = None):
        """Plain-tensor body of :meth:`policy_loss` (compiled); call it with the encoder and the
        critic frozen, so the backward computes no weight gradients for them."""
        action, pre = self.policy(zs)
        q = self.critic.aggregate(self.encoder.zsa(zs, action), self.policy_aggregate, members)
        penalty = pre.float().pow(2).mean()
        loss = -q.mean() + self.hp.w_pre_activation * penalty
        return loss, penalty

    def policy_step(self, zs: torch.Tensor) -> dict[str, torch.Tensor]:
        with frozen(self.encoder, self.critic):
            loss, (penalty,), _ = self.optimize(self.compiled_policy_loss, self.policy_optim, zs, self._policy_members())
        return {"policy/loss": loss.detach(), "policy/pre_activation": penalty.detach()}

    # ------------------------------------------------------------------------------ state
    def scalars(self) -> dict:
        return {**super().scalars(), "reward_scale": float(self.reward_scale),
                "target_reward_scale": float(self.target_reward_scale)}

    def load_scalars(self, scalars: dict) -> None:
        super().load_scalars(scalars)
        self.reward_scale, self.target_reward_scale = scalars["reward_scale"], scalars["target_reward_scale"]

    def actor_module(self):
        """``observation -> zs -> action`` as a TensorDictSequential for TorchRL pipelines: the
        deterministic policy, batched and differentiable, actions in ``[-1, 1]``, **without
        search and without exploration noise**. The action the agent takes (with its planner)
        is ``mrsq.api.PlanningActor`` (``Experiment.actor(planning=True)``)."""
        from tensordict.nn import TensorDictSequential

        return TensorDictSequential(self.encoder.as_tensordict_module(), self.policy.as_tensordict_module())
