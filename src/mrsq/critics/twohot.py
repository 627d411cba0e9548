"""A critic ensemble that regresses values as distributions over bins (TD-MPC2's discrete
regression), with the same vectorized layout as :class:`~mrsq.critics.ensemble.EnsembleCritic`.

Each member outputs ``num_bins`` logits over values spaced evenly in symlog space
(:class:`~mrsq.twohot.SymlogTwoHot`); ``forward`` decodes them to one value per member,
``[N, B, 1]``, so aggregators, planners and the diagnostics use it like any critic. A loss that
wants the distributions calls :meth:`TwoHotEnsembleCritic.logits` and
:meth:`TwoHotEnsembleCritic.cross_entropy` (soft cross-entropy against the two-hot target).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.registry import CRITICS
from mrsq.twohot import SymlogTwoHot


class TwoHotEnsembleCriticSpec(EnsembleCriticSpec):
    type: Literal["twohot_ensemble"] = "twohot_ensemble"
    num_bins: int = Field(101, ge=3, description="value bins (TD-MPC2: 101)")
    lower: float = Field(-10.0, description="lowest bin, in symlog space")
    upper: float = Field(10.0, description="highest bin, in symlog space")
    zero_init_last: bool = Field(False, description="zero the last layer's weights (TD-MPC2 does: every "
                                                    "value starts at 0)")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


@CRITICS.register("twohot_ensemble", spec=TwoHotEnsembleCriticSpec,
                  help="N critics over two-hot value bins in symlog space (TD-MPC2's discrete regression)")
class TwoHotEnsembleCritic(EnsembleCritic):
    """``forward(x) -> [N, B, 1]`` decoded values; ``logits(x) -> [N, B, num_bins]``."""

    distributional = True  # has logits() and cross_entropy() (TD-MPC2's value loss needs them)

    def __init__(self, spec: TwoHotEnsembleCriticSpec, input_dim: int) -> None:
        super().__init__(spec, input_dim)
        self.two_hot = SymlogTwoHot(spec.num_bins, spec.lower, spec.upper)
        if spec.zero_init_last:
            nn.init.zeros_(self.weights[-1])

    @staticmethod
    def output_dim(spec) -> int:
        return spec.num_bins

    def logits(self, x: torch.Tensor, dropout: bool | None = None,
               members: torch.Tensor | None = None) -> torch.Tensor:
        return self.raw(x, dropout, members)

    def values(self, x: torch.Tensor, dropout: bool | None = None,
               members: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded values ``[N, B, 1]`` (fp32), with or without the first layer's dropout."""
        return self.two_hot.decode(self.raw(x, dropout, members).float())

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None,
                dropout: bool | None = None) -> torch.Tensor:
        return self.values(x, dropout, members)

    def atoms(self, x: torch.Tensor, members: torch.Tensor | None = None,
              dropout: bool | None = None) -> torch.Tensor:
        """One decoded value per member ``[N, B, 1]`` (the loss itself is :meth:`cross_entropy`)."""
        return self(x, members) if dropout is None else self.values(x, dropout, members)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits [N, B, bins]``, ``target [B, 1]`` -> per-member, per-sample loss ``[N, B]``."""
        return self.two_hot.cross_entropy(logits.float(), target.expand(logits.shape[0], -1, -1)[..., 0])
