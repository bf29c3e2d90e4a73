"""Benchmark: equivariant-basis solve time and memory, cold and cached.

Run:  python benchmarks/basis.py

For Rep("64x0e + 32x1o + 16x2e") -> itself under SO(3), SO(2) and Octahedral: the block
solver of symgraph (cold: Wigner fits and block solves cleared before each call; cached: a
call after a solve) against the peer method, a dense nullspace solve of the whole
constraint system at once (EMLP-style, without the block decomposition), measured in the
same process. Times are uninstrumented (ours: the median of several calls); peak memory
is the rise of the process's resident set (``VmHWM``) during one call.
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

from symgraph.groups import SO2, SO3, Octahedral, Rep, clear_cache, equivariant_basis  # noqa: E402
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


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="basis solve benchmark")
    parser.add_argument("--irreps", default="64x0e + 32x1o + 16x2e")
    parser.add_argument(
        "--peer-irreps",
        default="16x0e + 8x1o + 4x2e",
        help="smaller representation for the dense peer (its cost grows as d^6)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="calls per median (ours)")
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
    return rows


if __name__ == "__main__":
    main()
