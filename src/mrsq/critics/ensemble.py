"""A critic ensemble evaluated as one vectorized computation.

Parameters of the N members are stacked (``weight [N, in, out]``, ``bias [N, 1, out]``) and every
layer is one batched matmul (``bmm``), so N critics cost one kernel launch per layer instead
of N. Each member is initialised independently (MR.Q's xavier init on its own ``[in, out]`` slice)
before stacking. The module returns every member's value, ``[N, B, 1]``; how the values are
combined (min, mean, ...) is a separate, named choice: :mod:`mrsq.critics.aggregators`.

Two ways to pay less for N members, both fields of every ensemble critic:

* ``shared_layers``: the first hidden layers are one trunk shared by all members (computed once,
  ``[B, D] @ [D, H]``), the members own the rest (one batched matmul per layer, as above). The
  ``shared_trunk`` critic is this with 2 of 3 hidden layers shared; 0 shared is ``ensemble``,
  value for value from the same seed (with a trunk, the first trunk layer is initialised where
  member 0's was; later layers draw from a shifted random stream, so only 0 shared reproduces
  ``ensemble``'s weights).
  With a trunk, the first layer's ``dropout`` is applied to the trunk's output: one mask shared
  by every member.
* ``members``: every method takes an optional index tensor ``[k]`` and evaluates only those
  members (the ``subset`` aggregator's draw), ``[k, B, 1]``, at k/N of the members' FLOPs.

The critic owns its regression loss and its TD target's form (:meth:`EnsembleCritic.regression_loss`,
:meth:`EnsembleCritic.td_atoms`): a scalar critic regresses one value per member onto one target
value; a quantile critic (:mod:`mrsq.critics.quantile`) regresses M quantiles onto a set of target
atoms. Agents call these and need no per-critic branch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from tensordict.nn import TensorDictModule
from torch import nn

from mrsq.nn import activation, init_linear_, ln_act
from mrsq.registry import CRITICS
from mrsq.specs import Spec


class EnsembleCriticSpec(Spec):
    type: Literal["ensemble"] = "ensemble"
    num_members: int = Field(2, ge=1, le=32, description="critics in the ensemble (MR.Q 2, MRS.Q 10)")
    hidden_dim: int = Field(512, ge=1)
    num_hidden: int = Field(3, ge=1, description="hidden layers, each followed by LN + activation")
    activation: Literal["elu", "relu", "gelu", "silu", "mish"] = "elu"
    layer_norm: bool = Field(True, description="LN before each hidden activation (MR.Q, TD-MPC2: yes; TD3, SAC: no)")
    hidden_layer_norm_affine: bool = Field(
        False, description="learnable scale and shift in each hidden LN, per member (TD-MPC2: yes; MR.Q: no)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after the first layer (TD-MPC2: 0.01)")
    shared_layers: int = Field(0, ge=0, description="hidden layers (from the input) shared by all members as one "
                                                    "trunk, computed once; the members own the rest (0: independent)")
    in_keys: list[str] = Field(default_factory=lambda: ["zsa"])
    out_keys: list[str] = Field(default_factory=lambda: ["q"])

    @model_validator(mode="after")
    def _trunk_fits(self):
        if self.shared_layers > self.num_hidden:
            raise ValueError(f"shared_layers ({self.shared_layers}) exceeds num_hidden ({self.num_hidden}): "
                             f"only hidden layers can be shared (the output layer is each member's own)")
        return self


class SharedTrunkCriticSpec(EnsembleCriticSpec):
    type: Literal["shared_trunk"] = "shared_trunk"
    num_members: int = Field(10, ge=1, le=32, description="value heads on the trunk")
    shared_layers: int = Field(2, ge=0, description="hidden layers (from the input) in the shared trunk; the "
                                                    "heads own the rest and the output layer (0: ensemble)")


@CRITICS.register("ensemble", spec=EnsembleCriticSpec,
                  help="N independent MLP critics (MR.Q's shape), stacked and run with batched matmuls")
class EnsembleCritic(nn.Module):
    """N critics ``zsa -> h -> ... -> h -> 1`` (LN + act after each hidden layer), vectorized.

    ``forward(zsa)``: ``[B, D]`` (shared input) or ``[N, B, D]`` (one input per member)
    -> ``[N, B, 1]``.
    """

    def __init__(self, spec: EnsembleCriticSpec, input_dim: int) -> None:
        super().__init__()
        self.spec, self.num_members = spec, spec.num_members
        dims = [input_dim] + [spec.hidden_dim] * spec.num_hidden + [self.output_dim(spec)]
        self.shared = spec.shared_layers  # layers [0, shared) are the trunk: weight [1, in, out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            # a trunk layer is initialised once; with 0 shared layers the draws are exactly ensemble's
            count = 1 if i < self.shared else spec.num_members
            members = [init_linear_(nn.Linear(fan_in, fan_out)) for _ in range(count)]
            self.weights.append(nn.Parameter(torch.stack([m.weight.detach().T for m in members])))
            self.biases.append(nn.Parameter(torch.stack([m.bias.detach()[None] for m in members])))
        self.act = activation(spec.activation)
        self.layer_norm, self.dropout = spec.layer_norm, spec.dropout
        if spec.layer_norm and spec.hidden_layer_norm_affine:  # [count, 1, H] per hidden layer
            self.ln_weights, self.ln_biases = nn.ParameterList(), nn.ParameterList()
            for i, width in enumerate(dims[1:-1]):
                count = 1 if i < self.shared else spec.num_members
                self.ln_weights.append(nn.Parameter(torch.ones(count, 1, width)))
                self.ln_biases.append(nn.Parameter(torch.zeros(count, 1, width)))

    @staticmethod
    def output_dim(spec) -> int:
        """Outputs per member of the last layer (1: a value; two-hot critics: their bins)."""
        return 1

    def raw(self, zsa: torch.Tensor, dropout: bool | None = None,
            members: torch.Tensor | None = None) -> torch.Tensor:
        """The last layer's outputs ``[N, B, output_dim]`` (``zsa [B, D]`` or ``[N, B, D]``), or
        ``[k, B, output_dim]`` for the ``members [k]`` only (a ``[k, B, D]`` input then).
        ``dropout``: apply the spec's dropout (None: when the module is in training mode)."""
        dropout = self.training if dropout is None else dropout
        n = self.num_members if members is None else members.shape[0]
        x = zsa
        last = len(self.weights) - 1
        affine = getattr(self, "ln_weights", None) is not None
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i < self.shared:  # the trunk: one [.., D] @ [D, H] for every member
                x = x @ w[0] + b[0]
            else:
                if x.dim() == 2:
                    x = x.unsqueeze(0).expand(n, *x.shape)
                if members is not None:
                    w, b = w.index_select(0, members), b.index_select(0, members)
                # bmm, then the bias: compiled, the add fuses into the layer norm + activation that
                # follows; baddbmm would first copy the broadcast bias into the output (measured: the
                # 10-critic forward at planner batch 25% faster this way under torch.compile on CPU)
                x = torch.bmm(x, w) + b
            if i == 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, dropout)
            if i < last and affine:
                scale, shift = self.ln_weights[i], self.ln_biases[i]
                if i < self.shared:
                    scale, shift = scale[0], shift[0]  # [1, H] for the trunk's [B, H]
                elif members is not None:
                    scale, shift = scale.index_select(0, members), shift.index_select(0, members)
                x = self.act(F.layer_norm(x, x.shape[-1:]) * scale + shift)
            elif i < last:
                x = ln_act(x, self.act) if self.layer_norm else self.act(x)
        return x

    def forward(self, zsa: torch.Tensor, members: torch.Tensor | None = None,
                dropout: bool | None = None) -> torch.Tensor:
        """Each member's value ``[N, B, 1]`` (``[k, B, 1]`` for ``members [k]``)."""
        return self.raw(zsa, dropout, members)

    # ------------------------------------------------ what agents call (the critic owns its loss)
    def atoms(self, zsa: torch.Tensor, members: torch.Tensor | None = None,
              dropout: bool | None = None) -> torch.Tensor:
        """What the regression loss fits, per member ``[N, B, M]``: here one value (M = 1, the
        module's own ``forward``, so a subclass that overrides only ``forward(zsa)`` is trained on
        what it returns); a quantile critic's M quantiles."""
        return self._values(zsa, members, dropout)

    def _values(self, zsa: torch.Tensor, members: torch.Tensor | None, dropout: bool | None) -> torch.Tensor:
        # a subclass that overrides only forward(zsa) never sees the keywords it does not take
        if dropout is not None:
            return self(zsa, members, dropout=dropout)
        return self(zsa) if members is None else self(zsa, members)

    def aggregate(self, zsa: torch.Tensor, aggregate, members: torch.Tensor | None = None,
                  dropout: bool | None = None) -> torch.Tensor:
        """``aggregate`` (a :class:`~mrsq.critics.aggregators.BoundAggregator`) of the members'
        values ``[B, 1]``, in fp32; an aggregator that pools atoms gets :meth:`atoms` instead.
        ``dropout``: False for a dropout critic's deterministic value (planning, diagnostics);
        None: as the module's mode says."""
        if getattr(aggregate, "pools_atoms", False):
            return aggregate(self.atoms(zsa, members, dropout=dropout).float())
        return aggregate(self._values(zsa, members, dropout).float())

    def td_atoms(self, zsa: torch.Tensor, aggregate, members: torch.Tensor | None = None) -> torch.Tensor:
        """The bootstrap value(s) of a TD target ``[B, K]``: here the aggregated value (K = 1)."""
        return self.aggregate(zsa, aggregate, members)

    def regression_loss(self, pred: torch.Tensor, target: torch.Tensor, loss: str = "huber",
                        over_members: str = "mean") -> torch.Tensor:
        """Loss of every member's ``pred [N, B, 1]`` (from :meth:`atoms`) against the shared
        ``target [B, 1]``: ``huber`` (smooth L1, beta 1: MR.Q) or ``mse`` (TD3, SAC), averaged
        over the batch, then averaged (MR.Q) or summed (TD3's ``MSE(Q1) + MSE(Q2)``) over members."""
        if loss == "huber" and over_members == "mean":  # MR.Q's loss, written as MR.Q writes it
            return F.smooth_l1_loss(pred, target.expand_as(pred))
        if loss == "huber":
            per_member = F.smooth_l1_loss(pred, target.expand_as(pred), reduction="none").mean(dim=(1, 2))
        else:
            per_member = (pred - target).square().mean(dim=(1, 2))
        return per_member.mean() if over_members == "mean" else per_member.sum()

    @staticmethod
    def td_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LAP's priority input ``[B]``: the largest over members of |value - target value|."""
        return (pred.mean(-1, keepdim=True) - target.mean(-1, keepdim=True)).abs().amax(0).reshape(-1)

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an ordinary ``nn.Sequential``-like module (same weights, copied)."""
        return _Member(self, i)

    def as_tensordict_module(self) -> TensorDictModule:
        """``zsa [B, D] -> q [B, N, 1]``: batch-first, so it fits a TensorDict of batch size [B]
        (the module itself returns members-first ``[N, B, 1]``, the layout aggregators take)."""
        return TensorDictModule(_BatchFirst(self), in_keys=list(self.spec.in_keys), out_keys=list(self.spec.out_keys))


class _BatchFirst(nn.Module):
    """``[N, B, ...] -> [B, N, ...]`` view of an ensemble's output (shares its parameters)."""

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, zsa: torch.Tensor) -> torch.Tensor:
        return self.ensemble(zsa).transpose(0, 1)


