"""Potential-energy models for :class:`~symgraph.noether.quantities.TotalEnergy`.

All follow PyG's energy-model signature ``model(z [N], pos [N, 3], batch [N]) -> [B]``:

- :class:`AsePotential` wraps any ase calculator (rdkit MMFF94 from
  :mod:`symgraph.data.md_simulation`, EMT, ...) as a differentiable torch function: the
  energy comes from the calculator, its gradient is minus the calculator's forces. It is
  differentiable once (enough for tailoring, not for second-order meta-gradients).
- :class:`PotentialsByMolecule` dispatches each molecule of a batch of different molecules
  to the potential of its species (e.g. one :class:`AsePotential` per molecule);
- :class:`LennardJones` is a pure-torch pair potential, differentiable to any order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from symgraph.checks import check_batch, check_positions, is_real

__all__ = ["AsePotential", "LennardJones", "PotentialsByMolecule"]


class _CalculatorEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pos: Tensor, batch: Tensor, num_graphs: int, fn: Any) -> Tensor:
        energies, forces = fn(pos.detach(), batch, num_graphs)
        ctx.save_for_backward(forces, batch)
        return energies

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_e: Tensor) -> tuple[Tensor, None, None, None]:
        forces, batch = ctx.saved_tensors
        return -forces * grad_e[batch][:, None], None, None, None


class AsePotential(nn.Module):
    """Potential energy of copies of one molecule from an ase calculator -> ``[B]`` (eV).

    Args:
        atoms: an ``ase.Atoms`` template (its atomic numbers fix the molecule).
        calculator: an ase calculator; default: ``atoms.calc``.

    Every molecule in the batch must have the template's atomic numbers in the same order.
    The calculator runs on the CPU in float64; results are cast back to ``pos``'s dtype.
    """

    def __init__(self, atoms: Any, calculator: Any = None) -> None:
        super().__init__()
        calculator = calculator if calculator is not None else getattr(atoms, "calc", None)
        if calculator is None:
            raise ValueError("calculator: expected an ase calculator (or atoms.calc), got None")
        self.atoms = atoms.copy()
        self.atoms.calc = calculator
        self.register_buffer(
            "numbers",
            torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long),
            persistent=False,
        )

    def _evaluate(self, pos: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        n = len(self.atoms)
        coords = pos.cpu().double().numpy().reshape(num_graphs, n, 3)
        energies = np.empty(num_graphs)
        forces = np.empty_like(coords)
        for b in range(num_graphs):
            self.atoms.positions = coords[b]
            energies[b] = self.atoms.get_potential_energy()
            forces[b] = self.atoms.get_forces()
        e = torch.as_tensor(energies, dtype=pos.dtype, device=pos.device)
        f = torch.as_tensor(forces.reshape(-1, 3), dtype=pos.dtype, device=pos.device)
        return e, f

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        pos = check_positions(pos, "pos")
        batch = check_batch(batch, pos.shape[0])
        n = len(self.atoms)
        if pos.shape[0] % n:
            raise ValueError(
                f"pos: expected a multiple of {n} atoms (copies of the template molecule), "
                f"got {pos.shape[0]}"
            )
        b = pos.shape[0] // n
        if not torch.equal(z.long().cpu(), self.numbers.repeat(b).cpu()):
            raise ValueError(
                "z: expected the template's atomic numbers "
                f"{self.numbers.tolist()} repeated per molecule, got {z.tolist()[:n]}..."
            )
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        expected = torch.arange(b, device=pos.device).repeat_interleave(n)
        if not torch.equal(batch, expected):
            raise ValueError(f"batch: expected {b} molecules of {n} atoms each, in order")
        return _CalculatorEnergy.apply(pos, batch, b, self._evaluate)


class PotentialsByMolecule(nn.Module):
    """Potential energy of a batch of *different* molecules -> ``[B]``.

    Each molecule is recognised by its atomic numbers in order (``z`` of its atoms) and
    passed to the potential registered for them.

    Args:
        potentials: ``[(z [n], potential), ...]``: the atomic numbers of each molecule and
            its potential ``potential(z, pos, batch) -> [B']`` (e.g. :class:`AsePotential`).

    Raises:
        ValueError: two potentials registered for the same atomic numbers; at call time, a
            molecule whose atomic numbers match none of them.
    """

    def __init__(self, potentials: list[tuple[Tensor, nn.Module]]) -> None:
        super().__init__()
        self.keys: list[tuple[int, ...]] = []
        for z, _ in potentials:
            key = tuple(int(v) for v in torch.as_tensor(z).reshape(-1).tolist())
            if key in self.keys:
                raise ValueError(
                    f"potentials: two potentials for the same atomic numbers {list(key)}; "
                    "molecules must differ in their atomic numbers (in order)"
                )
            self.keys.append(key)
        self.potentials = nn.ModuleList(p for _, p in potentials)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        pos, batch, b = _checked_batch(pos, batch)
        counts = torch.bincount(batch, minlength=b).tolist()
        energies, start = [], 0
        for count in counts:
            sl = slice(start, start + count)
            key = tuple(z[sl].tolist())
            if key not in self.keys:
                raise ValueError(
                    f"z: no potential for a molecule with atomic numbers {list(key)}; "
                    f"registered: {[list(k) for k in self.keys]}"
                )
            potential = self.potentials[self.keys.index(key)]
            energies.append(potential(z[sl], pos[sl], None).reshape(1))
            start += count
        return torch.cat(energies) if energies else pos.new_zeros(0)


def _checked_batch(pos: Tensor, batch: Tensor | None) -> tuple[Tensor, Tensor, int]:
    """``(pos [N, 3], batch [N], number of molecules)`` checked; no batch: one molecule."""
    pos = check_positions(pos, "pos")
    batch = check_batch(batch, pos.shape[0])
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    return pos, batch, int(batch.max()) + 1 if batch.numel() else 0


def _pairs_within_molecules(batch: Tensor, num_molecules: int) -> tuple[Tensor, Tensor]:
    """Atom pairs ``i < j`` of the same molecule, ``([P], [P])``, for a sorted ``batch``:
    one upper-triangle pattern per molecule size (a flattened trajectory repeats a few
    sizes), so the cost is the pairs within molecules, not all pairs of ``N`` atoms."""
    counts = torch.bincount(batch, minlength=num_molecules)
    offsets = torch.cumsum(counts, 0) - counts
    rows, cols = [], []
    for size in torch.unique(counts).tolist():
        if size < 2:
            continue
        ti, tj = torch.triu_indices(size, size, 1, device=batch.device)
        start = offsets[counts == size][:, None]  # [molecules of this size, 1]
        rows.append((start + ti).flatten())
        cols.append((start + tj).flatten())
    if not rows:
        empty = batch.new_zeros(0)
        return empty, empty
    return torch.cat(rows), torch.cat(cols)


class LennardJones(nn.Module):
    """``U = Σ_{i<j} 4ε[(σ/r)¹² − (σ/r)⁶]`` over all pairs of each molecule -> ``[B]``.

    Args:
        epsilon: well depth (energy unit).
        sigma: zero-crossing distance (Å).
    """

    def __init__(self, epsilon: float = 0.01, sigma: float = 1.0) -> None:
        super().__init__()
        for name, value in (("epsilon", epsilon), ("sigma", sigma)):
            if not is_real(value) or not (0 < value < math.inf):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        self.epsilon = float(epsilon)
        self.sigma = float(sigma)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        pos, batch, b = _checked_batch(pos, batch)
        i, j = _pairs_within_molecules(batch, b)
        r2 = ((pos[i] - pos[j]) ** 2).sum(-1)
        s6 = (self.sigma**2 / r2) ** 3
        pair = 4.0 * self.epsilon * (s6 * s6 - s6)
        return pos.new_zeros(b).index_add(0, batch[i], pair)
