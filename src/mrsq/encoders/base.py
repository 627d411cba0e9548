"""The latent-model family: state encoder f, state-action encoder g and the fused model head.

A latent model maps an observation to ``zs`` (``f``), a latent state and an action to ``zsa``
(``g``) and ``zsa`` to (termination logit, next ``zs``, reward logits) (the model head). MR.Q calls
the whole thing "the encoder"; mrsq does too. Planners see it only through
:class:`mrsq.planners.base.PlanningModel`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from tensordict.nn import TensorDictModule
from torch import nn

from mrsq.nn import MLP, activation, init_linear_, ln_act
from mrsq.registry import PIXEL_ENCODERS
from mrsq.specs import Spec, component


class EncoderSpec(Spec):
    """Sizes shared by every latent model (MR.Q's values by default)."""

    zs_dim: int = Field(512, ge=1, description="latent state size")
    za_dim: int = Field(256, ge=1, description="action embedding size")
    zsa_dim: int = Field(512, ge=1, description="state-action latent size")
    hidden_dim: int = Field(512, ge=1, description="hidden width of f and g")
    activation: Literal["elu", "relu", "gelu", "silu", "mish"] = "elu"
    num_bins: int = Field(65, ge=3, description="two-hot reward bins")
    hidden_layer_norm_affine: bool = Field(
        False, description="learnable scale and shift in the hidden layers' LNs of f and g (TD-MPC2: yes; "
                           "MR.Q: no)")
    pixels: component(PIXEL_ENCODERS) | None = Field(
        None, description="a conv stack for pixel observations in place of f's MLP (mrq: MR.Q's, tdmpc2: "
                          "TD-MPC2's); None: state vectors")
    in_keys: list[str] = Field(default_factory=lambda: ["observation"])
    out_keys: list[str] = Field(default_factory=lambda: ["zs"])


class LatentModel(nn.Module):
    """MR.Q's encoder with two hooks, ``zs_head`` and ``dynamics_head``, that variants override.

    ``f``: obs ``[B, obs]`` -> ``zs [B, zs_dim]``: MLP obs->h->h->zs_dim, LN+act after every layer
    (pixels: a conv stack of :mod:`mrsq.encoders.pixels` and a projection to zs_dim, then the head).
    ``g``: (zs, a) -> ``zsa [B, zsa_dim]``: za = act(Linear(a)); MLP(zs+za -> h -> h -> zsa).
    head: Linear(zsa -> 1 + zs_dim + num_bins) = (termination logit, next zs, reward logits).
    """

    def __init__(self, spec: EncoderSpec, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        s = spec
        self.spec = s
        self.obs_dim, self.action_dim, self.zs_dim, self.num_bins = obs_dim, action_dim, s.zs_dim, s.num_bins
        self.act = activation(s.activation)
        affine = s.hidden_layer_norm_affine
        if s.pixels is not None:
            from mrsq.encoders.pixels import build_pixel_state_encoder

            self.f = build_pixel_state_encoder(s.pixels, obs_dim, s.zs_dim)
        else:
            self.f = MLP([obs_dim, s.hidden_dim, s.hidden_dim, s.zs_dim], s.activation, affine=affine)
        self.za = init_linear_(nn.Linear(action_dim, s.za_dim))
        self.g = MLP([s.zs_dim + s.za_dim, s.hidden_dim, s.hidden_dim, s.zsa_dim], s.activation, affine=affine)
        self.head = init_linear_(nn.Linear(s.zsa_dim, 1 + s.zs_dim + s.num_bins))

    # -- hooks ---------------------------------------------------------------------------
    def zs_head(self, x: torch.Tensor) -> torch.Tensor:
        """Output non-linearity of f (MR.Q: LN + ELU)."""
        return ln_act(x, self.act)

    def dynamics_head(self, x: torch.Tensor) -> torch.Tensor:
        """Output non-linearity of the next-latent prediction (MR.Q: none)."""
        return x

    @property
    def pixels(self) -> bool:
        """Whether ``f`` encodes pixels (a conv stack)."""
        return self.spec.pixels is not None

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        """Training-batch augmentation of observations ``[..., obs_dim]`` before they are
        encoded (MR.Q's random shifts on pixels; the identity on state vectors)."""
        return self.f.augment(obs) if self.pixels else obs

    # -- the model -----------------------------------------------------------------------
    def zs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.zs_head(self.f(obs))

    def zsa(self, zs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        za = self.act(self.za(action))
        return self.g(torch.cat([zs, za], dim=-1))

    def model(self, zsa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """zsa -> (termination logit [B,1], next zs [B,zs_dim], reward logits [B,num_bins])."""
        out = self.head(zsa)
        done, next_zs, reward = out.split([1, self.zs_dim, self.num_bins], dim=-1)
        return done, self.dynamics_head(next_zs), reward

    def model_all(self, zs: torch.Tensor, action: torch.Tensor):
        return self.model(self.zsa(zs, action))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """TensorDict boundary: observation -> zs."""
        return self.zs(obs)

    def as_tensordict_module(self) -> TensorDictModule:
        return TensorDictModule(self, in_keys=list(self.spec.in_keys), out_keys=list(self.spec.out_keys))
