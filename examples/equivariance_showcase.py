"""Equivariance showcase: every catalog group, its equivariant maps, and a layer that learns.

Run:  python examples/equivariance_showcase.py [--quick]

Prints, for each group of the catalog, the dimension of Hom_G(ρ, ρ) for a mixed
representation, the equivariance error of an EquivariantMLP in float32 and float64, and
then trains a small O(3) MLP on an equivariant vector field.
"""

from __future__ import annotations

import argparse
import time

import torch

import symgraph as sg
from symgraph.groups import GROUPS, Rep, group_from_name
from symgraph.testing import equivariance_error

#: members of the ``C(n)`` and ``D(n)`` families shown with the parameter-free groups
CYCLIC_AND_DIHEDRAL = ("C4", "C6", "D3", "D6")


def group_table(rep_text: str, names: list[str]) -> list[tuple[str, str, int, float, float]]:
    """Rows ``(group, order, dim Hom_G(ρ, ρ), error float32, error float64)``."""
    rows = []
    for name in names:
        group = group_from_name(name)
        rep = Rep(rep_text, group)
        basis = sg.equivariant_basis(rep, rep)
        mlp = sg.nn.EquivariantMLP(rep, rep, hidden="16x0e + 4x1o + 4x1e + 2x2e", bilinear=True)
        errors = []
        for dtype in (torch.float32, torch.float64):
            model = mlp.to(dtype)
            x = torch.randn(32, rep.dim, dtype=dtype)
            errors.append(equivariance_error(model, group, [x], [rep], rep))
        order = str(group.order) if group.is_finite else "∞"
        rows.append((name, order, basis.dim, errors[0], errors[1]))
    return rows


def train_vector_field(steps: int) -> tuple[float, float]:
    """Fit f(v) = |v|² v with an O(3)-equivariant MLP; returns (first loss, last loss)."""
    torch.manual_seed(0)
    mlp = sg.nn.EquivariantMLP("1o", "1o", hidden="16x0e + 8x1o", bilinear=True)
    x = torch.randn(512, 3)
    target = (x * x).sum(-1, keepdim=True) * x
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = (mlp(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer groups and steps (seconds)")
    args = parser.parse_args(argv)
    rep_text = "4x0e + 2x1o + 1x1e + 1x2e"
    names = (
        ["Trivial", "C4", "D3", "SO2", "Octahedral", "SO3", "O3"]
        if args.quick
        else [*GROUPS, *CYCLIC_AND_DIHEDRAL]
    )
    start = time.perf_counter()
    rows = group_table(rep_text, names)
    print(f"Representation ρ = {rep_text}\n")
    print(f"{'group':<16}{'order':>7}{'dim Hom(ρ,ρ)':>14}{'err float32':>14}{'err float64':>14}")
    for name, order, dim, e32, e64 in rows:
        print(f"{name:<16}{order:>7}{dim:>14}{e32:>14.1e}{e64:>14.1e}")
    first, last = train_vector_field(150 if args.quick else 800)
    print(f"\nO(3) MLP fitting f(v) = |v|² v: loss {first:.3f} -> {last:.5f} ({first / last:.0f}x)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return {"rows": rows, "first_loss": first, "last_loss": last}


if __name__ == "__main__":
    main()
