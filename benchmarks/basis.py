"""Benchmark: equivariant-basis solve time and memory, cold and cached.

Run:  python benchmarks/basis.py

For Rep("64x0e + 32x1o + 16x2e") -> itself under SO(3), SO(2) and Octahedral: the block
solver of symgraph (cold: empty cache; cached: second call) against the peer method, a
dense nullspace solve of the whole constraint system at once (EMLP-style, without the
block decomposition), measured in the same process. Peak memory is the traced Python
allocation peak (tracemalloc) plus torch CPU allocations reported by the profiler.
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import torch

from symgraph.groups import SO2, SO3, Octahedral, Rep, clear_cache, equivariant_basis
from symgraph.groups.wigner import _fit


def _peak_bytes(fn) -> tuple[float, int, object]:
    """Run ``fn`` once; (seconds, peak bytes of CPU tensors and Python objects, result)."""
    tracemalloc.start()
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    torch_peak = max((e.cpu_memory_usage for e in prof.key_averages()), default=0)
    return seconds, python_peak + max(torch_peak, 0), result


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
    args = parser.parse_args(argv)
    rows = []
    for group in (SO3(), SO2(), Octahedral()):
        rep = Rep(args.irreps, group)
        clear_cache()
        _fit.cache_clear()
        cold_s, cold_mem, basis = _peak_bytes(lambda rep=rep: equivariant_basis(rep, rep))
        warm_s, warm_mem, _ = _peak_bytes(lambda rep=rep: equivariant_basis(rep, rep))
        small = Rep(args.peer_irreps, group)
        clear_cache()
        ours_small_s, _, ours_small = _peak_bytes(
            lambda small=small: equivariant_basis(small, small)
        )
        peer_s, peer_mem, peer_dim = _peak_bytes(lambda small=small: dense_nullspace(small))
        assert peer_dim == ours_small.dim, (peer_dim, ours_small.dim)
        rows.append(
            dict(
                group=group.name,
                dim=basis.dim,
                cold_s=cold_s,
                cold_mb=cold_mem / 2**20,
                cached_s=warm_s,
                cached_mb=warm_mem / 2**20,
                small_dim=ours_small.dim,
                ours_small_s=ours_small_s,
                peer_s=peer_s,
                peer_mb=peer_mem / 2**20,
            )
        )
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
        f" torch {torch.__version__}"
    )
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