@CRITICS.register("shared_trunk", spec=SharedTrunkCriticSpec,
                  help="N value heads on one shared trunk (shared_layers of the hidden layers computed once)")
class SharedTrunkCritic(EnsembleCritic):
    """:class:`EnsembleCritic` whose spec shares 2 of its 3 hidden layers by default."""


class _Member(nn.Module):
    """One member of an ensemble as plain ``nn.Linear`` layers (for tests and inspection)."""

    def __init__(self, ensemble: EnsembleCritic, i: int) -> None:
        super().__init__()
        self.layers, self.norms = nn.ModuleList(), nn.ModuleList()
        affine = getattr(ensemble, "ln_weights", None) is not None
        for layer_index, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases)):
            j = 0 if layer_index < ensemble.shared else i  # trunk layers belong to every member
            layer = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                layer.weight.copy_(w[j].T)
                layer.bias.copy_(b[j, 0])
            self.layers.append(layer)
            if affine and layer_index < len(ensemble.ln_weights):
                norm = nn.LayerNorm(w.shape[2])
                with torch.no_grad():
                    norm.weight.copy_(ensemble.ln_weights[layer_index][j, 0])
                    norm.bias.copy_(ensemble.ln_biases[layer_index][j, 0])
                self.norms.append(norm)
        self.act, self.layer_norm = ensemble.act, ensemble.layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers[:-1]):
            if len(self.norms):
                x = self.act(self.norms[k](layer(x)))
            else:
                x = ln_act(layer(x), self.act) if self.layer_norm else self.act(layer(x))
        return self.layers[-1](x)
