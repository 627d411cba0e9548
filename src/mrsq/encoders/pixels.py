"""Pixel encoders: the conv stacks that replace the state MLP of a latent model's ``f``.

A latent model (SEM or ELU, :mod:`mrsq.encoders.base`) with ``pixels: {type: mrq}`` encodes a
stacked-frame observation (a flat uint8 vector of ``C * size * size`` values, see
:mod:`mrsq.envs.dmc`) with a conv stack, projects it to ``zs_dim`` and applies the same output
head as on state vectors (MR.Q: LN + ELU; SEM: LN + softmax per group). Everything downstream
(``g``, the model head, critics, policies, planners) is unchanged: planners only ever see ``zs``.

* ``mrq``: MR.Q's ``Encoder.cnn_zs`` (MRQ/models.py): ``x / 255 - 0.5``, four 3x3 convolutions of
  32 channels with strides 2, 2, 2, 1, each followed by the encoder's activation (ELU), flatten,
  ``Linear(1568 -> zs_dim)`` at 84x84; xavier-uniform (ReLU gain) init. Random shifts of
  +-4 pixels (``MRQ.maybe_augment_state``, ``pixel_augs = True``) on the sampled training batches
  only.
* ``tdmpc2``: TD-MPC2's ``layers.conv`` (tdmpc2/common/layers.py): ``ShiftAug(pad=3)``,
  ``x / 255 - 0.5``, convolutions 7x7/2, 5x5/2, 3x3/2, 3x3/1 of 32 channels with ReLU between
  them (none after the last), flatten: 512 features at 64x64, exactly ``zs_dim``, so there is no
  projection (at other sizes a ``Linear`` to ``zs_dim`` is added, a deviation). PyTorch's default
  conv init, as TD-MPC2. TD-MPC2 shifts every encoding, acting and planning included
  (``shift_when: always``). Deviation: TD-MPC2's SimNorm takes the conv features as they are;
  the SEM head here layer-normalises them before the softmax, as it does every latent.

The random shift is written here rather than taken from DrQ's ``grid_sample`` form: the shifts
are whole pixels, so a replicate pad and a per-image crop (one gather) give exactly the values the
bilinear sampling at pixel centres gives, on uint8 or float images, at a fraction of the work.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mrsq.nn import Activation, init_linear_
from mrsq.registry import PIXEL_ENCODERS
from mrsq.specs import Spec


class PixelEncoderSpec(Spec):
    """What every conv stack shares: the frame size it expects and its augmentation."""

    DEFAULT_SIZE: ClassVar[int] = 84  # the frame size of the stack's own reference (contract checks)

    image_size: Annotated[int, Field(ge=8, le=512)] | Literal["auto"] = Field(
        "auto", description="frame width and height in pixels; auto: the env's, for stacks of 3 RGB frames "
                            "(dmcpix: 84, dmcpix:<task>@64: 64)")
    channels: int = Field(32, ge=1, description="channels of every convolution")
    shift: int = Field(4, ge=0, description="random-shift augmentation: replicate-pad this many pixels and crop "
                                            "at a random offset per image (0: off)")
    shift_when: Literal["updates", "always"] = Field(
        "updates", description="updates: on sampled training batches (MR.Q); always: on every encoding, "
                               "acting and planning included (TD-MPC2)")


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x [N, C, H, W]`` shifted by whole pixels in ``[-pad, pad]`` per image and axis, borders
    replicated: DrQ / MR.Q / TD-MPC2's ``shift_aug`` (replicate pad, then a crop at an offset in
    ``[0, 2 pad]``), as two gathers with clamped indices (a clamped index is a replicated border).
    Same dtype as ``x``: uint8 frames are shifted before they are converted, a quarter of the
    bytes. The draw is ``randint(0, 2 pad + 1, (N, 2))``: row offset, then column offset."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), device=x.device, generator=generator) - pad
    rows = (torch.arange(h, device=x.device) + offsets[:, :1]).clamp_(0, h - 1)  # [N, H]
    cols = (torch.arange(w, device=x.device) + offsets[:, 1:]).clamp_(0, w - 1)  # [N, W]
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class PixelEncoder(nn.Module):
    """``[N, C * S * S]`` (uint8 or float, 0..255) -> ``[N, out_features]``: a conv stack.

    Subclasses set ``self.convs`` (an ``nn.Sequential`` over ``[N, C, S, S]`` in [-0.5, 0.5])."""

    def __init__(self, spec: PixelEncoderSpec, obs_dim: int) -> None:
        super().__init__()
        self.spec = spec
        side = math.isqrt(obs_dim // 9) if obs_dim % 9 == 0 else 0
        stacked = side > 0 and 9 * side * side == obs_dim  # 3 RGB frames of side x side (dmcpix)
        size = spec.image_size
        if size == "auto":
            if not stacked:
                raise ValueError(f"pixels.image_size auto: an observation of {obs_dim} values is not 3 stacked "
                                 f"square RGB frames; set encoder.pixels.image_size")
            size = side
        if obs_dim % (size * size):
            hint = f" (3 stacked frames of {side}x{side}?)" if stacked else ""
            raise ValueError(f"pixels.image_size {size}: an observation of {obs_dim} values is not a whole number "
                             f"of {size}x{size} channels{hint}; set encoder.pixels.image_size to the env's frame "
                             f"size (or auto)")
        self.in_channels, self.size = obs_dim // (size * size), size

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.in_channels, self.size, self.size)

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        """Training-batch augmentation of observations ``[..., obs_dim]`` (identity unless
        ``shift_when: updates``); same shape and dtype."""
        if self.spec.shift == 0 or self.spec.shift_when != "updates":
            return obs
        lead = obs.shape[:-1]
        shifted = random_shift(self.images(obs.reshape(-1, obs.shape[-1])), self.spec.shift)
        return shifted.reshape(*lead, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.images(x)
        if self.spec.shift and self.spec.shift_when == "always":
            x = random_shift(x, self.spec.shift)
        # channels-last: oneDNN's fast convolution layout on CPUs (2x here), cuDNN's under autocast
        x = x.to(torch.float32, memory_format=torch.channels_last)
        first = self.convs[0]
        if torch.is_autocast_enabled(x.device.type) or first.weight.dtype != torch.float32:
            # bf16 (autocast, or the bf16 acting copies): the fold below rounds W / 255 and
            # subtracts 0.5 sum(W) from un-centred sums, measured 0.75% relative error at the
            # stack's output against 0.52% for MR.Q's own x / 255 - 0.5 (fp32 reference, 8
            # frames): centre first there, in the weights' dtype
            x = x / 255.0 - 0.5
            if not torch.is_autocast_enabled(x.device.type):
                x = x.to(first.weight.dtype)
            return self.convs(x).flatten(1)
        # x / 255 - 0.5 folded into the first (unpadded) convolution: conv(x / 255 - 0.5) =
        # conv_{W / 255}(x) + b - 0.5 sum(W), two passes over the frames fewer
        w = first.weight.to(x.dtype)
        x = F.conv2d(x, w / 255.0, first.bias - 0.5 * w.sum((1, 2, 3)), first.stride)
        return self.convs[1:](x).flatten(1)

    @property
    def out_features(self) -> int:
        with torch.no_grad():
            return int(self.forward(torch.zeros(1, self.in_channels * self.size**2)).shape[1])


class MrqPixelEncoderSpec(PixelEncoderSpec):
    type: Literal["mrq"] = "mrq"
    activation: Literal["elu", "relu", "gelu", "silu", "mish"] = Field("elu", description="after every conv (MR.Q: "
                                                                                          "the encoder's ELU)")


@PIXEL_ENCODERS.register("mrq", spec=MrqPixelEncoderSpec,
                         help="MR.Q's conv stack: 4 x conv3x3 (strides 2,2,2,1) + ELU, shifts +-4 px on updates")
class MrqPixelEncoder(PixelEncoder):
    def __init__(self, spec: MrqPixelEncoderSpec, obs_dim: int) -> None:
        super().__init__(spec, obs_dim)
        c = spec.channels
        layers = []
        for i, stride in enumerate((2, 2, 2, 1)):
            conv = nn.Conv2d(self.in_channels if i == 0 else c, c, 3, stride=stride)
            layers += [init_linear_(conv), Activation(spec.activation)]  # MR.Q's weight_init covers Conv2d too
        self.convs = nn.Sequential(*layers)


class TdMpc2PixelEncoderSpec(PixelEncoderSpec):
    DEFAULT_SIZE: ClassVar[int] = 64
    type: Literal["tdmpc2"] = "tdmpc2"
    shift: int = Field(3, ge=0, description="ShiftAug pad (TD-MPC2: 3)")
    shift_when: Literal["updates", "always"] = "always"


@PIXEL_ENCODERS.register("tdmpc2", spec=TdMpc2PixelEncoderSpec,
                         help="TD-MPC2's conv stack (7/2, 5/2, 3/2, 3/1, ReLU) with ShiftAug on every encoding")
class TdMpc2PixelEncoder(PixelEncoder):
    def __init__(self, spec: TdMpc2PixelEncoderSpec, obs_dim: int) -> None:
        super().__init__(spec, obs_dim)
        c = spec.channels
        self.convs = nn.Sequential(
            nn.Conv2d(self.in_channels, c, 7, stride=2), nn.ReLU(),
            nn.Conv2d(c, c, 5, stride=2), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=1))


def build_pixel_state_encoder(spec, obs_dim: int, zs_dim: int) -> nn.Module:
    """``f`` of a latent model from its ``pixels`` spec: the conv stack, then a linear projection
    to ``zs_dim`` unless the stack already gives exactly ``zs_dim`` features (TD-MPC2 at 64x64)."""
    torso = PIXEL_ENCODERS.get(spec.type)(spec, obs_dim)
    try:
        features = torso.out_features
    except RuntimeError:  # a kernel larger than what is left of the image
        raise ValueError(f"pixels.type {spec.type}: {torso.size}x{torso.size} frames are too small for its "
                         f"convolutions (use larger frames, e.g. dmcpix:<task>@64)") from None
    if spec.type == "tdmpc2" and features == zs_dim:
        return PixelStateEncoder(torso, None)
    return PixelStateEncoder(torso, init_linear_(nn.Linear(features, zs_dim)))


class PixelStateEncoder(nn.Module):
    """``f`` for pixels: conv stack -> optional projection (pre-activation ``zs``)."""

    def __init__(self, torso: PixelEncoder, projection: nn.Linear | None) -> None:
        super().__init__()
        self.torso, self.projection = torso, projection

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        return self.torso.augment(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.torso(obs)
        return x if self.projection is None else self.projection(x)
