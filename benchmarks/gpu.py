"""Benchmark (CUDA): the fused Triton contraction against the torch paths, torch_scatter, e3nn.

Run on a CUDA machine with Triton installed (``pip install -e '.[triton,scatter]'``):

    python benchmarks/gpu.py                      # full grid, markdown tables on stdout
    python benchmarks/gpu.py --out benchmarks/out/gpu.md
    python benchmarks/gpu.py --cpu-dry-run        # tiny sizes, torch paths on CPU only:
                                                  # proves the script runs, measures nothing

Table 1, the neighbour contraction ``T_i = Σ_{j→i} h_ij ⊗ x_j`` (``[N, A, B]``) on random
graphs whose in-degrees vary around ``k`` (some nodes have none), forward and forward +
backward: ``triton`` (:func:`symgraph.ops.fused.fused_outer_sum`, gather fused), ``padded``
and ``scatter`` (the torch backends of :func:`symgraph.ops.neighbour_outer_sum`) and
``torch_scatter`` (per-edge outer products then ``scatter_add``, when installed). Roofline
columns per size: FLOPs of the forward (``2·E·A·B``), its compulsory bytes (read ``h``,
the gathered rows of ``x``, the indices; write ``T``), their ratio, and per method the
achieved GFLOP/s and GB/s of the forward.

Table 2, whole layers, forward + backward: ``ImplicitSteerableConv`` (backend ``auto``,
which is ``triton`` on CUDA for these irregular graphs, with the default CUDA block of 2^18
edges and with the CPU's 8192; and ``padded``) against the standard e3nn convolution
(spherical harmonics, per-edge tensor-product weights, scatter).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, measure  # noqa: E402
from conv import E3nnConv, irreps_for  # noqa: E402

import symgraph as sg  # noqa: E402
from symgraph.ops import fused  # noqa: E402
from symgraph.ops.contraction import neighbour_outer_sum  # noqa: E402

try:
    import torch_scatter
except ImportError:
    torch_scatter = None

GRID = [(n, k, c) for n in (20_000, 100_000) for k in (16, 48) for c in (32, 64)]
DRY_GRID = [(300, 8, 16)]
LAYER_GRID = [(20_000, 16, 32), (20_000, 32, 64), (100_000, 16, 64)]
DRY_LAYER_GRID = [(200, 8, 16)]


def random_graph(num_nodes: int, degree: int, device: str, seed: int = 0):
    """``(src, dst)``: in-degrees uniform in ``[0, 2k]`` (mean ``k``), edges in random order."""
    gen = torch.Generator().manual_seed(seed)
    degrees = torch.randint(0, 2 * degree + 1, (num_nodes,), generator=gen)
    dst = torch.repeat_interleave(torch.arange(num_nodes), degrees)
    src = torch.randint(0, num_nodes, dst.shape, generator=gen)
    perm = torch.randperm(dst.shape[0], generator=gen)
    return src[perm].to(device), dst[perm].to(device)


def roofline(num_nodes: int, num_edges: int, a: int, b: int, itemsize: int) -> dict[str, float]:
    """Forward FLOPs and compulsory bytes of the contraction."""
    flops = 2.0 * num_edges * a * b
    data = itemsize * (num_edges * a + num_edges * b + num_nodes * a * b)
    index = 8 * (2 * num_edges + num_nodes)
    return {
        "gflop": flops / 1e9,
        "mb": (data + index) / 1e6,
        "flop_per_byte": flops / (data + index),
    }


def contraction_methods(src, dst, num_nodes: int, on_cuda: bool) -> dict[str, Callable]:
    def torch_path(backend):
        return lambda h, x: neighbour_outer_sum(h, x[src], dst, num_nodes, backend=backend)

    methods = {"padded": torch_path("padded"), "scatter": torch_path("scatter")}
    if on_cuda and fused.triton_available():
        methods["triton"] = lambda h, x: fused.fused_outer_sum(
            h, x, src, dst, num_nodes, backend="triton"
        )
    if torch_scatter is not None:

        def per_edge(h, x):
            outer = (h[:, :, None] * x[src][:, None, :]).flatten(1)
            out = torch_scatter.scatter_add(outer, dst, 0, dim_size=num_nodes)
            return out.view(num_nodes, h.shape[1], x.shape[1])

        methods["torch_scatter"] = per_edge
    return methods


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def contraction_table(grid, device: str, dtype: torch.dtype, repeats: int) -> list[str]:
    rows = [
        "| N | k | A=B | E | GFLOP | MB | FLOP/B | method | fwd ms | fwd+bwd ms | peak MiB "
        "| GFLOP/s | GB/s |",
        "|" + "---|" * 13,
    ]
    for num_nodes, degree, channels in grid:
        src, dst = random_graph(num_nodes, degree, device)
        num_edges = dst.shape[0]
        h = torch.randn(num_edges, channels, device=device, dtype=dtype, requires_grad=True)
        x = torch.randn(num_nodes, channels, device=device, dtype=dtype, requires_grad=True)
        roof = roofline(num_nodes, num_edges, channels, channels, h.element_size())
        methods = contraction_methods(src, dst, num_nodes, device.startswith("cuda"))
        for name, fn in methods.items():
            try:
                with torch.no_grad():
                    fwd = measure(lambda fn=fn, h=h, x=x: fn(h, x), repeats, device=device)
                both = measure(
                    lambda fn=fn, h=h, x=x: fn(h, x).sum().backward(), repeats, device=device
                )
            except torch.OutOfMemoryError:
                rows.append(f"| {num_nodes} | {degree} | {channels} | {num_edges} | | | | {name} "
                            "| OOM | OOM | | | |")  # fmt: skip
                torch.cuda.empty_cache()
                continue
            seconds = fwd["time_s"]
            rows.append(
                f"| {num_nodes} | {degree} | {channels} | {num_edges} | {_fmt(roof['gflop'])} "
                f"| {_fmt(roof['mb'])} | {_fmt(roof['flop_per_byte'])} | {name} "
                f"| {_fmt(1e3 * seconds)} | {_fmt(1e3 * both['time_s'])} "
                f"| {_fmt(both['peak_mib'])} | {_fmt(roof['gflop'] / seconds)} "
                f"| {_fmt(roof['mb'] / 1e3 / seconds)} |"
            )
            h.grad = x.grad = None
    return rows


def layer_table(grid, device: str, repeats: int) -> list[str]:
    rows = ["| N | k | C | model | fwd+bwd ms | peak MiB |", "|---|---|---|---|---|---|"]
    for num_nodes, degree, channels in grid:
        src, dst = random_graph(num_nodes, degree, device)
        edge_index = torch.stack([src, dst])
        pos = torch.randn(num_nodes, 3, device=device)
        irreps = irreps_for(channels)
        ours = sg.nn.ImplicitSteerableConv(irreps, irreps, group=sg.groups.O3())
        models = {
            "symgraph auto": ours,
            "symgraph auto, 8192-edge blocks": sg.nn.ImplicitSteerableConv(
                irreps, irreps, group=sg.groups.O3(), block_edges=8192
            ),
            "symgraph padded": sg.nn.ImplicitSteerableConv(
                irreps, irreps, group=sg.groups.O3(), backend="padded"
            ),
            # the radial network as wide as our kernel's hidden layer, as in conv.py
            "e3nn": E3nnConv(irreps, width=ours.kernel.rep_hidden.dim),
        }
        for name, model in models.items():
            model = model.to(device)
            x = torch.randn(num_nodes, sg.Rep(irreps).dim, device=device)

            def step(model=model, x=x, pos=pos, edge_index=edge_index):
                model(x, pos, edge_index).square().sum().backward()

            try:
                result = measure(step, repeats, device=device)
            except torch.OutOfMemoryError:
                rows.append(f"| {num_nodes} | {degree} | {channels} | {name} | OOM | |")
                torch.cuda.empty_cache()
                continue
            rows.append(
                f"| {num_nodes} | {degree} | {channels} | {name} "
                f"| {_fmt(1e3 * result['time_s'])} | {_fmt(result['peak_mib'])} |"
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes, torch on CPU")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--layers-only", action="store_true", help="only Table 2")
    args = parser.parse_args(argv)
    if args.cpu_dry_run:
        device, grid, layers, repeats = "cpu", DRY_GRID, DRY_LAYER_GRID, 1
    elif torch.cuda.is_available():
        device, grid, layers, repeats = "cuda", GRID, LAYER_GRID, args.repeats
    else:
        sys.exit("benchmarks/gpu.py needs a CUDA device (or --cpu-dry-run to check the script)")
    if device == "cuda" and not fused.triton_available():
        print("note: Triton is not installed: the 'triton' rows are missing", file=sys.stderr)
    title = torch.cuda.get_device_name() if device == "cuda" else machine_line()
    lines = [
        f"# Fused contraction benchmark: {title}",
        f"torch {torch.__version__}, dtype {args.dtype}, median of {repeats}",
        "",
        *(
            []
            if args.layers_only
            else [
                "## Neighbour contraction (Table 1)",
                "",
                *contraction_table(grid, device, getattr(torch, args.dtype), repeats),
                "",
            ]
        ),
        "## Layers, forward + backward, float32 (Table 2)",
        "",
        *layer_table(layers, device, repeats),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
