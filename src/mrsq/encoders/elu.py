"""MR.Q's encoder: ELU MLPs with layer norm (no learnable affine)."""

from __future__ import annotations

from typing import Literal

from mrsq.encoders.base import EncoderSpec, LatentModel
from mrsq.registry import ENCODERS


class EluEncoderSpec(EncoderSpec):
    type: Literal["elu"] = "elu"


@ENCODERS.register("elu", spec=EluEncoderSpec, help="MR.Q's encoder: LN+ELU MLPs, linear dynamics output")
class EluEncoder(LatentModel):
    """MR.Q's latent model (see :class:`LatentModel`)."""
