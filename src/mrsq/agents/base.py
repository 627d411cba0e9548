"""The agent interface that the training loop, the CLI, the benches and the diagnostics use.

Every agent (MR.Q/MRS.Q, TD3, SAC/REDQ, TD-MPC2, or a user's own) is an :class:`Agent`: an
``nn.Module`` built as ``Agent(spec, obs_dim, action_dim, runtime=...)`` from an
:class:`AgentSpec` subclass. What the rest of mrsq relies on, and nothing more:

* ``act(obs, explore, first) -> action`` (numpy, in [-1, 1]);
* ``update(replay) -> {name: scalar tensor}`` once per environment step after the warm-up;
  the names an agent may return are its ``METRICS`` (the columns of train.csv);
* ``replay_horizon``: the transition window length the replay must store for this agent;
* ``acting_view()``: the :class:`~mrsq.planners.base.PlanningModel` the planner searches, or
  ``None`` for a model-free agent (it then acts with its policy; its spec accepts only the
  ``policy`` planner);
* ``planner``: the planner module (reset at episode starts; its buffers are the warm start);
* ``training_state()`` / ``load_training_state(state)``: everything needed to resume;
* ``value_estimate(obs, action)`` and ``pop_divergence(explore)``: the diagnostics
  (:mod:`mrsq.training.diagnostics`);
* ``reward_scale`` (logged; 1 for agents that do not scale rewards) and ``compiled_functions()``.

This module also holds the machinery agents share: acting through the planner with the
divergence accounting, the optimisation step (autocast, compile fall-back, fused optimisers, grad
clipping), freezing modules for a backward pass, and checkpointing by attribute name.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from mrsq import runtime as rt
from mrsq.agents.spec import AggregatorChoice, ReplaySpec, TrainSpec
from mrsq.compile import Compiled, mark_step
from mrsq.registry import PLANNERS
from mrsq.specs import Spec, component


class AgentSpec(Spec):
    """Fields every agent spec has. Subclasses add their networks and hyperparameters.

    ``MODEL_FREE`` (class constant): the agent has no latent model, so a search planner has
    nothing to search; its spec then accepts only ``planner: policy``.

    ``ENV_DEFAULTS`` (class constant): fields whose default depends on the environment, by dotted
    path, each with a function ``(spec, env) -> value`` (``env`` an :class:`mrsq.envs.Env`, or
    None where no env is known); such a field takes ``"auto"``, which :meth:`for_env` replaces.
    The training loop resolves them before it writes ``spec.yaml`` (a run folder's spec holds the
    values used), and ``mrsq show`` against ``train.env``. Machine-dependent ``auto`` (precision,
    compile) is different: it stays in ``spec.yaml`` and is resolved on each machine."""

    MODEL_FREE: ClassVar[bool] = False
    ENV_DEFAULTS: ClassVar[dict[str, Any]] = {}

    description: str = ""
    planner: component(PLANNERS) = Field(default_factory=lambda: {"type": "policy"}, validate_default=True)
    aggregators: AggregatorChoice = Field(default_factory=AggregatorChoice)
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    discount: float = Field(0.99, gt=0, le=1)
    batch_size: int = Field(256, ge=1)
    warmup_steps: int = Field(10_000, ge=0, description="random actions, no training, until the buffer holds this many")
    exploration_noise: float = Field(0.2, ge=0, description="Gaussian std on the action while training (0: none)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 where bf16 matmuls are fast (AMX CPUs, bf16 GPUs), else fp32 "
                            "(mrsq.runtime); bf16: autocast updates")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the update losses and the planner's scoring "
                            "(auto: when a compiler is present; failures fall back to eager)")
    train: TrainSpec = Field(default_factory=TrainSpec)

    @field_validator("planner")
    @classmethod
    def _search_needs_a_model(cls, planner):
        if cls.MODEL_FREE and planner.type != "policy":
            agent = cls.model_fields["type"].default
            raise ValueError(f"{agent!r} is model-free: there is no latent model for planner {planner.type!r} "
                             f"to search, so it acts with planner 'policy' only (search needs a latent "
                             f"agent such as mrq or tdmpc2)")
        return planner

    @model_validator(mode="after")
    def _aggregators_fit_the_ensemble(self):
        critic = getattr(self, "critic", None)
        members = getattr(critic, "num_members", None)
        atoms = getattr(critic, "num_quantiles", 1)  # values per member a pooling aggregator sees
        for use in type(self.aggregators).model_fields:
            agg = getattr(self.aggregators, use)
            k = getattr(agg, "k", None)
            if members is not None and k is not None and k > members:
                raise ValueError(f"aggregators.{use}.k ({k}) exceeds critic.num_members ({members})")
            if getattr(type(agg), "DRAWS_SUBSET", False) and critic is not None:
                from mrsq.critics.aggregators import evaluates_subsets
                from mrsq.registry import CRITICS

                if not evaluates_subsets(CRITICS.get(critic.type)):
                    raise ValueError(f"aggregators.{use}: {agg.type!r} evaluates only drawn members, but critic "
                                     f"{critic.type!r}'s forward takes no `members` (evaluate all: min_of_k / "
                                     f"mean_of_k)")
            if getattr(type(agg), "POOLS_ATOMS", False) and critic is not None and agg.drop >= atoms:
                what = (f"critic.num_quantiles ({atoms})" if hasattr(critic, "num_quantiles")
                        else f"the 1 value per member of critic {critic.type!r} (a quantile_ensemble has more)")
                raise ValueError(f"aggregators.{use}.drop ({agg.drop}) drops every atom: it must be below {what}")
        return self

    def cautions(self) -> list[str]:
        """Legal compositions that are probably not what was meant, one line each (the Trainer
        prints them as warnings before any work; nothing here is an error)."""
        lines = []
        critic, target = getattr(self, "critic", None), getattr(self.aggregators, "target", None)
        if getattr(critic, "type", None) == "quantile_ensemble" and target is not None and \
                not getattr(type(target), "POOLS_ATOMS", False):
            lines.append(f"critic.type quantile_ensemble with aggregators.target {target.type!r}: each member's "
                         f"{critic.num_quantiles} quantiles regress on one target value ({target.type} of the "
                         f"members' mean quantiles), which is not TQC; TQC pools and truncates the target "
                         f"atoms: aggregators.target {{type: truncated_mean, drop: d}} (mrsq_tqc: d = 2)")
        return lines

    @property
    def pixel_encoder(self):
        """The latent model's conv-stack spec (``encoder.pixels``), or None: state vectors."""
        return getattr(getattr(self, "encoder", None), "pixels", None)

    def unresolved(self) -> list[str]:
        """The :attr:`ENV_DEFAULTS` paths still set to ``"auto"``."""
        return [path for path in self.ENV_DEFAULTS if _get_path(self, path) == "auto"]

    def for_env(self, env) -> "AgentSpec":
        """This spec with every env-dependent ``"auto"`` replaced by its value for ``env`` (None:
        no env known, each default's documented fallback); values set explicitly are kept."""
        paths = self.unresolved()
        if not paths:
            return self
        data = self.model_dump()
        for path in paths:
            *parents, leaf = path.split(".")
            node = data
            for key in parents:
                node = node[key]
            node[leaf] = self.ENV_DEFAULTS[path](self, env)
        return type(self).model_validate(data)

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_bool(cls, value):
        # YAML 1.1 reads a bare `on` / `off` as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def _get_path(spec, path: str):
    for key in path.split("."):
        spec = getattr(spec, key)
    return spec


