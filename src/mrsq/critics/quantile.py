"""Quantile critics with truncation: TQC (Kuznetsov et al., 2020, "Controlling Overestimation Bias
with Truncated Mixture of Continuous Distributional Quantile Critics").

Each of the N members outputs M quantiles of the return at the fractions ``tau_i = (2i + 1) / 2M``
(the same vectorized layout as :class:`~mrsq.critics.ensemble.EnsembleCritic`, with M outputs per
member instead of one). TQC's pieces map onto mrsq's parts:

* TD target: the target members' ``N * M`` quantiles at the next state are pooled, sorted, and the
  top ``d * N`` dropped (the ``truncated_mean`` aggregator's ``drop = d``); the remaining atoms,
  discounted and added to the return, are the target atoms (:meth:`QuantileEnsembleCritic.td_atoms`).
  ``d`` is a pessimism knob that needs no more members.
* Loss: the quantile Huber loss of every member's M quantiles against all target atoms
  (:meth:`QuantileEnsembleCritic.regression_loss`), averaged as TQC's code averages it.
* Policy loss: the mean of all quantiles of all members (``mean`` over the members' means: each
  member's value, ``forward``, is the mean of its quantiles).
* Planner: any aggregator; ``truncated_mean`` (the same truncation as the target, TQC-style) or
  ``mean`` (the untruncated mean) are the natural two.

With any aggregator other than ``truncated_mean`` in the TD target (``min``, say), the target is
that aggregator over the members' values, one atom per sample.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mrsq.critics.aggregators import truncated_atoms
from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.registry import CRITICS


class QuantileEnsembleCriticSpec(EnsembleCriticSpec):
    type: Literal["quantile_ensemble"] = "quantile_ensemble"
    num_members: int = Field(2, ge=1, le=32, description="quantile critics (TQC: 5; mrsq_tqc: 2)")
    num_quantiles: int = Field(25, ge=1, description="quantiles per member, M (TQC: 25)")
    huber_kappa: float = Field(1.0, gt=0, description="threshold of the quantile Huber loss (TQC: 1)")


@CRITICS.register("quantile_ensemble", spec=QuantileEnsembleCriticSpec,
                  help="N critics of M quantiles each (TQC); truncated_mean drops the top d per member")
class QuantileEnsembleCritic(EnsembleCritic):
    """``forward(x) -> [N, B, 1]`` each member's mean quantile; ``atoms(x) -> [N, B, M]``."""

    quantile = True

    def __init__(self, spec: QuantileEnsembleCriticSpec, input_dim: int) -> None:
        super().__init__(spec, input_dim)
        m = spec.num_quantiles
        self.register_buffer("taus", (2 * torch.arange(m, dtype=torch.float32) + 1) / (2 * m), persistent=False)
        self.kappa = spec.huber_kappa

    @staticmethod
    def output_dim(spec) -> int:
        return spec.num_quantiles

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None, atoms: bool = False,
                dropout: bool | None = None) -> torch.Tensor:
        """Each member's value ``[N, B, 1]`` (the mean of its quantiles), or with ``atoms`` its
        quantiles ``[N, B, M]``."""
        quantiles = self.raw(x, dropout, members)
        return quantiles if atoms else quantiles.mean(-1, keepdim=True)

    def atoms(self, x: torch.Tensor, members: torch.Tensor | None = None,
              dropout: bool | None = None) -> torch.Tensor:
        """Every member's M quantiles ``[N, B, M]`` (what the quantile loss fits). Through
        ``__call__``, so hooks (and FLOP counters) see the module."""
        return self(x, members, atoms=True, dropout=dropout)

    def td_atoms(self, x: torch.Tensor, aggregate, members: torch.Tensor | None = None) -> torch.Tensor:
        """Target atoms ``[B, K]``: with ``truncated_mean(drop=d)`` the pooled quantiles without the
        top ``d * N`` (TQC, ``K = N (M - d)``); with any other aggregator its value (``K = 1``)."""
        if getattr(aggregate, "pools_atoms", False):
            return truncated_atoms(self.atoms(x, members).float(), aggregate.params["drop"])
        return self.aggregate(x, aggregate, members)

    def regression_loss(self, pred: torch.Tensor, target: torch.Tensor, loss: str = "huber",
                        over_members: str = "mean") -> torch.Tensor:
        """Quantile Huber loss of ``pred [N, B, M]`` against ``target [B, K]`` (TQC):
        ``mean_{b, i, j} |tau_i - 1{delta < 0}| * huber_kappa(delta) / kappa`` with
        ``delta = target_j - pred_i``, per member, then averaged (or summed) over members. The
        quantile loss has one form; ``loss`` (the agent's choice for scalar critics) is ignored."""
        delta = target[None, :, None, :] - pred[..., None]  # [N, B, M, K]
        abs_delta = delta.abs()
        huber = torch.where(abs_delta <= self.kappa, 0.5 * delta.square(), self.kappa * (abs_delta - 0.5 * self.kappa))
        weight = (self.taus[:, None] - (delta.detach() < 0).to(pred.dtype)).abs()
        per_member = (weight * huber / self.kappa).mean(dim=(1, 2, 3))
        return per_member.mean() if over_members == "mean" else per_member.sum()
