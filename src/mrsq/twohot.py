"""Two-hot encoding of scalars on symexp-spaced bins (MR.Q's reward head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """``x [...]`` -> ``[..., len(bins)]``: weight on the two ascending ``bins`` around x, linear in
    the distance (values beyond the ends go to the end bin)."""
    x = x.clamp(bins[0], bins[-1])
    low = (torch.searchsorted(bins, x.contiguous(), right=True) - 1).clamp(0, bins.numel() - 2)
    lo, hi = bins[low], bins[low + 1]
    w_hi = ((x - lo) / (hi - lo)).clamp(0, 1).unsqueeze(-1)
    out = torch.zeros(*x.shape, bins.numel(), dtype=x.dtype, device=x.device)
    out.scatter_(-1, low.unsqueeze(-1), 1 - w_hi)
    out.scatter_add_(-1, low.unsqueeze(-1) + 1, w_hi)
    return out


class TwoHot(nn.Module):
    """``num_bins`` bins evenly spaced in [lower, upper] in symlog space, stored symexp'd.

    ``encode(x [...]) -> [..., num_bins]`` puts weight on the two bins around x (values beyond
    the ends go to the end bin); ``decode(logits) = softmax(logits) @ bins``.
    """

    def __init__(self, num_bins: int = 65, lower: float = -10.0, upper: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("bins", symexp(torch.linspace(lower, upper, num_bins)), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return two_hot(x, self.bins)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """``[..., num_bins] -> [..., 1]``, in fp32 also under bf16 autocast (a matmul would run in bf16)."""
        return (torch.softmax(logits.float(), dim=-1) * self.bins).sum(-1, keepdim=True)

    def cross_entropy(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-sum(twohot(x) * log_softmax(logits))``, shape of ``x``."""
        return -(self.encode(x) * F.log_softmax(logits, dim=-1)).sum(-1)


class SymlogTwoHot(nn.Module):
    """TD-MPC2's two-hot: ``num_bins`` bins evenly spaced in [lower, upper] in symlog space.

    ``encode(x)`` puts weight on the two bins around ``symlog(x)``; ``decode(logits) =
    symexp(softmax(logits) @ bins)`` (the expectation is taken in symlog space, then mapped back,
    unlike :class:`TwoHot` which averages the symexp'd bins)."""

    def __init__(self, num_bins: int = 101, lower: float = -10.0, upper: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("bins", torch.linspace(lower, upper, num_bins), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return two_hot(symlog(x), self.bins)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """``[..., num_bins] -> [..., 1]``, in fp32 also under bf16 autocast (a matmul would run in bf16)."""
        return symexp((torch.softmax(logits.float(), dim=-1) * self.bins).sum(-1, keepdim=True))

    def cross_entropy(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-sum(twohot(x) * log_softmax(logits))``, shape of ``x``."""
        return -(self.encode(x) * F.log_softmax(logits, dim=-1)).sum(-1)
