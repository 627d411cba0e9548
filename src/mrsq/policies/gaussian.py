"""Tanh-squashed Gaussian policy (SAC, REDQ, TD-MPC2)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from tensordict.nn import TensorDictModule
from torch import nn

from mrsq.nn import MLP
from mrsq.registry import POLICIES
from mrsq.specs import Spec

_LOG_2PI = math.log(2 * math.pi)


class TanhGaussianPolicySpec(Spec):
    type: Literal["tanh_gaussian"] = "tanh_gaussian"
    hidden_dim: int = Field(256, ge=1)
    activation: Literal["relu", "elu", "gelu", "silu", "mish"] = "relu"
    layer_norm: bool = Field(False, description="LN before each hidden activation (SAC: no; TD-MPC2: yes)")
    hidden_layer_norm_affine: bool = Field(False, description="learnable scale and shift in those LNs (TD-MPC2: yes)")
    log_std_min: float = Field(-5.0, description="lower bound of the log std")
    log_std_max: float = Field(2.0, description="upper bound of the log std")
    log_std_bound: Literal["tanh", "clamp"] = Field(
        "tanh", description="tanh: log_std = min + (max - min) * (tanh(x) + 1) / 2 (smooth; CleanRL, "
                            "TD-MPC2); clamp: hard clip (the SAC authors' code)")
    in_keys: list[str] = Field(default_factory=lambda: ["zs"])
    out_keys: list[str] = Field(default_factory=lambda: ["action", "pre_activation"])

    @model_validator(mode="after")
    def _ordered(self):
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")
        return self


@POLICIES.register("tanh_gaussian", spec=TanhGaussianPolicySpec,
                   help="stochastic policy tanh(N(mu(zs), sigma(zs))) with log-probs (SAC, REDQ, TD-MPC2)")
class TanhGaussianPolicy(nn.Module):
    """``zs -> (mean, log_std)`` by an MLP zs -> h -> h -> 2A; actions ``tanh(u)``, ``u ~ N``.

    ``forward(zs)`` draws a reparameterised sample: ``(action [B, A], pre-tanh u [B, A])`` (the
    policy-family contract). ``sample(zs)`` also returns ``log pi(a|zs) [B, 1]`` with the tanh
    change of variables; ``act(zs) = tanh(mean)`` is the deterministic (evaluation) action.
    """

    stochastic = True

    def __init__(self, spec: TanhGaussianPolicySpec, input_dim: int, action_dim: int) -> None:
        super().__init__()
        self.spec, self.action_dim = spec, action_dim
        self.net = MLP([input_dim, spec.hidden_dim, spec.hidden_dim, 2 * action_dim], spec.activation, spec.layer_norm,
                       affine=spec.hidden_layer_norm_affine)
        self.log_std_min, self.log_std_max = spec.log_std_min, spec.log_std_max
        self.smooth_bound = spec.log_std_bound == "tanh"

    def mean_log_std(self, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(zs).chunk(2, dim=-1)
        lo, hi = self.log_std_min, self.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1) if self.smooth_bound else raw.clamp(lo, hi)
        return mean, log_std

    def sample(self, zs: torch.Tensor, squash_correction: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised ``(action [B, A], log_prob [B, 1], pre-tanh u [B, A])``. Without
        ``squash_correction`` the log-prob is that of ``u`` under the Gaussian (what TD-MPC2's
        entropy term effectively uses)."""
        mean, log_std = self.mean_log_std(zs)
        mean, log_std = mean.float(), log_std.float()  # log-probs in fp32 also under bf16 autocast
        eps = torch.randn_like(mean)
        u = mean + eps * log_std.exp()
        gaussian = (-0.5 * eps.square() - log_std - 0.5 * _LOG_2PI).sum(-1, keepdim=True)
        if not squash_correction:
            return torch.tanh(u), gaussian, u
        # log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
        squash = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1, keepdim=True)
        return torch.tanh(u), gaussian - squash, u

    def forward(self, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        action, _, u = self.sample(zs)
        return action, u

    def act(self, zs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean_log_std(zs)[0])

    def as_tensordict_module(self) -> TensorDictModule:
        return TensorDictModule(self, in_keys=list(self.spec.in_keys), out_keys=list(self.spec.out_keys))
