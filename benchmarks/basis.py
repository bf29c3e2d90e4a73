"""Benchmark: equivariant-basis solve time and memory, cold and cached.

Run:  python benchmarks/basis.py

For Rep("64x0e + 32x1o + 16x2e") -> itself under SO(3), SO(2) and Octahedral: the block
solver of symgraph (cold: Wigner fits and block solves cleared before each call; cached: a
call after a solve), and the peer method, a dense nullspace solve of the whole
constraint system at once (EMLP-style, without the block decomposition), measured in the
same process. The peer's cost grows as d⁶, so it runs on the smaller
ρ' = ``--peer-irreps`` (default "16x0e + 8x1o + 4x2e"), where ours is timed again. Times
are uninstrumented (ours: the median of several calls); peak memory is the rise of the
process's resident set (``VmHWM``) during one call.

A second table solves Hom_G(regular, regular) of finite groups (and, with ``--bilinear``,
the bilinear map regular x 1o -> regular), where symgraph averages over the group's
elements, against the SVD of the generator constraints of the same block (symgraph's
method for small blocks and before session 21); both give the same canonical basis.

With ``--orbits``, a third table times blocks that the group permutes (regular
representations and their products), which symgraph reads off the orbits of index pairs
since session 24, against the group average it used before; and pairs of which only one
block is permuted (``regular ⊗ 1o -> regular``, ``1o -> regular``, ...), which symgraph now
solves per orbit of that block's coordinates, against the solver they had before (the group
average where cheaper, else the constraint SVD), in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, timed_peak  # noqa: E402

from symgraph.groups import (  # noqa: E402
    SO2,
    SO3,
    Icosahedral,
    Octahedral,
    Rep,
    bilinear_basis,
    clear_cache,
    equivariant_basis,
)
from symgraph.groups.basis import (  # noqa: E402
    _averaging_is_cheaper,
    _canonical,
    _solve_by_averaging,
    _solve_by_constraints,
    block_hom_basis,
)
from symgraph.groups.rep import ProductBlock  # noqa: E402
from symgraph.groups.wigner import _fit  # noqa: E402


def cold_solve(rep: Rep):
    """A call that solves from scratch: block solves and Wigner fits cleared first."""

    def run():
        clear_cache()
        _fit.cache_clear()
        return equivariant_basis(rep, rep)

    return run


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_nullspace(rep: Rep) -> int:
    """Peer: one SVD of the full constraint system ``[k d², d²]`` (no block structure)."""
    group = rep.group
    gens = []
    if len(group.discrete_generators):
        gens.append(rep.rho(group.discrete_generators))
    if len(group.lie_generators):
        gens.append(rep.drho(group.lie_generators))
    mats = torch.cat(gens)
    d = rep.dim
    eye = torch.eye(d, dtype=torch.float64)
    rows = [
        torch.kron(m, eye) - torch.kron(eye, m.T.contiguous()) for m in mats
    ]  # vec(rho W - W rho)
    constraints = torch.cat(rows)
    s = torch.linalg.svdvals(constraints)
    return int((s < 1e-8 * s.max()).sum()) + max(0, d * d - s.numel())


_PEER_MAX_UNKNOWNS = 4000  # the constraint SVD grows as (d_in d_out)^3: hours beyond this


def regular_rows(bilinear: bool) -> list[dict]:
    """Cold solves of regular-representation blocks: ours against the constraint SVD."""
    rows = []
    for group in (Octahedral(), Icosahedral()):
        reg, vector = Rep.regular(group), Rep("1o", group)
        cases = [("regular -> regular", reg.blocks[0][1], cold_solve(reg))]
        if bilinear:
            product = ProductBlock(reg, vector)

            def solve_bilinear(reg=reg, vector=vector):
                clear_cache()
                return bilinear_basis(reg, vector, reg)

            cases.append(("regular x 1o -> regular", product, solve_bilinear))
        block_out = reg.blocks[0][1]
        for label, block_in, ours in cases:
            seconds, mib, basis = timed_peak(ours)
            row = dict(group=group.name, case=label, dim=basis.dim, ours_s=seconds, ours_mb=mib)
            if block_in.dim * block_out.dim <= _PEER_MAX_UNKNOWNS:
                peer_s, peer_mb, peer = timed_peak(
                    lambda g=group, a=block_in, b=block_out: _solve_by_constraints(g, a, b)
                )
                ours_block = basis.pairs[0].basis if hasattr(basis, "pairs") else (
                    basis.triples[0].basis.reshape(peer.shape)
                )  # fmt: skip
                assert (ours_block - peer).abs().max() < 1e-10, "the two solves differ"
                row.update(peer_s=peer_s, peer_mb=peer_mb)
            rows.append(row)
    return rows


def previous_solve(group, block_in, block_out):
    """``(basis, solver)``: a pair solved as before the orbit solvers, as symgraph still
    solves pairs with no permuted block: the canonical group average where it is cheaper
    (and succeeds), else the constraint SVD."""
    if _averaging_is_cheaper(group, block_in.dim, block_out.dim):
        basis = _solve_by_averaging(group, block_in, block_out)
        if basis is not None:
            return _canonical(basis), "group average"
    return _solve_by_constraints(group, block_in, block_out), "constraint SVD"


def orbit_rows() -> list[dict]:
    """Cold solves of permuted blocks, ours (orbits) against the solver used before them:
    both blocks permuted (before: the group average) and one block permuted."""
    rows = []
    octahedral, icosahedral = Octahedral(), Icosahedral()

    def block(text, group):
        parts = [Rep.regular(group) if p == "regular" else Rep(p, group) for p in text.split(" x ")]
        return ProductBlock(*parts) if len(parts) == 2 else parts[0].blocks[0][1]

    cases = [
        (octahedral, "regular", "regular"),
        (icosahedral, "regular", "regular"),
        (octahedral, "regular x regular", "regular"),
        (octahedral, "regular x 1o", "regular"),
        (icosahedral, "regular x 1o", "regular"),
        (icosahedral, "1o", "regular"),
        (icosahedral, "regular", "2e"),
        (icosahedral, "1o x 2e", "regular"),
        (octahedral, "regular x regular", "1o"),
    ]
    for group, text_in, text_out in cases:
        block_in, block_out = block(text_in, group), block(text_out, group)

        def ours(g=group, a=block_in, b=block_out):
            clear_cache()
            return block_hom_basis(g, a, b)

        seconds, mib, basis = timed_peak(ours)
        peer_s, peer_mb, (peer, path) = timed_peak(
            lambda g=group, a=block_in, b=block_out: previous_solve(g, a, b)
        )
        assert (basis - peer).abs().max() < 1e-10, "the two solves differ"
        rows.append(dict(group=group.name, case=f"{text_in} -> {text_out}", dim=basis.shape[0],
                         ours_s=seconds, ours_mb=mib, peer=path, peer_s=peer_s,
                         peer_mb=peer_mb))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="basis solve benchmark")
    parser.add_argument("--irreps", default="64x0e + 32x1o + 16x2e")
    parser.add_argument(
        "--peer-irreps",
        default="16x0e + 8x1o + 4x2e",
        help="smaller representation for the dense peer (its cost grows as d^6)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="calls per median (ours)")
    parser.add_argument(
        "--bilinear",
        action="store_true",
        help="also time the bilinear map regular x 1o -> regular (the peer SVD takes minutes)",
    )
    parser.add_argument(
        "--orbits",
        action="store_true",
        help="also time permuted blocks against the solvers used before (about 2 minutes)",
    )
    args = parser.parse_args(argv)
    rows = []
    for group in (SO3(), SO2(), Octahedral()):
        rep, small = Rep(args.irreps, group), Rep(args.peer_irreps, group)
        _, cold_mem, basis = timed_peak(cold_solve(rep))
        cold_s = median_seconds(cold_solve(rep), args.repeats)
        warm_s = median_seconds(lambda rep=rep: equivariant_basis(rep, rep), 20 * args.repeats)
        ours_small_s = median_seconds(cold_solve(small), args.repeats)
        ours_small = cold_solve(small)()
        peer_s, peer_mem, peer_dim = timed_peak(lambda small=small: dense_nullspace(small))
        assert peer_dim == ours_small.dim, (peer_dim, ours_small.dim)
        rows.append(
            dict(
                group=group.name,
                dim=basis.dim,
                cold_s=cold_s,
                cold_mb=cold_mem,
                cached_s=warm_s,
                small_dim=ours_small.dim,
                ours_small_s=ours_small_s,
                peer_s=peer_s,
                peer_mb=peer_mem,
            )
        )
    print(machine_line())
    print(f"\nHom_G(ρ, ρ) for ρ = {args.irreps} (dim {Rep(args.irreps).dim})\n")
    print(
        "| group | dim Hom | cold (s) | cold peak (MiB) | cached (s) | peer ρ' dim Hom | "
        "ours on ρ' (s) | dense peer on ρ' (s) | peer peak (MiB) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['group']} | {r['dim']} | {r['cold_s']:.3f} | {r['cold_mb']:.1f} | "
            f"{r['cached_s']:.5f} | {r['small_dim']} | {r['ours_small_s']:.4f} | "
            f"{r['peer_s']:.3f} | {r['peer_mb']:.1f} | {r['peer_s'] / r['ours_small_s']:.0f}x |"
        )
    regular = regular_rows(args.bilinear)
    print("\nRegular representations, one cold solve each\n")
    print("| group | map | dim Hom | ours (s) | ours peak (MiB) | constraint SVD (s) | "
          "SVD peak (MiB) | speed-up |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in regular:
        peer = (
            f"{r['peer_s']:.3f} | {r['peer_mb']:.1f} | {r['peer_s'] / r['ours_s']:.0f}x"
            if "peer_s" in r
            else "not run (hours) | — | —"
        )
        print(
            f"| {r['group']} | {r['case']} | {r['dim']} | {r['ours_s']:.3f} | "
            f"{r['ours_mb']:.1f} | {peer} |"
        )
    orbits = orbit_rows() if args.orbits else []
    if orbits:
        print("\nPermuted blocks, one cold solve each (ours: orbits)\n")
        print("| group | map | dim Hom | ours (s) | ours peak (MiB) | before: solver | "
              "before (s) | before peak (MiB) | speed-up |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for r in orbits:
            print(
                f"| {r['group']} | {r['case']} | {r['dim']} | {r['ours_s']:.4f} | "
                f"{r['ours_mb']:.1f} | {r['peer']} | {r['peer_s']:.3f} | {r['peer_mb']:.1f} | "
                f"{r['peer_s'] / r['ours_s']:.0f}x |"
            )
    return rows + regular + orbits


if __name__ == "__main__":
    main()
