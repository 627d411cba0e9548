"""The paper's evidence at every evaluation: value error (Figure 3) and policy-vs-search
divergence (Figure 4).

**Value error.** Over the evaluation episodes, the agent's estimate ``Q(s_t, a_t)`` of each
executed pair (``agent.value_estimate``: the TD target's aggregator over the ensemble, in return
units) is compared with the discounted return actually obtained from there,
``G_t = sum_k gamma^k r_{t+k}`` to the end of the episode.

*The truncated tail, handled by cutting it:* when an episode ends by termination, ``G_t`` is
exact for every state. When it is cut by a time limit, the return after the cut is unknown, so
only states whose unseen tail carries discount weight at most ``TAIL_WEIGHT`` are counted:
``t <= T - k`` with ``gamma^k <= TAIL_WEIGHT`` (``k = 459`` for gamma 0.99 and 1%). We do not
bootstrap the tail with the agent's own value: that would mix the quantity under test into its
reference. The cut leaves a small downward bias in ``G`` (at most ``TAIL_WEIGHT`` times the
tail's value), i.e. up to about 1% of apparent overestimation on a task with steady rewards.

Logged (``eval.csv``): ``value_error_pct`` = mean of ``100 (Q - G) / max(|G|, EPS)`` (signed:
positive is overestimation), ``value_error_abs`` = mean ``|Q - G|`` and ``value_bias`` = mean
``Q - G`` (return units), ``overestimation_frac`` = fraction of counted states with ``Q > G``,
``q_member_std`` = mean over states of the std of the members' estimates (return units), and
``value_states``, the number of states counted. ``EPS`` is one reward unit, so states whose
return is near zero do not dominate the percentage.

**The planner's value.** ``planner_value_bias`` and ``planner_overestimation_frac``: the same
mean ``Q - G`` and fraction ``Q > G`` for the value the planner's terminal step uses
(``agent.planner_value_estimate``: the planner's aggregator over the ensemble, or a distilled
head), at the same executed pairs. These are the planner's own actions when it searched, so this
is the value's bias where search takes it; it differs from ``value_bias`` when the planner
aggregates differently from the TD target, or scores with a distilled head. NaN for agents
without a planner value.

**Divergence.** ``search_divergence`` (``eval.csv``) and ``search/divergence`` (``train.csv``):
mean over the actions the agent chose of ``mean_a (a_search - pi(s))^2``, the planner's action
against the policy's at the same state, before exploration noise (the agent accumulates it in
``act``). Exactly 0 for the ``policy`` planner.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TAIL_WEIGHT = 0.01
EPS = 1.0
VALUE_COLUMNS = ("value_error_pct", "value_error_abs", "value_bias", "overestimation_frac", "q_member_std",
                 "value_states")
PLANNER_VALUE_COLUMNS = ("planner_value_bias", "planner_overestimation_frac")


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = sum_{k>=0} gamma^k r_{t+k}`` to the end of ``rewards [T]`` -> ``[T]`` (float64)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out


def counted_states(length: int, terminated: bool, gamma: float, tail_weight: float = TAIL_WEIGHT) -> int:
    """How many leading states of an episode of ``length`` steps have a trustworthy ``G_t``:
    all of them if it terminated; else those at least ``k`` steps before the cut, with ``k`` the
    smallest integer such that ``gamma^k <= tail_weight`` (every state if gamma is 0)."""
    if terminated or gamma <= 0:
        return length
    if gamma >= 1:
        return 0  # an undiscounted tail never fades
    k = math.ceil(math.log(tail_weight) / math.log(gamma))
    return max(0, length - k + 1)


def value_error_stats(q: np.ndarray, g: np.ndarray, member_std: np.ndarray | None = None,
                      eps: float = EPS) -> dict[str, float]:
    """The value-error columns from estimates ``q [M]``, returns ``g [M]`` and the ensemble's
    ``member_std [M]`` (NaN columns when ``M == 0``)."""
    q, g = np.asarray(q, dtype=np.float64), np.asarray(g, dtype=np.float64)
    if q.size == 0:
        return {k: float("nan") for k in VALUE_COLUMNS} | {"value_states": 0}
    err = q - g
    return {
        "value_error_pct": float(np.mean(100.0 * err / np.maximum(np.abs(g), eps))),
        "value_error_abs": float(np.mean(np.abs(err))),
        "value_bias": float(np.mean(err)),
        "overestimation_frac": float(np.mean(q > g)),
        "q_member_std": float(np.mean(member_std)) if member_std is not None else float("nan"),
        "value_states": int(q.size),
    }


class ValueErrorRecorder:
    """Collects (obs, action, reward) of evaluation episodes; after each episode, one batched
    ``agent.value_estimate`` over its counted states (no per-step forward)."""

    def __init__(self, agent, gamma: float) -> None:
        self.agent, self.gamma = agent, gamma
        self.enabled = hasattr(agent, "value_estimate")
        self.planner_values = hasattr(agent, "planner_value_estimate")
        self.q, self.g, self.std, self.pq = [], [], [], []
        self._obs, self._actions, self._rewards = [], [], []

    def step(self, obs, action, reward) -> None:
        if self.enabled:
            self._obs.append(np.asarray(obs))  # its own dtype (pixels stay uint8: a quarter of the memory)
            self._actions.append(np.asarray(action, dtype=np.float32))
            self._rewards.append(float(reward))

    def end_episode(self, terminated: bool) -> None:
        if not self.enabled:
            return
        n = counted_states(len(self._rewards), terminated, self.gamma)
        if n > 0:
            g = discounted_returns(np.asarray(self._rewards), self.gamma)[:n]
            obs, actions = torch.as_tensor(np.stack(self._obs[:n])), torch.as_tensor(np.stack(self._actions[:n]))
            # The estimates may draw random numbers (a min_of_k or subset aggregator, a critic's
            # dropout): they come from a fork of the generators, so evaluating never moves
            # training's random stream, and a resumed run draws what the uninterrupted one drew.
            device = getattr(self.agent, "device", torch.device("cpu"))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                q, std = self.agent.value_estimate(obs, actions)
                pq = self.agent.planner_value_estimate(obs, actions) if self.planner_values else None
            if pq is not None:
                self.pq.append(pq.cpu().double().numpy())
            self.q.append(q.cpu().double().numpy())
            self.std.append(std.cpu().double().numpy())
            self.g.append(g)
        self._obs, self._actions, self._rewards = [], [], []

    def stats(self) -> dict[str, float]:
        if not self.enabled:
            return {}
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)
        stats = value_error_stats(cat(self.q), cat(self.g), cat(self.std))
        pq, g = cat(self.pq), cat(self.g)
        if pq.size:
            stats["planner_value_bias"] = float(np.mean(pq - g))
            stats["planner_overestimation_frac"] = float(np.mean(pq > g))
        return stats
