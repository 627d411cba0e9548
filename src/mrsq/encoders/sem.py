"""Simplicial Embeddings (SEM) on the state latent and on the predicted next latent (MRS.Q)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from mrsq.encoders.base import EncoderSpec, LatentModel
from mrsq.nn import simplicial_embedding
from mrsq.registry import ENCODERS


class SemEncoderSpec(EncoderSpec):
    type: Literal["sem"] = "sem"
    group_size: int = Field(8, ge=2, description="features per simplex (softmax group)")
    layer_norm_affine: bool = Field(
        True, description="learnable scale and shift in the layer norm before each softmax "
                          "(TD-MPC2's SimNorm block and the public MRS.Q port have one)")

    @model_validator(mode="after")
    def _divisible(self) -> "SemEncoderSpec":
        if self.zs_dim % self.group_size:
            raise ValueError(f"zs_dim ({self.zs_dim}) must be divisible by group_size ({self.group_size})")
        return self


@ENCODERS.register("sem", spec=SemEncoderSpec, help="MRS.Q's encoder: SEM (LN + softmax per group of 8) on zs and next zs")
class SemEncoder(LatentModel):
    """Linear -> LayerNorm -> softmax within groups, on f's output and on the dynamics output.

    Each of the two heads has its own layer norm; with ``layer_norm_affine`` (the default, as the
    references) each has a learnable per-feature scale (init 1) and shift (init 0), which lets the
    encoder set how peaked each simplex is. Without it the softmax sees unit-variance logits."""

    def __init__(self, spec: SemEncoderSpec, obs_dim: int, action_dim: int) -> None:
        super().__init__(spec, obs_dim, action_dim)
        self.zs_norm = nn.LayerNorm(spec.zs_dim, elementwise_affine=spec.layer_norm_affine)
        self.dynamics_norm = nn.LayerNorm(spec.zs_dim, elementwise_affine=spec.layer_norm_affine)

    def zs_head(self, x: torch.Tensor) -> torch.Tensor:
        return simplicial_embedding(self.zs_norm(x), self.spec.group_size)

    def dynamics_head(self, x: torch.Tensor) -> torch.Tensor:
        return simplicial_embedding(self.dynamics_norm(x), self.spec.group_size)
