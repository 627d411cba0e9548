"""A TD-MPC2-style latent agent (Hansen et al., 2024) built from mrsq's component families.

* Latent model: any registered encoder family member (default SEM, i.e. TD-MPC2's SimNorm:
  layer norm then a softmax over groups of 8) gives ``z = f(obs)`` and, from ``(z, a)``, the next
  latent, the reward logits (two-hot over 101 symlog-spaced bins) and a termination logit.
* Critics: an ensemble (default 5 two-hot critics, dropout 0.01, zero-initialised last layer)
  on ``[z, a]``; the TD target takes the min of 2 members drawn per update from the target
  critics (``min_of_k``), the policy and the planner the mean of 2 drawn (``mean_of_k``).
* Policy: tanh-squashed Gaussian with an entropy bonus.
* Planner: MPPI with 24 policy-prior rollouts (the view's policy samples, as TD-MPC2 does).

One update (TD-MPC2's ``_update``, facts from its public code at e9f5932) on a window of
H = 3 transitions:

1. Targets (no gradient): ``z'_t = f(s_{t+1})`` by the ONLINE encoder (there is no target
   encoder), and ``y_t = r_t + gamma (1 - d_t) Qbar_agg(z'_t, a'), a' ~ pi(z'_t)`` (target critics,
   no dropout).
2. Roll the dynamics from ``z_0 = f(s_0)`` with the stored actions. Losses, each step weighted by
   ``rho^t`` (rho 0.5 on DMC, 0.7 on Gym, as TD-MPC2's env settings) and divided by H: consistency ``||z_hat_{t+1} - z'_t||^2`` (mean over the latent),
   reward and value as soft cross-entropies against the two-hot targets (value: every member, at
   the predicted latents ``z_hat_t``, with the critics' dropout, averaged over members);
   termination (when the env terminates) binary cross-entropy, a plain mean. Total
   ``20 consistency + 0.1 reward + 0.1 value + 1 termination``; one Adam step over the latent model
   (lr x 0.3) and the critics, grad norm clipped at 20.
3. Policy: on the detached latents ``z_hat_0..H``, minimise the mean over t of
   ``rho^t mean_B (1e-4 * A * log N(u) - Q_agg / S)`` where ``log N(u)`` is the Gaussian log-prob
   of the pre-tanh sample (TD-MPC2's "scaled entropy" reduces to this) and ``S`` TD-MPC2's
   running scale: ``S <- lerp(S, max(p95 - p05, 1), 0.01)`` from 1, percentiles of the first
   step's Q over the batch. Adam (eps 1e-5), grad norm clipped at 20.
4. Soft update of the target critics (tau 0.01).

When the warm-up ends (``max(1000, 5 x episode length)`` random steps: 2,500 on DMC, 5,000 on
Gym), the first ``update`` is a burst of as many updates as warm-up transitions (TD-MPC2's
pretraining when seeding ends; ``pretrain: false`` skips it). Every layer norm of the networks
(hidden layers and the SimNorm blocks) has a learnable scale and shift, as TD-MPC2's
``nn.LayerNorm``; MR.Q's have none, and mrsq's ``mrq`` keeps it that way. The planner re-scores
the policy's trajectories at every MPPI iteration with that iteration's drawn critic pair and
terminal-action sample, as TD-MPC2 scores all 512 sequences each time
(``rescore_policy_trajectories: auto``: the value of a sequence is random here).

Deliberate deviations (also in docs/design.md):

* Dynamics, reward and termination share the latent model's state-action trunk (mrsq's encoder
  family, as MR.Q) instead of TD-MPC2's three separate MLPs, and the state encoder has two
  hidden layers of 512 (TD-MPC2: one of 256); in all 5.1M parameters on cheetah-run, about
  the size of TD-MPC2's default "5M" model. Weights use MR.Q's xavier init (TD-MPC2: truncated normal,
  std 0.02); the critics' last layers are zeroed as in TD-MPC2, the reward head's is not.
* The planner weights later steps by the predicted survival probability (mrsq's sampling
  planners); TD-MPC2's episodic variant uses a sticky 0.5 threshold.
* Windows never cross a termination: steps after a terminal transition are masked out of every
  loss (TD-MPC2 samples sub-trajectories of whole episodes).
* The discount is the spec's ``discount`` (0.99 here and for every agent) rather than TD-MPC2's
  episode-length heuristic; on the tasks mrsq runs the two agree: the heuristic gives 0.99 for
  DMC's 500-step episodes, and TD-MPC2's Gym path caps it at 0.99 (envs/mujoco.py sets
  ``discount_max = 0.99``), so 0.995 (its general cap, for 1000-step episodes) never applies.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from mrsq.agents.base import Agent, AgentSpec, alive_before, env_suite, frozen, require
from mrsq.agents.spec import AggregatorChoice, ReplaySpec, Section
from mrsq.compile import Compiled
from mrsq.critics.aggregators import build_aggregator, draw_members
from mrsq.nn import soft_update_
from mrsq.registry import AGENTS, CRITICS, ENCODERS, PLANNERS, POLICIES
from mrsq.specs import component
from mrsq.twohot import SymlogTwoHot


class TDMPC2Losses(Section):
    """TD-MPC2's loss coefficients."""

    consistency: float = Field(20.0, ge=0)
    reward: float = Field(0.1, ge=0)
    value: float = Field(0.1, ge=0)
    termination: float = Field(1.0, ge=0)
    entropy: float = Field(1e-4, ge=0, description="entropy coefficient of the policy loss")
    rho: float | Literal["auto"] = Field(
        "auto", description="per-step decay of the loss weights over the horizon; auto: 0.7 on Gym (MuJoCo), "
                            "0.5 elsewhere (TD-MPC2: config.yaml 0.5, envs/mujoco.py sets 0.7)")

    @field_validator("rho")
    @classmethod
    def _in_unit_interval(cls, rho):
        if rho != "auto" and not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1] or 'auto' (got {rho})")
        return rho


