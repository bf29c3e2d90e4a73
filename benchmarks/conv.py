"""Benchmark: ImplicitSteerableConv against PyG NNConv and an e3nn tensor-product convolution.

Run:  python benchmarks/conv.py            (full grid, skips configurations over --max-gib)
      python benchmarks/conv.py --quick    (N=4000, k=16, C=32 only)

Forward + backward time and peak memory, all three in one process, timed in interleaved
rounds (one step of each per round; the time ratios are medians of per-round ratios, which
cancels most of a shared machine's drift), on random
point clouds with kNN graphs. Same features for all: ours and e3nn use the irreps
``{C/2}x0e + {C/6}x1o`` (dimension ≈ C); NNConv uses that many scalar channels in and out.
Same kernel-MLP width: NNConv's edge network and e3nn's radial network have as many hidden
units as our kernel's hidden representation has dimensions. Edge inputs: 8 Gaussian radial
features (+ the relative vector for NNConv, + spherical harmonics l ≤ 2 for e3nn and ours).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn
from torch_geometric.nn import NNConv
from torch_geometric.utils import scatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, measure_interleaved, paired_ratio  # noqa: E402

import symgraph as sg  # noqa: E402
from symgraph.graph import knn_graph  # noqa: E402
from symgraph.nn.embedding import RadialEmbedding  # noqa: E402


def irreps_for(channels: int) -> str:
    return f"{channels // 2}x0e + {max(channels // 6, 1)}x1o"


class E3nnConv(nn.Module):
    """The standard e3nn convolution: SH of the edge, per-edge TP weights from a radial MLP."""

    def __init__(self, irreps: str, width: int, lmax: int = 2) -> None:
        super().__init__()
        self.sh_irreps = o3.Irreps.spherical_harmonics(lmax)
        self.tp = o3.FullyConnectedTensorProduct(
            irreps, self.sh_irreps, irreps, shared_weights=False
        )
        self.radial = RadialEmbedding(8, 5.0)
        self.fc = FullyConnectedNet(
            [8, width, width, self.tp.weight_numel], torch.nn.functional.silu
        )

    def forward(self, x, pos, edge_index):
        src, dst = edge_index
        rel = pos[src] - pos[dst]
        sh = o3.spherical_harmonics(self.sh_irreps, rel, normalize=True)
        weight = self.fc(self.radial(rel.norm(dim=-1)))
        return scatter(self.tp(x[src], sh, weight), dst, dim=0, dim_size=x.shape[0], reduce="sum")


class PygNNConv(nn.Module):
    """PyG's NNConv (edge-conditioned convolution) with an MLP edge network."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.radial = RadialEmbedding(8, 5.0)
        edge_net = nn.Sequential(
            nn.Linear(11, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, channels * channels),
        )  # fmt: skip
        self.conv = NNConv(channels, channels, edge_net, aggr="add")

    def forward(self, x, pos, edge_index):
        src, dst = edge_index
        rel = pos[src] - pos[dst]
        edge_attr = torch.cat([rel, self.radial(rel.norm(dim=-1))], dim=-1)
        return self.conv(x, edge_index, edge_attr)


class Ours(nn.Module):
    def __init__(self, irreps: str) -> None:
        super().__init__()
        self.conv = sg.nn.ImplicitSteerableConv(irreps, irreps, group=sg.groups.O3())

    def forward(self, x, pos, edge_index):
        return self.conv(x, pos, edge_index)


def step(model: nn.Module, x, pos, edge_index):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(x, pos, edge_index)
        out.square().mean().backward()

    return run


def nnconv_bytes(num_edges: int, channels: int) -> int:
    return num_edges * channels * channels * 4 * 4  # kernel, its grad, message and buffers


def bench(num_nodes: int, k: int, channels: int, repeats: int, max_gib: float) -> list[dict]:
    """The three layers timed in interleaved rounds (:func:`common.measure_interleaved`)."""
    torch.manual_seed(0)
    pos = torch.randn(num_nodes, 3) * (num_nodes / 1000) ** (1 / 3)
    edge_index = knn_graph(pos, k)
    irreps = irreps_for(channels)
    dim = o3.Irreps(irreps).dim
    ours = Ours(irreps)
    width = ours.conv.kernel.rep_hidden.dim
    models = {"symgraph": ours, "NNConv": PygNNConv(dim, width), "e3nn": E3nnConv(irreps, width)}
    if nnconv_bytes(edge_index.shape[1], dim) > max_gib * 2**30:
        del models["NNConv"]
    x_irreps = torch.randn(num_nodes, dim)
    steps = {name: step(model, x_irreps, pos, edge_index) for name, model in models.items()}
    stats = measure_interleaved(steps, repeats=repeats)
    skipped = dict(time_s=float("nan"), times=[float("nan")] * repeats, peak_mib=float("nan"))
    rows = [dict(model=name, **stats.get(name, skipped)) for name in ("symgraph", "NNConv", "e3nn")]
    return [dict(N=num_nodes, k=k, C=channels, dim=dim, **r) for r in rows]


def _config(text: str) -> tuple[int, int, int]:
    """``--configs`` item ``"N,k,C"``: three positive ints."""
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected N,k,C (three positive ints), got {text!r}")
    num_nodes, k, channels = (int(p) for p in parts)
    return num_nodes, k, channels


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="ImplicitSteerableConv vs NNConv vs e3nn")
    parser.add_argument("--quick", action="store_true", help="only N=4000, k=16, C=32")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--max-gib", type=float, default=6.0, help="skip NNConv above this")
    parser.add_argument(
        "--configs", nargs="*", default=None, metavar="N,k,C", type=_config,
        help="only these configurations, e.g. 4000,16,32 16000,16,32",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.configs:
        grid = args.configs
    elif args.quick:
        grid = [(4000, 16, 32)]
    else:
        grid = list(itertools.product([1000, 4000, 16000], [8, 16, 32], [16, 32, 64]))
    print(f"machine: {machine_line()}")
    print(
        "| N | k | C (dim) | symgraph ms | NNConv ms | e3nn ms | NNConv/ours time | "
        "e3nn/ours time | symgraph MiB | NNConv MiB | e3nn MiB | ours/NNConv memory |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for n, k, c in grid:
        rows = {r["model"]: r for r in bench(n, k, c, args.repeats, args.max_gib)}
        results.extend(rows.values())
        o, p, e = rows["symgraph"], rows["NNConv"], rows["e3nn"]
        ratio_p = paired_ratio(p["times"], o["times"])
        ratio_e = paired_ratio(e["times"], o["times"])
        print(
            f"| {n} | {k} | {c} ({o['dim']}) | {o['time_s'] * 1e3:.1f} | {p['time_s'] * 1e3:.1f} | "
            f"{e['time_s'] * 1e3:.1f} | {ratio_p:.1f}x | {ratio_e:.1f}x | {o['peak_mib']:.0f} | "
            f"{p['peak_mib']:.0f} | {e['peak_mib']:.0f} | {o['peak_mib'] / p['peak_mib']:.3f} |",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()
