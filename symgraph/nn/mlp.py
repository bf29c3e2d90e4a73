"""Equivariant multilayer perceptron: EquivariantLinear layers and equivariant nonlinearities."""

from __future__ import annotations

from e3nn import o3
from torch import Tensor, nn

from symgraph.checks import is_int
from symgraph.groups import IrrepBlock, MatrixGroup, Rep, as_rep
from symgraph.nn.activations import Gate, NormActivation, gate_rep
from symgraph.nn.bilinear import EquivariantBilinear
from symgraph.nn.linear import EquivariantLinear

__all__ = ["EquivariantMLP", "EquivariantMLPLayer"]

_NONLINEARITIES = ("gate", "norm")
_BILINEAR_MUL = 4


class EquivariantMLPLayer(nn.Module):
    """One hidden layer: ``act(W x [+ B(P x, P x)])``.

    The optional bilinear term multiplies a small projection ``P x`` (each irrep type of the
    hidden representation, at most 4 copies) with itself, so the layer can form invariants
    such as ``|v|²`` and higher orders such as ``v ⊗ v`` from its input, which linear maps
    and gates alone cannot.

    Shapes:
        ``x [..., rep_in.dim] -> [..., rep_out.dim]``.
    """

    def __init__(
        self, rep_in: Rep, rep_out: Rep, nonlinearity: str, bias: bool, bilinear: bool
    ) -> None:
        super().__init__()
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"nonlinearity: expected one of {_NONLINEARITIES}, got {nonlinearity!r}"
            )
        self.rep_in, self.rep_out = rep_in, rep_out
        pre = gate_rep(rep_out) if nonlinearity == "gate" else rep_out
        self.linear = EquivariantLinear(rep_in, pre, bias=bias)
        self.project = self.bilinear = None
        small = Rep(
            group=rep_out.group,
            blocks=[
                (min(m, _BILINEAR_MUL), b) for m, b in rep_out.blocks if isinstance(b, IrrepBlock)
            ],
        )
        if bilinear and small.dim:
            self.project = EquivariantLinear(rep_in, small, bias=bias)
            self.bilinear = EquivariantBilinear(small, small, pre)
        self.activation = Gate(rep_out) if nonlinearity == "gate" else NormActivation(rep_out)

    def reset_parameters(self) -> None:
        for module in (self.linear, self.project, self.bilinear, self.activation):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        if self.bilinear is not None:
            p = self.project(x)
            y = y + self.bilinear(p, p)
        return self.activation(y)


class EquivariantMLP(nn.Module):
    """``rep_in -> hidden -> … -> hidden -> rep_out`` with equivariant nonlinearities.

    Args:
        rep_in: input representation.
        rep_out: output representation.
        hidden: hidden representation (e.g. ``"32x0e + 16x1o + 8x2e"``, or
            ``Rep.regular(G, 8)`` for pointwise nonlinearities on regular features).
        layers: number of hidden layers (``layers + 1`` linear maps).
        group: the group when representations are strings (default O(3)).
        nonlinearity: ``"gate"`` (``0e`` scalars through SiLU, ``0o`` through tanh, sigmoid
            gates for the other blocks) or ``"norm"`` (norm nonlinearity).
        bias: invariant biases in every linear layer.
        bilinear: add an equivariant bilinear (tensor-product) term to each hidden layer,
            as in EMLP; needed when invariants must be built from non-scalar inputs.

    Shapes:
        ``x [..., rep_in.dim] -> [..., rep_out.dim]``.
    """

    def __init__(
        self,
        rep_in: Rep | str | o3.Irreps,
        rep_out: Rep | str | o3.Irreps,
        hidden: Rep | str | o3.Irreps = "32x0e + 8x1o + 8x1e + 4x2e",
        layers: int = 2,
        group: MatrixGroup | str | None = None,
        nonlinearity: str = "gate",
        bias: bool = True,
        bilinear: bool = False,
    ) -> None:
        super().__init__()
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"nonlinearity: expected one of {_NONLINEARITIES}, got {nonlinearity!r}"
            )
        if not is_int(layers) or layers < 0:
            raise ValueError(f"layers: expected a non-negative int, got {layers!r}")
        if group is None and isinstance(rep_in, Rep):
            group = rep_in.group
        self.rep_in = as_rep(rep_in, group, "rep_in")
        group = self.rep_in.group
        self.rep_out = as_rep(rep_out, group, "rep_out")
        self.rep_hidden = as_rep(hidden, group, "hidden")
        self.nonlinearity = nonlinearity
        modules: list[nn.Module] = []
        current = self.rep_in
        for _ in range(layers):
            modules.append(
                EquivariantMLPLayer(current, self.rep_hidden, nonlinearity, bias, bilinear)
            )
            current = self.rep_hidden
        modules.append(EquivariantLinear(current, self.rep_out, bias=bias))
        self.net = nn.Sequential(*modules)

    @property
    def irreps_in(self) -> o3.Irreps | None:
        return self.rep_in.irreps

    @property
    def irreps_out(self) -> o3.Irreps | None:
        return self.rep_out.irreps

    @property
    def last_linear(self) -> EquivariantLinear:
        """The final linear layer (the implicit kernel contracts through it)."""
        return self.net[-1]

    def reset_parameters(self) -> None:
        for module in self.net:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., rep_in.dim] -> [..., rep_out.dim]``."""
        self.rep_in.check_features(x, "x")
        return self.net(x)
