"""What a planner needs from a model, and the planner interface.

A planner never sees an agent, a replay buffer or a TensorDict: only a :class:`PlanningModel`
(plain tensors in, plain tensors out). That keeps every planner testable with a hand-written
model whose optimum is known, and reusable by any agent that has a latent model.
"""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class PlanningModel(Protocol):
    """The latent model as a planner sees it. Shapes: ``z [B, Z]``, ``a [B, A]``."""

    action_dim: int
    discount: float
    episodic: bool  # whether to weight by predicted survival (1 - termination)
    # optional: ``stochastic_policy = True`` when ``policy`` samples (the planner then rolls out
    # each policy trajectory separately instead of one standing for all)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, obs] -> z [B, Z]``."""

    def step(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, a) -> (reward [B, 1], termination prob [B, 1], next z [B, Z])``."""

    def policy(self, z: torch.Tensor) -> torch.Tensor:
        """``z -> a [B, A]`` (deterministic)."""

    # optional: ``stochastic_value = True`` when ``value`` (or the policy action it is taken at)
    # is random, so scoring one sequence twice gives two values (TD-MPC2: a sampled terminal
    # action and the mean of 2 critics drawn per call); iterative planners then re-score the
    # policy's trajectories at every iteration (``rescore_policy_trajectories: auto``)
    # optional: ``reference(z) -> a [B, A]``, the deterministic action a stochastic policy is
    # compared with (its mean); planners return it as ``last_reference`` (default: ``policy``)

    def value(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``(z, a) -> aggregated value [B, 1]`` (the planner's aggregator over the ensemble)."""


class Planner(nn.Module):
    """Chooses an action for one observation. Subclasses keep any warm-start state in buffers.

    ``plan(model, obs [obs_dim] or [1, obs_dim], first: bool, explore: bool) -> action [A]``;
    ``first`` is True on the first step of an episode (warm starts reset there). A planner may
    set ``last_reference`` (``[A]``, the deterministic ``pi(z0)`` of the encoding it already
    made) in ``plan``; the agent's policy-vs-search divergence then needs no second forward.
    """

    last_reference: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget warm-start state (called at every episode start)."""

    def set_runtime(self, runtime) -> None:
        """Compile what is worth compiling for ``runtime`` (:class:`mrsq.runtime.Runtime`).
        Called once by the agent after construction; the default plans eager."""

    def plan(self, model: PlanningModel, obs: torch.Tensor, first: bool = False,
             explore: bool = True) -> torch.Tensor:
        raise NotImplementedError


@contextlib.contextmanager
def state_kept(planner: nn.Module):
    """Give back every buffer of ``planner`` (its warm start, iCEM's kept elites) as it was on
    entry: an evaluation or a recorded episode in the middle of training must not hand its last
    plan to the next training action. Any ``nn.Module`` planner, not only :class:`Planner`s."""
    saved = [b.clone() for b in planner.buffers()]
    try:
        yield
    finally:
        for buffer, value in zip(planner.buffers(), saved):
            buffer.copy_(value)