class TDMPC2Optim(Section):
    lr: float = Field(3e-4, gt=0)
    encoder_lr_scale: float = Field(0.3, gt=0, description="the latent model learns at lr x this")
    grad_clip: float = Field(20.0, gt=0)
    policy_eps: float = Field(1e-5, gt=0, description="Adam epsilon of the policy optimiser")
    fused: bool = True


class TDMPC2Spec(AgentSpec):
    """TD-MPC2's published defaults at its default 5M-parameter size (state observations)."""

    type: Literal["tdmpc2"] = "tdmpc2"
    encoder: component(ENCODERS) = Field(default_factory=lambda: {
        "type": "sem", "zs_dim": 512, "za_dim": 64, "zsa_dim": 512, "hidden_dim": 512, "activation": "mish",
        "num_bins": 101, "group_size": 8, "hidden_layer_norm_affine": True}, validate_default=True)
    critic: component(CRITICS) = Field(default_factory=lambda: {
        "type": "twohot_ensemble", "num_members": 5, "hidden_dim": 512, "num_hidden": 2, "activation": "mish",
        "dropout": 0.01, "num_bins": 101, "zero_init_last": True, "hidden_layer_norm_affine": True},
        validate_default=True)
    policy: component(POLICIES) = Field(default_factory=lambda: {
        "type": "tanh_gaussian", "hidden_dim": 512, "activation": "mish", "layer_norm": True,
        "log_std_min": -10.0, "log_std_max": 2.0, "hidden_layer_norm_affine": True},
        validate_default=True)
    planner: component(PLANNERS) = Field(
        default_factory=lambda: {"type": "mppi"}, validate_default=True)
    aggregators: AggregatorChoice = Field(default_factory=lambda: AggregatorChoice(
        target={"type": "min_of_k", "k": 2}, policy={"type": "mean_of_k", "k": 2},
        planner={"type": "mean_of_k", "k": 2}))
    replay: ReplaySpec = Field(default_factory=lambda: ReplaySpec(prioritized=False))
    losses: TDMPC2Losses = Field(default_factory=TDMPC2Losses)
    optim: TDMPC2Optim = Field(default_factory=TDMPC2Optim)
    horizon: int = Field(3, ge=1, description="latent unroll length of the model and value losses")
    tau: float = Field(0.01, gt=0, le=1, description="soft update rate of the target critics")
    reward_lower: float = Field(-10.0, description="lowest reward bin, in symlog space")
    reward_upper: float = Field(10.0, description="highest reward bin, in symlog space")
    warmup_steps: int | Literal["auto"] = Field(
        "auto", description="random actions first; auto: max(1000, 5 x episode length) as TD-MPC2's seed_steps "
                            "(2,500 on DMC: 500-step episodes at action repeat 2; 5,000 on Gym's 1000-step ones)")
    exploration_noise: float = Field(0.0, ge=0, description="unused by TD-MPC2's own exploration (planner std, "
                                                            "policy samples); a Gaussian std added on top")
    scale_tau: float = Field(0.01, gt=0, le=1, description="lerp rate of the running Q scale")
    pretrain: bool = Field(True, description="the first update is a burst of one update per warm-up transition "
                                             "(TD-MPC2 runs seed_steps updates at once when seeding ends)")

    ENV_DEFAULTS: ClassVar[dict] = {
        # TD-MPC2's envs/__init__.py: seed_steps = max(1000, 5 * episode_length); no env known:
        # 1000-step episodes (Gym's length)
        "warmup_steps": lambda spec, env: max(1000, 5 * (env.max_episode_steps if env is not None else 1000)),
        # TD-MPC2's envs/mujoco.py sets rho = 0.7 for its Gym tasks; config.yaml's 0.5 elsewhere
        "losses.rho": lambda spec, env: 0.7 if env_suite(env) == "gym" else 0.5,
    }

    @field_validator("warmup_steps")
    @classmethod
    def _non_negative(cls, steps):
        if steps != "auto" and steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 or 'auto' (got {steps})")
        return steps

    @field_validator("critic")
    @classmethod
    def _distributional(cls, critic):
        return require(CRITICS, critic, "distributional", "regresses a scalar; TD-MPC2's value loss needs a "
                                                           "two-hot critic such as 'twohot_ensemble'")

    @model_validator(mode="after")
    def _subset_in_the_planner_only(self):
        # The two-hot losses are compiled over every member; drawing a subset for them is not built
        # (TD-MPC2's own draw is min_of_k/mean_of_k, which evaluate all members and pick k).
        for use in ("target", "policy"):
            agg = getattr(self.aggregators, use)
            if getattr(type(agg), "DRAWS_SUBSET", False):
                raise ValueError(f"aggregators.{use}: {agg.type!r} evaluates only drawn members, which tdmpc2 "
                                 f"supports in its planner alone; use min_of_k / mean_of_k here")
        return self

    @field_validator("policy")
    @classmethod
    def _stochastic(cls, policy):
        return require(POLICIES, policy, "stochastic", "has no log-probabilities; TD-MPC2's entropy bonus needs a "
                                                         "stochastic policy such as 'tanh_gaussian'")


