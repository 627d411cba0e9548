"""A user's plug-in that breaks the critic contract (one value per sample instead of one per
member and sample): ``--import broken_plugin`` must be refused before any training."""

from __future__ import annotations

from typing import Literal

import torch

from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.registry import CRITICS


class FlatCriticSpec(EnsembleCriticSpec):
    type: Literal["flat_critic"] = "flat_critic"


@CRITICS.register("flat_critic", spec=FlatCriticSpec)
class FlatCritic(EnsembleCritic):
    """Averages its members away (wrong output shape)."""

    def forward(self, zsa: torch.Tensor) -> torch.Tensor:
        return super().forward(zsa).mean(0)
