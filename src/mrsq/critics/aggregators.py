"""Aggregators: pure functions over the ensemble dimension, ``[N, B, 1] -> [B, 1]``.

The agent spec names one for the TD target, one for the policy loss and one for the planner's
terminal value (MRS.Q: min, mean, min). Each is registered with a small spec holding its
parameters; :func:`build_aggregator` turns a spec into a :class:`BoundAggregator`, a plain
callable for the hot path that also says what the critic must compute for it:

* ``subset = k``: only ``k`` drawn members are evaluated (``subset``: the critic runs on the
  drawn members alone, so its FLOPs fall by k/N; ``min_of_k`` instead evaluates all N and then
  picks k). Whoever evaluates the critic draws the members (:func:`draw_members`) once per
  planning call or per update batch and passes them to the critic; the aggregator then reduces
  the ``[k, B, 1]`` it is given.
* ``draws_per_call``: the aggregator draws its members anew at every call (``min_of_k``,
  ``mean_of_k``), so the same values reduce differently from call to call (planners re-score
  sequences they keep; :mod:`mrsq.planners.sampling`).
* ``pools_atoms``: the aggregator reads every member's atoms ``[N, B, M]`` (a quantile critic's
  M quantiles) instead of one value per member (``truncated_mean``, TQC's truncation).

Critics evaluate an aggregator through ``critic.aggregate(x, aggregator, members)``, which picks
the right input for it.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Literal

import torch
from pydantic import Field

from mrsq.registry import AGGREGATORS
from mrsq.specs import Spec

Aggregator = Callable[[torch.Tensor], torch.Tensor]


class BoundAggregator:
    """A registered aggregator with its spec's parameters bound: ``values -> [B, 1]``.

    ``subset``: the number of members to draw and evaluate (None: all of them); ``pools_atoms``:
    it takes every member's atoms ``[N, B, M]`` rather than their values ``[N, B, 1]``."""

    def __init__(self, name: str, fn: Callable, params: dict, subset: int | None = None,
                 pools_atoms: bool = False, draws_per_call: bool = False) -> None:
        self.name, self.fn, self.params = name, fn, params
        self.subset, self.pools_atoms = subset, pools_atoms
        self.draws_per_call = draws_per_call  # random at every call (min_of_k, mean_of_k)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return self.fn(values, **self.params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


class MinSpec(Spec):
    type: Literal["min"] = "min"


class MeanSpec(Spec):
    type: Literal["mean"] = "mean"


class MaxSpec(Spec):
    type: Literal["max"] = "max"


class MinOfKSpec(Spec):
    DRAWS_PER_CALL: ClassVar[bool] = True  # a new draw at every call: the same input scores differently
    type: Literal["min_of_k"] = "min_of_k"
    k: int = Field(2, ge=1, description="members drawn without replacement per call")


class MeanOfKSpec(Spec):
    DRAWS_PER_CALL: ClassVar[bool] = True  # a new draw at every call: the same input scores differently
    type: Literal["mean_of_k"] = "mean_of_k"
    k: int = Field(2, ge=1, description="members drawn without replacement per call")


class SubsetSpec(Spec):
    DRAWS_SUBSET: ClassVar[bool] = True  # the caller draws k members and evaluates only those
    type: Literal["subset"] = "subset"
    k: int = Field(2, ge=1, description="members drawn without replacement and evaluated (only these: "
                                        "FLOPs fall by k/N); one draw per planning call and per update batch")
    reduce: Literal["min", "mean"] = Field("min", description="how the k values are combined")


class TruncatedMeanSpec(Spec):
    POOLS_ATOMS: ClassVar[bool] = True  # takes every member's atoms [N, B, M]
    type: Literal["truncated_mean"] = "truncated_mean"
    drop: int = Field(2, ge=0, description="atoms dropped per member from the top of the pooled atoms "
                                           "(TQC's d; N members drop d*N of their N*M quantiles)")


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
    """``k`` members of ``values [N, ...]`` drawn without replacement -> ``[k, ...]``: the first k
    of the argsort of N uniforms (``randperm``'s distribution, but capturable in a CUDA graph,
    where TD-MPC2's planner calls this inside the compiled search)."""
    n = values.shape[0]
    if k > n:
        raise ValueError(f"{name}: k={k} exceeds the ensemble size {n}")
    idx = torch.rand(n, generator=generator, device=values.device).argsort()[:k]
    return values.index_select(0, idx)


