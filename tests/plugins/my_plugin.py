"""A user's plug-in module, as loaded by ``mrsq ... --import my_plugin``.

Registers a critic ``my_critic``: MR.Q's ensemble whose values are multiplied by ``scale``.
It is imported only in subprocesses, so the test process's registries stay untouched.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mrsq.critics.ensemble import EnsembleCritic, EnsembleCriticSpec
from mrsq.registry import CRITICS


class MyCriticSpec(EnsembleCriticSpec):
    type: Literal["my_critic"] = "my_critic"
    scale: float = Field(1.0, gt=0, description="multiplies every member's value")


@CRITICS.register("my_critic", spec=MyCriticSpec)
class MyCritic(EnsembleCritic):
    """A user's scaled critic ensemble (test plug-in).

    The docstring's first line is its help text in ``mrsq list critic``.
    """

    def forward(self, zsa: torch.Tensor) -> torch.Tensor:
        return super().forward(zsa) * self.spec.scale