def env_suite(env) -> str | None:
    """The prefix of ``env``'s id (``"gym"``, ``"dmc"``, ...), None without an env."""
    return None if env is None else str(env.env_id).partition(":")[0]


def require(registry, spec, capability: str, why: str):
    """A spec validator's check that the component ``spec`` names has the class attribute
    ``capability`` set (``stochastic`` policies, ``distributional`` critics); ``why`` ends the
    error message."""
    if not getattr(registry.get(spec.type), capability, False):
        raise ValueError(f"{spec.type!r} {why}")
    return spec


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Temporarily stop weight-gradient computation for ``modules`` (inputs still get grads)."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def alive_before(terminated: torch.Tensor) -> torch.Tensor:
    """``[B, H]`` terminal flags -> product of (1 - terminal) over the steps strictly before t."""
    alive = torch.cumprod(1 - terminated, dim=1)
    return torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], dim=1)


def n_step_return(reward: torch.Tensor, terminated: torch.Tensor, gammas: torch.Tensor):
    """``reward, terminated [B, n]``, ``gammas [n]`` -> ``(R [B, 1], not_done [B, 1])``.

    ``R = sum_t gamma^t r_t alive_t`` where alive_t is the product of the not-done flags of the
    steps BEFORE t, so the terminal reward counts and nothing after it does (mrsq's deliberate fix
    of MR.Q's masking, see docs/design.md); ``not_done`` is 0 if any of the n steps terminated."""
    alive = alive_before(terminated)
    ret = (reward * alive * gammas).sum(1, keepdim=True)
    return ret, alive[:, -1:] * (1 - terminated[:, -1:])


