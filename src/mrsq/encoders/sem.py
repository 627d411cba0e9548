"""Simplicial Embeddings (SEM) on the state latent and on the predicted next latent (MRS.Q)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from mrsq.encoders.base import EncoderSpec, LatentModel
from mrsq.nn import simplicial_embedding
from mrsq.registry import ENCODERS


class SemEncoderSpec(EncoderSpec):
    type: Literal["sem"] = "sem"
    group_size: int = Field(8, ge=2, description="features per simplex (softmax group)")

    @model_validator(mode="after")
    def _divisible(self) -> "SemEncoderSpec":
        if self.zs_dim % self.group_size:
            raise ValueError(f"zs_dim ({self.zs_dim}) must be divisible by group_size ({self.group_size})")
        return self


@ENCODERS.register("sem", spec=SemEncoderSpec, help="MRS.Q's encoder: SEM (LN + softmax per group of 8) on zs and next zs")
class SemEncoder(LatentModel):
    """Linear -> LayerNorm -> softmax within groups, on f's output and on the dynamics output."""

    def zs_head(self, x: torch.Tensor) -> torch.Tensor:
        return simplicial_embedding(F.layer_norm(x, x.shape[-1:]), self.spec.group_size)

    def dynamics_head(self, x: torch.Tensor) -> torch.Tensor:
        return simplicial_embedding(F.layer_norm(x, x.shape[-1:]), self.spec.group_size)