class _View:
    """:class:`~mrsq.planners.base.PlanningModel` over the online networks. ``policy`` samples
    (TD-MPC2 plans with sampled policy actions) unless ``sample`` is False (deterministic acting
    with the ``policy`` planner in evaluation)."""

    def __init__(self, agent: "TDMPC2") -> None:
        self.agent = agent
        self.action_dim, self.discount = agent.action_dim, agent.spec.discount
        self.sample = True
        self.members = None  # the planner aggregator's member subset of this planning call

    @property
    def episodic(self) -> bool:
        return self.agent.env_terminates

    @property
    def stochastic_policy(self) -> bool:
        return self.sample

    @property
    def stochastic_value(self) -> bool:
        # a sampled terminal action, or a planner aggregator that draws members per call
        return self.sample or self.agent.planner_aggregate.draws_per_call

    def encode(self, obs):
        # once per planning call: a subset aggregator's members are drawn here for the whole search
        self.members = draw_members(self.agent.planner_aggregate, self.agent.critic.num_members, obs.device)
        return self.agent.encoder.zs(obs)

    def step(self, z, a):
        done, next_z, reward_logits = self.agent.encoder.model_all(z, a)
        return self.agent.reward_two_hot.decode(reward_logits.float()), torch.sigmoid(done.float()), next_z

    def policy(self, z):
        policy = self.agent.policy
        return policy.sample(z)[0] if self.sample else policy.act(z)

    def reference(self, z):
        return self.agent.policy.act(z)  # the mean action: the divergence's reference

    def value(self, z, a):
        # no dropout in planning (TD-MPC2); a two-hot critic's atoms are its decoded values
        x = torch.cat([z, a.to(z.dtype)], -1)
        return self.agent.planner_aggregate(self.agent.critic.values(x, dropout=False, members=self.members))


