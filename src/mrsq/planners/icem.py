"""iCEM: the improved cross-entropy method of Pinneri et al. (2020), "Sample-efficient
Cross-Entropy Method for Real-time Planning" (CoRL; arXiv 2008.06389).

CEM's loop (:mod:`mrsq.planners.cem`) with the paper's changes, each a spec field:

* **Coloured noise** (``beta``): samples are ``mean + std * e`` with ``e`` Gaussian noise whose
  power spectrum along the horizon falls as ``1 / f^beta`` (0: white, CEM's; larger: smoother
  sequences that explore further in state space). Unit variance at every step, so ``std`` keeps
  its meaning.
* **Shrinking population** (``population_decay``): iteration ``i`` samples
  ``max(num_samples / decay^i, 2 * num_elites)`` sequences (policy rollouts included).
* **Elites kept** (``keep_fraction``): the best ``ceil(keep_fraction * num_elites)`` elites of an
  iteration join the next iteration's candidates, and those of the last iteration, shifted by one
  step like the mean, join the next action's first iteration (at an episode start, as many fresh
  samples take their place, so every search has the same shapes).
* **The mean as a candidate** (``add_mean``): the last iteration also scores the distribution's
  mean sequence itself.
* **Momentum** (``momentum``): mean and std are ``alpha * old + (1 - alpha) * elite fit``.
* **Executes the best** sequence scored in any iteration, not the mean.

Candidates are scored like every sampling planner's (:func:`~mrsq.planners.sampling.trajectory_value`),
and ``center`` / ``knots`` / policy rollouts work as in MPPI. The paper's defaults for the
iCEM-specific fields; ``num_samples`` / ``iterations`` / ``horizon`` stay mrsq's (TD-MPC2's)
so that iCEM and MPPI compare at the same starting budget (the paper plans with 3-4 iterations
of a few hundred samples on the true simulator).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from mrsq.planners.base import PlanningModel
from mrsq.planners.sampling import IterativeSamplingPlanner, IterativeSpec, reference_action, weighted_stats
from mrsq.registry import PLANNERS


class ICEMSpec(IterativeSpec):
    type: Literal["icem"] = "icem"
    beta: float = Field(2.0, ge=0, description="coloured-noise exponent: power spectrum ~ 1/f^beta along the "
                                               "horizon (0: white noise, plain CEM; Pinneri et al. 2020 use 2-4 "
                                               "on most of their tasks)")
    keep_fraction: float = Field(0.3, ge=0, le=1, description="fraction of the elites carried into the next "
                                                              "iteration and, shifted, into the next action's "
                                                              "search (the paper's 0.3)")
    population_decay: float = Field(1.25, ge=1, description="population of iteration i: num_samples / decay^i, "
                                                            "never below 2 x num_elites (the paper's 1.25)")
    momentum: float = Field(0.1, ge=0, lt=1, description="mean and std = momentum x previous + (1 - momentum) x "
                                                         "the elites' fit (the paper's 0.1)")
    add_mean: bool = Field(True, description="the last iteration also scores the mean sequence itself (the paper)")
    num_elites: int = Field(64, ge=1, description="best sequences the refit uses (uniform weights, as CEM)")

    @model_validator(mode="after")
    def _populations_fit(self):
        if self.num_samples < 2 * self.num_elites:
            raise ValueError(f"num_samples ({self.num_samples}) must be at least 2 x num_elites "
                             f"({2 * self.num_elites}): iCEM's population never shrinks below twice the elites")
        if self.num_policy_trajectories >= 2 * self.num_elites:
            raise ValueError(f"num_policy_trajectories ({self.num_policy_trajectories}) must be below 2 x num_elites "
                             f"({2 * self.num_elites}), the smallest population, so that every iteration samples")
        return self


def colored_noise_factor(length: int, beta: float) -> torch.Tensor:
    """``F [L, L]`` with ``F @ e`` (``e`` white, ``[..., L, A]``) Gaussian noise of unit variance
    per step whose spectrum along L falls as ``1 / f^beta``.

    The noise is that of the usual spectral construction (Timmer and Koenig 1995, as in the
    ``colorednoise`` package iCEM's authors use): Fourier coefficients of std ``f^(-beta/2)``
    (the zero frequency at ``f = 1/L``), transformed back. That process is Gaussian with a
    circulant covariance, computed here exactly and factored once, so sampling is one small
    matmul per draw, on any device, inside a compiled or CUDA-graph search (``colorednoise``
    itself is numpy on the host, hence this rewrite)."""
    if length == 1:
        return torch.ones(1, 1)
    k = torch.arange(length // 2 + 1, dtype=torch.float64)
    f = (k / length).clamp(min=1.0 / length)
    power = f ** (-beta)  # variance of each Fourier coefficient, s_k^2
    lag = torch.arange(length, dtype=torch.float64)
    cov = 2 * power[0] * torch.ones(length, dtype=torch.float64)  # the (real) zero-frequency term
    last = (length - 1) // 2  # complex coefficients; an even length adds the real Nyquist term
    for j in range(1, last + 1):
        cov += 4 * power[j] * torch.cos(2 * math.pi * j * lag / length)
    if length % 2 == 0:
        cov += 2 * power[-1] * torch.cos(math.pi * lag)
    cov = cov / cov[0]
    sigma = cov[(lag[:, None] - lag[None]).abs().long()]  # circulant: c(|t - u|) (c is symmetric mod L)
    values, vectors = torch.linalg.eigh(sigma)
    return (vectors * values.clamp(min=0).sqrt()).float()


@PLANNERS.register("icem", spec=ICEMSpec,
                   help="iCEM (Pinneri et al. 2020): coloured noise, kept and shifted elites, shrinking population")
class ICEMPlanner(IterativeSamplingPlanner):
    """CEM with iCEM's sampling; state: the refit ``mean [L, A]``, the kept elites ``carried
    [C, L, A]`` of the last search and ``has_carried []`` (bool) whether they are valid (all
    per-episode state in buffers, so evaluations save and restore it; not in checkpoints)."""

    spec: ICEMSpec

    def __init__(self, spec: ICEMSpec, action_dim: int) -> None:
        super().__init__(spec, action_dim)
        self.num_keep = math.ceil(spec.keep_fraction * spec.num_elites) if spec.keep_fraction > 0 else 0
        self.momentum, self.add_mean = spec.momentum, spec.add_mean
        self.populations = [max(round(spec.num_samples / spec.population_decay ** i), 2 * spec.num_elites)
                            for i in range(self.iterations)]
        self.register_buffer("color", colored_noise_factor(self.num_params, spec.beta), persistent=False)
        self.register_buffer("carried", torch.zeros(self.num_keep, self.num_params, action_dim), persistent=False)
        self.register_buffer("has_carried", torch.zeros((), dtype=torch.bool), persistent=False)

    def reset(self) -> None:
        super().reset()
        self.has_carried.fill_(False)

    def evaluations_per_action(self) -> int:
        """Sequences scored per action: the populations (policy rollouts once), the kept elites
        of every iteration (carried ones, or as many fresh samples, in the first) and the mean."""
        p = self.num_policy
        return sum(n - p for n in self.populations) + self.num_keep * self.iterations + int(self.add_mean) + p

    def noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """Coloured along the horizon: ``color @ white`` -> ``[n, L, A]``."""
        return self.color @ torch.randn(n, *like.shape, device=like.device, dtype=like.dtype)

    def choose(self, elite_actions, elite_values, weights, mean, explore):
        return elite_actions[0], elite_values[0]

    def elite_weights(self, elite_values: torch.Tensor) -> torch.Tensor:
        return torch.full_like(elite_values, 1.0 / elite_values.shape[0])

    @torch.no_grad()
    def plan(self, model: PlanningModel, obs: torch.Tensor, first: bool = False,
             explore: bool = True) -> torch.Tensor:
        if first:
            self.has_carried.fill_(False)
        return super().plan(model, obs, first, explore)

    def search_inputs(self) -> tuple:
        # tensors, not Python values: a compiled search sees the same shapes at every call
        return (self.carried, self.has_carried)

    def search(self, model: PlanningModel, obs: torch.Tensor, mean: torch.Tensor, carried: torch.Tensor,
               has_carried: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """As :meth:`IterativeSamplingPlanner.search`, plus the kept elites to carry ``[C, L, A]``."""
        p, k, c = self.num_policy, self.num_elites, self.num_keep
        z0 = model.encode(obs)
        std = torch.full_like(mean, self.max_std)
        rescore = p > 0 and self.rescores(model)
        policy = reference = None
        if p > 0:
            *policy, reference = self.policy_candidates(model, z0)
        # the last action's elites, or (an episode start) as many fresh samples, chosen on the device
        kept = torch.where(has_carried, carried, self.sample(mean, std, c)) if c else carried
        best_value = best_sequence = None
        for i, population in enumerate(self.populations):
            params = self.sample(mean, std, population - p)
            extra = [kept] if c else []
            if self.add_mean and i == len(self.populations) - 1:
                extra.append((mean if self.policy_centred else mean.clamp(-1, 1))[None])
            params = torch.cat([params, *extra]) if extra else params
            actions, values, params = self.score_candidates(model, z0, params, policy, rescore)
            elite_values, idx = values[:, 0].topk(k)  # sorted: the best first
            elite_params = params.index_select(0, idx)
            elite_actions = actions.index_select(0, idx)
            fit_mean, fit_std = weighted_stats(elite_params, self.elite_weights(elite_values))
            mean = self.momentum * mean + (1 - self.momentum) * fit_mean
            std = (self.momentum * std + (1 - self.momentum) * fit_std).clamp(self.min_std, self.max_std)
            kept = elite_params[:c]
            if best_value is None:
                best_value, best_sequence = elite_values[0], elite_actions[0]
            else:  # the best sequence of any iteration, without a host sync
                better = elite_values[0] > best_value
                best_value = torch.where(better, elite_values[0], best_value)
                best_sequence = torch.where(better, elite_actions[0], best_sequence)
        if reference is None:
            reference = reference_action(model, z0)
        return best_sequence[0], mean, std, best_sequence, (idx < p).sum(), reference, best_value, self.shift(kept)

    def end_search(self, outputs: tuple) -> None:
        (carried,) = outputs
        self.carried.copy_(carried)
        self.has_carried.fill_(self.num_keep > 0)
