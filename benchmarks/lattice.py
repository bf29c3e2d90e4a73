"""Benchmark: ImplicitSteerableConv on a lattice -- fast path vs message passing vs Conv2d.

Run:  python benchmarks/lattice.py            (128x128 periodic lattice, batches 1 and 8)
      python benchmarks/lattice.py --quick    (64x64, batch 2, < 2 min)
      python benchmarks/lattice.py --device cuda --batches 1,8,64   (on a GPU)

Forward + backward (sum of squares of the output) of one layer on random fields, three
ways in one process: the lattice fast path (``conv(..., lattice=lattice)``: the implicit
kernel evaluated once at the 9 stencil offsets, one ``conv2d``), the message-passing path
(the same layer and graph without ``lattice=``), and a plain ``torch.nn.Conv2d`` with as
many channels as the representation has dimensions and the same 3x3 kernel, with circular
padding (the periodic lattice's boundary). "C = 32" is the representation
``8x0e + 8x1o`` under C4 (8 scalars and 8 in-plane vectors stored as 3D ``1o`` features:
8 + 24 = 32 dimensions), in and out; ``Conv2d(32, 32, 3)``. The fast path takes node
features ``[B * H * W, 32]`` in ``field_to_nodes`` order, Conv2d a ``[B, 32, H, W]`` field
(PyTorch's default, channels-first; the same Conv2d on a channels-last copy of the field is
timed too, for reference: the goal's ratio is to the plain one).

The fast path and Conv2d (plain and channels-last) run in interleaved rounds (the machine may
be shared), message passing in ``--mp-rounds`` rounds of its own; the table gives the
median wall time and the median CPU time of the process (less sensitive to other load)
per forward + backward, the ratios to Conv2d, and the peak extra memory of one call. The
largest difference between the fast path's and message passing's outputs is checked in
the same run. Results: ``benchmarks/out/lattice.json`` (``--quick``: ``lattice_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, measure_interleaved, paired_ratio  # noqa: E402

from symgraph.groups import C  # noqa: E402
from symgraph.lattice import Lattice, lattice_graph  # noqa: E402
from symgraph.nn import ImplicitSteerableConv  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
REP = "8x0e + 8x1o"  # dim 32 = 8 scalars + 8 vectors x 3 components
VARIANTS = (
    ("conv2d", "Conv2d"),
    ("conv2d_last", "Conv2d, channels-last input"),
    ("fast", "fast path"),
    ("message_passing", "message passing"),
)


def run(size: int, batch: int, rounds: int, mp_rounds: int, device: str = "cpu") -> dict:
    """Time the three variants on a ``size x size`` periodic lattice with ``batch`` fields."""
    torch.manual_seed(0)
    lattice = Lattice((size, size), radius=1, periodic=True)
    conv = ImplicitSteerableConv(REP, REP, group=C(4), r_max=2.0).to(device)
    graph = lattice_graph(lattice, batch, device=device)
    x = torch.randn(batch * lattice.num_cells, conv.rep_in.dim, device=device, requires_grad=True)
    dense = torch.nn.Conv2d(32, 32, 3, padding=1, padding_mode="circular").to(device)
    field = torch.randn(batch, 32, size, size, device=device, requires_grad=True)
    field_last = field.detach().to(memory_format=torch.channels_last).requires_grad_()

    def fresh_gradients() -> None:  # as a training step does (zero_grad(set_to_none=True))
        for tensor in (x, field, field_last, *conv.parameters(), *dense.parameters()):
            tensor.grad = None

    def fast() -> None:
        fresh_gradients()
        conv(
            x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice
        ).square().sum().backward()

    def message_passing() -> None:
        fresh_gradients()
        conv(x, graph.pos, graph.edge_index, rel=graph.offsets).square().sum().backward()

    def conv2d() -> None:
        fresh_gradients()
        dense(field).square().sum().backward()

    def conv2d_last() -> None:
        fresh_gradients()
        dense(field_last).square().sum().backward()

    with torch.no_grad():
        b = conv(x, graph.pos, graph.edge_index, rel=graph.offsets)
        a = conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice)
        difference = float((a - b).abs().max() / b.abs().max())
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # CUDA: exact float32
            a = conv(x, graph.pos, graph.edge_index, rel=graph.offsets, lattice=lattice)
        difference_fp32 = float((a - b).abs().max() / b.abs().max())
    stats = measure_interleaved(
        {"fast": fast, "conv2d": conv2d, "conv2d_last": conv2d_last}, rounds, device=device
    )
    stats.update(
        measure_interleaved({"message_passing": message_passing}, mp_rounds, device=device)
    )
    base = stats["conv2d"]
    ratios = {  # fast path paired per round with Conv2d; message passing ran in rounds of its own
        "conv2d": (1.0, 1.0),
        **{
            name: (
                paired_ratio(stats[name]["times"], base["times"]),
                paired_ratio(stats[name]["cpu_times"], base["cpu_times"]),
            )
            for name in ("fast", "conv2d_last")
        },
        "message_passing": (
            stats["message_passing"]["time_s"] / base["time_s"],
            stats["message_passing"]["cpu_s"] / base["cpu_s"],
        ),
    }
    return {
        "size": size,
        "batch": batch,
        "edges": graph.edge_index.shape[1],
        "max_relative_difference": difference,
        "max_relative_difference_without_tf32": difference_fp32,
        "stats": stats,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="64x64, batch 2, 3 rounds, 1 message-passing round (unless given)",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=None, help="lattice side (default 128)")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,8)")
    parser.add_argument("--rounds", type=int, default=None, help="default 15")
    parser.add_argument("--mp-rounds", type=int, default=None, help="default 3")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    # --quick changes the defaults only: an option given explicitly is kept
    defaults = (64, "2", 3, 1) if args.quick else (128, "1,8", 15, 3)
    given = (args.size, args.batches, args.rounds, args.mp_rounds)
    args.size, args.batches, args.rounds, args.mp_rounds = (
        default if value is None else value for value, default in zip(given, defaults)
    )
    start = time.perf_counter()
    results = [
        run(args.size, int(b), args.rounds, args.mp_rounds, args.device)
        for b in args.batches.split(",")
    ]
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"# lattice fast path\n\n{machine_line()}{gpu}\n")
    print(f"ImplicitSteerableConv {REP} -> {REP} (C4, dim 32), 3x3 stencil, periodic; "
          "forward + backward\n")  # fmt: skip
    print("| grid | batch | variant | wall (ms) | CPU (ms) | ratio to Conv2d (wall / CPU) "
          "| peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for name, label in VARIANTS:
            t, (wall, cpu) = r["stats"][name], r["ratios"][name]
            print(
                f"| {r['size']}x{r['size']} | {r['batch']} | {label} | {1e3 * t['time_s']:.1f} | "
                f"{1e3 * t['cpu_s']:.1f} | {wall:.2f} / {cpu:.2f} | {t['peak_mib']:.0f} |"
            )
    print(
        "\nmax |fast - message passing| / max |message passing|: "
        + ", ".join(f"batch {r['batch']}: {r['max_relative_difference']:.1e}" for r in results)
    )
    if args.device.startswith("cuda"):
        print(
            "with cuDNN's TF32 off (torch.backends.cudnn.allow_tf32 = False): "
            + ", ".join(
                f"batch {r['batch']}: {r['max_relative_difference_without_tf32']:.1e}"
                for r in results
            )
        )
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("_cuda" if args.device.startswith("cuda") else "")
    (OUT / f"lattice{suffix}.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=2)
    )
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
