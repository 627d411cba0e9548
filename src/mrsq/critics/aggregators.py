"""Aggregators: pure functions over the ensemble dimension, ``[N, B, 1] -> [B, 1]``.

The agent spec names one for the TD target, one for the policy loss and one for the planner's
terminal value (MRS.Q: min, mean, min). Each is registered with a small spec holding its
parameters; :func:`build_aggregator` turns a spec into a plain callable for the hot path.
"""

from __future__ import annotations

import functools
from typing import Callable, Literal

import torch
from pydantic import Field

from mrsq.registry import AGGREGATORS
from mrsq.specs import Spec

Aggregator = Callable[[torch.Tensor], torch.Tensor]


class MinSpec(Spec):
    type: Literal["min"] = "min"


class MeanSpec(Spec):
    type: Literal["mean"] = "mean"


class MaxSpec(Spec):
    type: Literal["max"] = "max"


class MinOfKSpec(Spec):
    type: Literal["min_of_k"] = "min_of_k"
    k: int = Field(2, ge=1, description="members drawn without replacement per call")


class MeanOfKSpec(Spec):
    type: Literal["mean_of_k"] = "mean_of_k"
    k: int = Field(2, ge=1, description="members drawn without replacement per call")


class FirstSpec(Spec):
    type: Literal["first"] = "first"


class MeanMinusStdSpec(Spec):
    type: Literal["mean_minus_std"] = "mean_minus_std"
    beta: float = Field(1.0, description="pessimism: mean - beta * std over members")


@AGGREGATORS.register("min", spec=MinSpec, help="minimum over all members (MRS.Q's TD target and planner)")
def ensemble_min(values: torch.Tensor) -> torch.Tensor:
    return values.amin(dim=0)


@AGGREGATORS.register("mean", spec=MeanSpec, help="mean over members (MR.Q's policy loss)")
def ensemble_mean(values: torch.Tensor) -> torch.Tensor:
    return values.mean(dim=0)


@AGGREGATORS.register("max", spec=MaxSpec, help="maximum over members (optimistic; for analysis)")
def ensemble_max(values: torch.Tensor) -> torch.Tensor:
    return values.amax(dim=0)


@AGGREGATORS.register("min_of_k", spec=MinOfKSpec, help="min over k members drawn without replacement per call")
def ensemble_min_of_k(values: torch.Tensor, k: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    return _draw_k(values, k, generator, "min_of_k").amin(dim=0)


@AGGREGATORS.register("mean_of_k", spec=MeanOfKSpec,
                      help="mean over k members drawn without replacement per call (TD-MPC2's planner and policy)")
def ensemble_mean_of_k(values: torch.Tensor, k: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    return _draw_k(values, k, generator, "mean_of_k").mean(dim=0)


def _draw_k(values: torch.Tensor, k: int, generator: torch.Generator | None, name: str) -> torch.Tensor:
    """``k`` members of ``values [N, ...]`` drawn without replacement -> ``[k, ...]``."""
    n = values.shape[0]
    if k > n:
        raise ValueError(f"{name}: k={k} exceeds the ensemble size {n}")
    idx = torch.randperm(n, generator=generator, device=values.device)[:k]
    return values.index_select(0, idx)


@AGGREGATORS.register("first", spec=FirstSpec, help="member 0 alone (TD3's actor loss uses Q1)")
def ensemble_first(values: torch.Tensor) -> torch.Tensor:
    return values[0]


@AGGREGATORS.register("mean_minus_std", spec=MeanMinusStdSpec, help="mean - beta * std over members")
def ensemble_mean_minus_std(values: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    # population std (unbiased=False) so a single member gives std 0, not NaN
    return values.mean(dim=0) - beta * values.std(dim=0, unbiased=False)


def build_aggregator(spec: Spec) -> Aggregator:
    """Spec -> ``values [N, B, 1] -> [B, 1]`` with the spec's parameters bound."""
    fn = AGGREGATORS.get(spec.type)
    params = spec.model_dump(exclude={"type"})
    return functools.partial(fn, **params) if params else fn