@AGENTS.register("tdmpc2", spec=TDMPC2Spec, help="TD-MPC2-style latent agent: SimNorm model, two-hot critics, MPPI")
class TDMPC2(Agent):
    MODULES = ("encoder", "critic", "critic_target", "policy", "planner", "q_scale")
    OPTIMIZERS = ("model_optim", "policy_optim")
    METRICS = ("model/loss", "model/consistency", "model/reward", "model/termination", "model/grad_norm",
               "critic/loss", "critic/q_mean", "policy/loss", "policy/entropy", "policy/q_scale")

    def __init__(self, spec: TDMPC2Spec, obs_dim: int, action_dim: int, runtime=None) -> None:
        super().__init__(spec, obs_dim, action_dim, runtime)
        spec = self.spec  # env-dependent "auto" fields resolved (Agent.__init__)
        self.encoder = ENCODERS.get(spec.encoder.type)(spec.encoder, obs_dim, action_dim)
        zs_dim = spec.encoder.zs_dim
        self.critic = CRITICS.get(spec.critic.type)(spec.critic, zs_dim + action_dim)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.policy = POLICIES.get(spec.policy.type)(spec.policy, zs_dim, action_dim)
        self.reward_two_hot = SymlogTwoHot(spec.encoder.num_bins, spec.reward_lower, spec.reward_upper)
        self.target_aggregate = build_aggregator(spec.aggregators.target)
        self.policy_aggregate = build_aggregator(spec.aggregators.policy)
        self.planner_aggregate = build_aggregator(spec.aggregators.planner)
        o = spec.optim
        # TD-MPC2 scales the learning rate of its state encoder only: here f (obs -> zs) and the
        # output norm of zs; the dynamics/reward/termination trunk and the critics use the full lr
        encoder_ids = {id(p) for p in self.encoder.f.parameters()}
        encoder_ids |= {id(p) for p in getattr(self.encoder, "zs_norm", nn.Identity()).parameters()}
        state_encoder = [p for p in self.encoder.parameters() if id(p) in encoder_ids]
        model = [p for p in self.encoder.parameters() if id(p) not in encoder_ids] + list(self.critic.parameters())
        self.model_optim = torch.optim.Adam(
            [{"params": state_encoder, "lr": o.lr * o.encoder_lr_scale}, {"params": model}], lr=o.lr, fused=o.fused)
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=o.lr, eps=o.policy_eps, fused=o.fused)
        self.q_scale = _RunningScale(spec.scale_tau)
        h, rho = spec.horizon, spec.losses.rho
        self.register_buffer("rho", rho ** torch.arange(h + 1, dtype=torch.float32), persistent=False)
        self.view = _View(self)
        self._explore = True
        self._searches = spec.planner.type != "policy"  # plain value: act() reads no pydantic
        self.compiled_model_loss = Compiled(self.model_loss_terms, self.runtime, "model loss", cuda_graphs=True)
        self.compiled_policy_loss = Compiled(self.policy_loss_terms, self.runtime, "policy loss", cuda_graphs=True)
        if hasattr(self.planner, "set_runtime"):
            self.planner.set_runtime(self.runtime)

    @property
    def replay_horizon(self) -> int:
        return self.spec.horizon

    def prepare(self, replay) -> None:
        super().prepare(replay)
        self.training_steps = max(self.training_steps, 1)  # benches time steady-state updates, no burst

    def q_values(self, z: torch.Tensor, a: torch.Tensor, target: bool = False, dropout: bool = False) -> torch.Tensor:
        """Every member's decoded value ``[N, B, 1]`` of ``[z, a]`` (fp32). TD-MPC2 applies the
        critics' dropout in the model and policy losses only: never in TD targets (target
        critics), planning or diagnostics."""
        critic = self.critic_target if target else self.critic
        return critic.values(torch.cat([z, a.to(z.dtype)], -1), dropout=dropout and not target)

    # ------------------------------------------------------------------------------ acting
    def acting_view(self):
        # TD-MPC2 plans with sampled policy actions; the `policy` planner samples only to explore
        self.view.sample = self._explore or self._searches
        return self.view

    def act_on_device(self, obs, explore: bool = True, first: bool = False):
        self._explore = explore
        return super().act_on_device(obs, explore, first)

    def policy_action(self, obs, explore):
        z = self.encoder.zs(obs)
        return (self.policy.sample(z)[0] if explore else self.policy.act(z))[0]

    def reference_action(self, view, obs):
        return self.policy.act(self.encoder.zs(obs))[0].float()

    def explore(self, action):
        # TD-MPC2 adds the final MPPI std of the first step times N(0, 1) while training; with
        # the `policy` planner the sampled policy action already explores
        std = getattr(self.planner, "last_std", None)
        if std is not None and self._searches:
            action = action + std[0].float() * torch.randn_like(action)
        return super().explore(action)

    @torch.no_grad()
    def value_estimate(self, obs, action):
        obs, action = obs.to(self.device, torch.float32), action.to(self.device, torch.float32)
        q = self.q_values(self.encoder.zs(obs), action)
        return self.target_aggregate(q)[:, 0], q.std(0)[:, 0]

    # ------------------------------------------------------------------------------ training
    def model_loss_terms(self, obs, action, reward, next_obs, terminated):
        """``obs/next_obs [B, H, obs]``, ``action [B, H, A]``, ``reward/terminated [B, H]`` ->
        ``(loss, consistency, reward loss, value loss, termination loss, latents [H+1, B, Z], q mean)``."""
        s, L = self.spec, self.spec.losses
        B, H = action.shape[:2]
        alive = alive_before(terminated)  # [B, H]: steps after a termination do not count
        with torch.no_grad():
            next_z = self.encoder.zs(next_obs.reshape(B * H, -1))  # online encoder, as TD-MPC2
            next_a = self.policy.sample(next_z)[0]
            q_next = self.target_aggregate(self.q_values(next_z, next_a, target=True)).reshape(B, H)
            td_target = reward + s.discount * (1 - terminated) * q_next  # [B, H]
            next_z = next_z.reshape(B, H, -1)
        z = self.encoder.zs(obs[:, 0])
        latents, dones, reward_logits = [z], [], []
        for t in range(H):
            done, z, r = self.encoder.model_all(z, action[:, t])
            latents.append(z)
            dones.append(done)
            reward_logits.append(r)
        rho = self.rho[:H] * alive  # [B, H]
        zhat = torch.stack(latents[1:], 1)  # [B, H, Z]
        consistency = ((zhat.float() - next_z.float()).square().mean(-1) * rho).mean(0).sum() / H
        rew = (self.reward_two_hot.cross_entropy(torch.stack(reward_logits, 1).float(), reward) * rho).mean(0).sum() / H
        z_in = torch.stack(latents[:-1], 1).reshape(B * H, -1)
        logits = self.critic.logits(torch.cat([z_in, action.reshape(B * H, -1).to(z_in.dtype)], -1),
                                    dropout=True)  # [N, BH, bins]
        ce = self.critic.cross_entropy(logits, td_target.reshape(B * H, 1))  # [N, BH]
        value = (ce.reshape(-1, B, H).mean(0) * rho).mean(0).sum() / H
        term = torch.zeros_like(consistency)
        if self.env_terminates:
            bce = F.binary_cross_entropy_with_logits(torch.cat(dones, 1).float(), terminated, reduction="none")
            term = (bce * alive).sum() / alive.sum().clamp(min=1)  # a plain mean, no rho (TD-MPC2)
        loss = L.consistency * consistency + L.reward * rew + L.value * value + L.termination * term
        q_mean = self.critic.two_hot.decode(logits.detach().float()).mean()
        return loss, consistency, rew, value, term, torch.stack(latents, 0), q_mean, alive

    def policy_loss_terms(self, latents: torch.Tensor, alive: torch.Tensor):
        """``latents [H+1, B, Z]`` (detached), ``alive [B, H]`` (steps before any termination) ->
        ``(loss, entropy, q spread of this batch)``; latents after a termination do not count."""
        H1, B = latents.shape[:2]
        z = latents.reshape(H1 * B, -1)
        # TD-MPC2's "scaled entropy" is, up to a factor that cancels, -A x the Gaussian log-prob of
        # the pre-tanh sample (the tanh correction drops out), so that is what is used here
        action, gaussian_log_prob, _ = self.policy.sample(z, squash_correction=False)
        q = self.policy_aggregate(self.q_values(z, action, dropout=True)).reshape(H1, B)
        spread = torch.quantile(q[0].detach(), 0.95) - torch.quantile(q[0].detach(), 0.05)
        scaled = q / self.q_scale.value(spread)
        scaled_log_prob = gaussian_log_prob.float().reshape(H1, B) * self.action_dim
        # [H+1, B]: z_0, and z_{t+1} while no transition before t terminated (a terminal state's own
        # latent counts, as in TD-MPC2's within-episode slices; nothing after it does)
        mask = torch.cat([alive.new_ones(B, 1), alive], 1).T
        per_step = ((self.spec.losses.entropy * scaled_log_prob - scaled) * mask).mean(1)  # [H+1]
        loss = (per_step * self.rho[:H1]).mean()
        return loss, -gaussian_log_prob.detach().mean(), spread

    def update(self, replay) -> dict[str, torch.Tensor]:
        self.begin_update()
        self.training_steps += 1
        self.env_terminates = replay.env_terminates
        if self.training_steps == 1 and self.spec.pretrain:
            # TD-MPC2's burst when seeding ends: seed_steps updates in all. The loop's first update
            # comes with warmup_steps + 1 transitions stored, so this one counts as one of them
            for _ in range(max(replay.size - 2, 0)):
                self._update_once(replay)
        return self._update_once(replay)

    def _update_once(self, replay) -> dict[str, torch.Tensor]:
        s = self.spec
        batch = replay.sample(s.batch_size, horizon=s.horizon).to(self.device)
        obs, next_obs = batch.obs, batch.next_obs
        if getattr(self.encoder, "pixels", False):  # shifts on the encoded frames only (a no-op for TD-MPC2's own ShiftAug)
            obs, next_obs = self.encoder.augment(obs[:, :1]), self.encoder.augment(next_obs)
        loss, (cons, rew, value, term, latents, q_mean, alive), norm = self.optimize(
            self.compiled_model_loss, self.model_optim, obs, batch.action, batch.reward, next_obs,
            batch.terminated, clip=(list(self.encoder.parameters()) + list(self.critic.parameters()), s.optim.grad_clip))
        with frozen(self.critic):
            pi_loss, (entropy, spread), _ = self.optimize(self.compiled_policy_loss, self.policy_optim, latents.detach(), alive,
                                                          clip=(self.policy.parameters(), s.optim.grad_clip))
        self.q_scale.update(spread)
        soft_update_(self.critic_target, self.critic, s.tau)
        metrics = {"model/loss": loss.detach(), "model/consistency": cons.detach(), "model/reward": rew.detach(),
                   "model/grad_norm": norm.detach(), "critic/loss": value.detach(), "critic/q_mean": q_mean,
                   "policy/loss": pi_loss.detach(), "policy/entropy": entropy, "policy/q_scale": self.q_scale.scale.clone()}
        if self.env_terminates:
            metrics["model/termination"] = term.detach()
        return metrics


class _RunningScale(nn.Module):
    """TD-MPC2's running scale of Q: ``S <- lerp(S, max(p95 - p05, 1), tau)`` from ``S = 1``, the
    percentiles over the batch of the first step's Q; the policy divides Q by the updated S."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = tau
        self.register_buffer("scale", torch.ones(()))

    def value(self, spread: torch.Tensor) -> torch.Tensor:
        """The scale after this batch's update (pure; :meth:`update` stores it)."""
        return torch.lerp(self.scale, spread.float().clamp(min=1.0), self.tau)

    @torch.no_grad()
    def update(self, spread: torch.Tensor) -> None:
        self.scale.copy_(self.value(spread))