@AGGREGATORS.register("subset", spec=SubsetSpec,
                      help="min (or mean) over k drawn members, evaluating only those (k/N of the critic FLOPs)")
def ensemble_subset(values: torch.Tensor, k: int = 2, reduce: str = "min") -> torch.Tensor:
    # The members were drawn and evaluated by the caller (critic.aggregate with draw_members):
    # values holds exactly the k drawn ones. A full [N, ...] here means the caller evaluated every
    # member, i.e. it did not draw; reducing those would silently be another aggregator.
    if values.shape[0] != k:
        raise ValueError(f"subset: got {values.shape[0]} members' values, expected the k={k} drawn ones; "
                         f"evaluate the critic with critic.aggregate(x, aggregator, draw_members(aggregator, "
                         f"num_members)) (docs/adding-a-component.md)")
    return values.amin(dim=0) if reduce == "min" else values.mean(dim=0)


@AGGREGATORS.register("truncated_mean", spec=TruncatedMeanSpec,
                      help="TQC: pool all members' quantiles, drop the top drop*N, mean of the rest")
def ensemble_truncated_mean(values: torch.Tensor, drop: int = 2) -> torch.Tensor:
    return truncated_atoms(values, drop).mean(dim=-1, keepdim=True)


def truncated_atoms(atoms: torch.Tensor, drop: int) -> torch.Tensor:
    """TQC's truncation: ``atoms [N, B, M]`` pooled per sample, sorted ascending, the top
    ``drop * N`` removed -> ``[B, N * (M - drop)]``."""
    n, b, m = atoms.shape
    if drop >= m:
        raise ValueError(f"truncated_mean: drop={drop} per member leaves nothing of {m} atoms per member")
    pooled = atoms.permute(1, 0, 2).reshape(b, n * m)
    return pooled.sort(dim=-1).values[:, : n * (m - drop)]


def evaluates_subsets(critic_class) -> bool:
    """Whether a critic class's ``forward`` takes ``members`` (evaluates a drawn subset alone)."""
    import inspect

    try:
        return "members" in inspect.signature(critic_class.forward).parameters
    except (TypeError, ValueError):
        return False


def draw_members(aggregate, num_members: int | None, device=None,
                 generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The members a subset aggregator evaluates (``[k]``, drawn without replacement from
    ``generator``, default the global torch generator), or None for an aggregator that uses all
    of them (no random numbers are drawn then).

    Drawn as the first k of the argsort of N uniforms rather than with ``randperm``: the same
    distribution, and capturable in a CUDA graph (``randperm`` is not), where the compiled search
    runs on GPUs."""
    k = getattr(aggregate, "subset", None)
    if k is None:
        return None
    if num_members is None or k > num_members:
        raise ValueError(f"{aggregate!r}: k={k} members to draw from a critic of {num_members} members")
    if generator is not None:
        return torch.rand(num_members, generator=generator).argsort()[:k].to(device)
    return torch.rand(num_members, device=device).argsort()[:k]


@AGGREGATORS.register("first", spec=FirstSpec, help="member 0 alone (TD3's actor loss uses Q1)")
def ensemble_first(values: torch.Tensor) -> torch.Tensor:
    return values[0]


@AGGREGATORS.register("mean_minus_std", spec=MeanMinusStdSpec, help="mean - beta * std over members")
def ensemble_mean_minus_std(values: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    # population std (unbiased=False) so a single member gives std 0, not NaN
    return values.mean(dim=0) - beta * values.std(dim=0, unbiased=False)


def build_aggregator(spec: Spec) -> BoundAggregator:
    """Spec -> ``values [N, B, 1] -> [B, 1]`` with the spec's parameters bound."""
    fn = AGGREGATORS.get(spec.type)
    params = spec.model_dump(exclude={"type"})
    # a user's aggregator spec opts in the same way: DRAWS_SUBSET (with a field k) or POOLS_ATOMS
    subset = params["k"] if getattr(type(spec), "DRAWS_SUBSET", False) else None
    return BoundAggregator(spec.type, fn, params, subset=subset, pools_atoms=getattr(type(spec), "POOLS_ATOMS", False),
                           draws_per_call=getattr(type(spec), "DRAWS_PER_CALL", False))