class Agent(nn.Module):
    """Base class of mrsq's agents (see the module docstring for the interface).

    Subclasses set ``MODULES`` and ``OPTIMIZERS`` (attribute names saved in checkpoints),
    ``METRICS`` (the names ``update`` may return), build their networks in ``__init__`` after
    calling ``super().__init__`` (which builds the planner from ``spec.planner``), and implement
    :meth:`update`, :meth:`value_estimate`, :meth:`policy_action` and ``replay_horizon``. A latent
    agent also overrides :meth:`acting_view`.
    """

    MODULES: ClassVar[tuple[str, ...]] = ()
    OPTIMIZERS: ClassVar[tuple[str, ...]] = ()
    METRICS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: AgentSpec, obs_dim: int, action_dim: int, runtime: rt.Runtime | None = None) -> None:
        super().__init__()
        # built without an env (a test, a user's script): env-dependent defaults take their fallbacks
        spec = spec.for_env(None)
        self.spec, self.obs_dim, self.action_dim = spec, obs_dim, action_dim
        self.runtime = runtime or rt.resolve(spec.precision, spec.compile, "cpu")
        self.bf16 = self.runtime.bf16
        self.exploration_noise = spec.exploration_noise
        self.planner = PLANNERS.get(spec.planner.type)(spec.planner, action_dim)
        self.training_steps = 0
        self.env_terminates = False
        # policy-vs-search divergence sums on the device, [evaluation, training] (index: explore),
        # and their counts on the host
        self.register_buffer("divergence_sums", torch.zeros(2), persistent=False)
        self._divergence_counts = [0, 0]

    # ------------------------------------------------------------------------ what the loop reads
    @property
    def device(self) -> torch.device:
        return self.divergence_sums.device

    @property
    def replay_horizon(self) -> int:
        """Transitions per replay window this agent samples (the longest of its horizons)."""
        raise NotImplementedError

    @property
    def reward_scale(self) -> float:
        """The scale the critics' targets are divided by (logged; 1 unless the agent scales)."""
        return 1.0

    def acting_view(self):
        """The :class:`~mrsq.planners.base.PlanningModel` the planner searches, or ``None``
        (model-free: :meth:`act` takes :meth:`policy_action` directly)."""
        return None

    def prepare(self, replay) -> None:
        """Called by benches before timing updates on a pre-filled replay (the first ``update``
        of a real run does the same work itself)."""
        self.env_terminates = replay.env_terminates

    def compiled_functions(self) -> list[Compiled]:
        """This agent's :class:`Compiled` wrappers (losses, planner), for compile-time reports."""
        found = [v for v in vars(self).values() if isinstance(v, Compiled)]
        return found + [v for v in vars(self.planner).values() if isinstance(v, Compiled)]

    # ------------------------------------------------------------------------------ acting
    def policy_action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """``obs [1, obs_dim] -> [A]``: the policy's action without search or added noise (a
        stochastic policy samples when ``explore``, else takes its mean)."""
        raise NotImplementedError

    def reference_action(self, view, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic policy action that search is compared with (divergence) ``[A]``."""
        return view.policy(view.encode(obs))[0].float()

    def explore(self, action: torch.Tensor) -> torch.Tensor:
        """Exploration added to a training action (default: Gaussian, ``exploration_noise``)."""
        if self.exploration_noise > 0:
            action = action + torch.randn_like(action) * self.exploration_noise
        return action

    def act(self, obs: np.ndarray, explore: bool = True, first: bool = False) -> np.ndarray:
        """One observation -> one action in [-1, 1] (exploration only when ``explore``). The one
        host synchronisation of acting is here: the environment needs the action."""
        return self.act_on_device(obs, explore, first).cpu().numpy()

    @torch.no_grad()
    def act_on_device(self, obs, explore: bool = True, first: bool = False) -> torch.Tensor:
        """:meth:`act` without the copy back: ``[A]`` on the agent's device, no host sync."""
        obs_t = rt.to_device(obs, self.device).reshape(1, -1)
        view = self.acting_view()
        i = int(explore)
        if view is None:  # model-free: no search, so the divergence is exactly 0 (only counted)
            action = self.policy_action(obs_t, explore).float()
        else:
            self.planner.last_reference = None
            action = self.planner.plan(view, obs_t, first=first, explore=explore).float()
            # Policy-vs-search divergence (the paper's Figure 4): the planner's action against
            # the agent's deterministic pi(s) from the same acting networks, before exploration
            # noise (for MR.Q's `policy` planner the same action, so exactly 0; a stochastic policy
            # that samples while training differs from its mean). The planner hands back pi(z0)
            # of its own encoding (no second forward); a user's planner that does not gets it here.
            # Accumulated on the device.
            reference = self.planner.last_reference
            if reference is None:
                reference = self.reference_action(view, obs_t)
            self.divergence_sums[i] += (action - reference.float()).square().mean()
        self._divergence_counts[i] += 1
        if explore:
            action = self.explore(action)
        return action.clamp(-1, 1)

    def pop_divergence(self, explore: bool) -> float:
        """Mean over the actions taken since the last call (training acts if ``explore``, else
        evaluation acts) of ``mean_a (a_search - pi(s))^2``; NaN if there were none. Host sync."""
        i, count = int(explore), self._divergence_counts[int(explore)]
        value = float(self.divergence_sums[i].item()) / count if count else float("nan")
        self.divergence_sums[i] = 0.0
        self._divergence_counts[i] = 0
        return value

    # ------------------------------------------------------------------------------ training
    def update(self, replay) -> dict[str, torch.Tensor]:
        """One environment step's worth of training. Returns detached scalar tensors."""
        raise NotImplementedError

    def begin_update(self) -> None:
        """Called first in every ``update``: marks a new CUDA-graph iteration (a no-op without
        graphs) so the compiled losses' graphs may reuse their memory."""
        mark_step(self.runtime)

    @torch.no_grad()
    def value_estimate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(obs [T, obs], action [T, A]) -> (Q [T], per-member std [T])`` in return units: the
        TD target's aggregator over the online critic ensemble (the value-error diagnostic)."""
        raise NotImplementedError

    def autocast(self):
        """bf16 autocast when the runtime asks for it (a no-op context otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def optimize(self, loss_fn: Compiled, optim: torch.optim.Optimizer, *args, clip=None):
        """forward (autocast when bf16) -> backward -> optional grad clip -> optimiser step.

        ``clip = (parameters, max_norm)``. A compiled loss whose backward fails to compile falls
        back to eager and is redone. Returns ``(loss, other outputs, grad norm or None)``."""
        while True:
            with self.autocast():
                loss, *out = loss_fn(*args)
            optim.zero_grad(set_to_none=True)
            try:
                loss.backward()
                break
            except Exception as exc:  # noqa: BLE001 - re-raised unless it is a compiler failure
                if not isinstance(loss_fn, Compiled) or not loss_fn.fall_back(exc):
                    raise
        norm = nn.utils.clip_grad_norm_(clip[0], clip[1], foreach=True) if clip else None
        optim.step()
        self.after_optimizer_step()
        return loss, out, norm

    def after_optimizer_step(self) -> None:
        """Hook run after every optimiser step (MR.Q marks its bf16 acting copies stale)."""

    def adam(self, params, lr: float, weight_decay: float = 0.0, fused: bool = True, eps: float = 1e-8):
        """AdamW (Adam when ``weight_decay`` is 0) with fused kernels unless told otherwise."""
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, eps=eps)

    # ------------------------------------------------------------------------------ state
    def scalars(self) -> dict[str, Any]:
        """Plain values saved with the state dicts (subclasses extend)."""
        return {"training_steps": int(self.training_steps), "env_terminates": bool(self.env_terminates)}

    def load_scalars(self, scalars: dict[str, Any]) -> None:
        self.training_steps, self.env_terminates = scalars["training_steps"], scalars["env_terminates"]

    def training_state(self) -> dict:
        """Everything needed to resume: module and optimiser state dicts, scalars."""
        return {"modules": {k: getattr(self, k).state_dict() for k in self.MODULES},
                "optimizers": {k: getattr(self, k).state_dict() for k in self.OPTIMIZERS},
                "scalars": self.scalars()}

    def load_training_state(self, state: dict) -> None:
        for k in self.MODULES:
            getattr(self, k).load_state_dict(state["modules"][k])
        for k in self.OPTIMIZERS:
            getattr(self, k).load_state_dict(state["optimizers"][k])
        self.load_scalars(state["scalars"])
        self.after_optimizer_step()
