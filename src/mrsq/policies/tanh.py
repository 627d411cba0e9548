"""Deterministic tanh policy (MR.Q / TD3)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from tensordict.nn import TensorDictModule
from torch import nn

from mrsq.nn import MLP
from mrsq.registry import POLICIES
from mrsq.specs import Spec


class TanhPolicySpec(Spec):
    type: Literal["tanh"] = "tanh"
    hidden_dim: int = Field(512, ge=1)
    activation: Literal["relu", "elu", "gelu", "silu", "mish"] = "relu"
    layer_norm: bool = Field(True, description="LN before each hidden activation (MR.Q: yes; TD3: no)")
    hidden_layer_norm_affine: bool = Field(False, description="learnable scale and shift in those LNs (MR.Q: no; TD-MPC2: yes)")
    in_keys: list[str] = Field(default_factory=lambda: ["zs"])
    out_keys: list[str] = Field(default_factory=lambda: ["action", "pre_activation"])


@POLICIES.register("tanh", spec=TanhPolicySpec, help="deterministic policy zs -> tanh(MLP(zs)) (MR.Q, TD3)")
class TanhPolicy(nn.Module):
    """``zs [B, zs_dim] -> (action [B, A] in (-1, 1), pre-tanh activation [B, A])``.

    MLP zs -> h -> h -> A with LN (optional) + ReLU on the hidden layers. The pre-activation is returned so
    the policy loss can penalise it (MR.Q: 1e-5 * mean(pre^2)).
    """

    stochastic = False  # no log-probs: agents with an entropy term (sac, tdmpc2) reject it

    def __init__(self, spec: TanhPolicySpec, input_dim: int, action_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.net = MLP([input_dim, spec.hidden_dim, spec.hidden_dim, action_dim], spec.activation, spec.layer_norm,
                       affine=spec.hidden_layer_norm_affine)

    def forward(self, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.net(zs)
        return torch.tanh(pre), pre

    def act(self, zs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(zs))

    def as_tensordict_module(self) -> TensorDictModule:
        return TensorDictModule(self, in_keys=list(self.spec.in_keys), out_keys=list(self.spec.out_keys))
