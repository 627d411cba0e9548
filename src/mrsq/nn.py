"""Small building blocks shared by the component families (plain torch, no pydantic)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "elu": F.elu, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "mish": F.mish, "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return ACTIVATIONS[name]


class Activation(nn.Module):
    """A named activation as a module, for ``nn.Sequential`` stacks (the conv encoders)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.fn = name, activation(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def ln_act(x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Layer norm without learnable affine over the last dim, then the activation (MR.Q)."""
    return act(F.layer_norm(x, x.shape[-1:]))


def init_linear_(layer: nn.Linear) -> nn.Linear:
    """MR.Q's init: xavier-uniform with the ReLU gain, zero bias."""
    nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain("relu"))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """Linear layers with LN+activation (activation only without ``layer_norm``) after every
    hidden layer; the output layer is linear.

    ``dims = [in, h1, ..., out]``. Shapes: ``[..., in] -> [..., out]``. ``affine``: the hidden
    layer norms have a learnable per-feature scale (init 1) and shift (init 0), as TD-MPC2's
    ``NormedLinear``; without it (MR.Q) they only normalise.
    """

    def __init__(self, dims: Sequence[int], act: str = "elu", layer_norm: bool = True, affine: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(init_linear_(nn.Linear(a, b)) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation(act)
        self.layer_norm = layer_norm
        # only when asked: MR.Q's modules keep exactly MR.Q's parameters (and old checkpoints load)
        if layer_norm and affine:
            self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = getattr(self, "norms", None)
        for i, layer in enumerate(self.layers[:-1]):
            # matmul, then the bias: compiled, the add fuses into the LN + activation kernel
            # instead of addmm's copy of the broadcast bias into the output
            x = F.linear(x, layer.weight) + layer.bias
            if norms is not None:
                x = self.act(F.layer_norm(x, x.shape[-1:], norms[i].weight, norms[i].bias))
            else:
                x = ln_act(x, self.act) if self.layer_norm else self.act(x)
        return self.layers[-1](x)


def simplicial_embedding(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """SEM (Lavoie et al.): softmax within consecutive groups of ``group_size`` features.

    ``[..., D] -> [..., D]`` with D divisible by ``group_size``; each group sums to 1.
    """
    shape = x.shape
    return torch.softmax(x.reshape(*shape[:-1], shape[-1] // group_size, group_size), dim=-1).reshape(shape)


def hard_update_(target: nn.Module, source: nn.Module) -> None:
    """target <- source, in one fused foreach copy over all parameters and buffers."""
    with torch.no_grad():
        torch._foreach_copy_(list(target.parameters()), list(source.parameters()))
        tb, sb = list(target.buffers()), list(source.buffers())
        if tb:
            torch._foreach_copy_(tb, sb)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def soft_update_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) * target + tau * source`` in one fused lerp."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
