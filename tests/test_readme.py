"""The README's Python snippets run as written (with the objects a snippet takes from its
surrounding text supplied here), so the README stays true to the code."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from symgraph.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = [
    textwrap.dedent(block)
    for block in re.findall(r"^ *```python\n(.*?)^ *```", README.read_text(), re.S | re.M)
]


def _snippet(marker: str) -> str:
    found = [s for s in SNIPPETS if marker in s]
    assert len(found) == 1, f"expected one README snippet containing {marker!r}"
    return found[0]


def _teleport_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A small ReLU MLP, its optimizer, and a loader long enough for one teleport."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    ).double()
    x = torch.randn(101, 8, 3, dtype=torch.float64)
    loader = [(x[i], x[i].sin().sum(1, keepdim=True)) for i in range(101)]

    def loss_fn(m, batch):
        return (m(batch[0]) - batch[1]).pow(2).mean()

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    return {"model": model, "loader": loader, "loss_fn": loss_fn, "optimizer": optimizer}


def _degree_order_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Two residual convolutions on a random graph, and their output in the caller's order."""
    import symgraph as sg
    from symgraph.graph import radius_graph

    torch.manual_seed(0)
    convs = [
        sg.nn.ImplicitSteerableConv("4x0e + 2x1o", "4x0e + 2x1o", edge_dim=3).double()
        for _ in range(2)
    ]
    num_nodes = 40
    pos = 2.0 * torch.randn(num_nodes, 3, dtype=torch.float64)
    edge_index = radius_graph(pos, 3.0)
    edge_attr = torch.randn(edge_index.shape[1], 3, dtype=torch.float64)
    x = torch.randn(num_nodes, convs[0].rep_in.dim, dtype=torch.float64)
    expected = x
    for conv in convs:
        expected = expected + conv(expected, pos, edge_index, edge_attr)
    return {
        "convs": convs, "num_nodes": num_nodes, "pos": pos, "edge_index": edge_index,
        "edge_attr": edge_attr, "x": x, "expected": expected,
    }  # fmt: skip


def _trained_homo_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """``runs/homo`` of the README's training command, shrunk to one quick epoch."""
    pytest.importorskip("rdkit")
    monkeypatch.chdir(tmp_path)
    args = [
        "train", "qm9", "--target", "homo", "--subset-size", "48", "--epochs", "1",
        "--hidden", "8x0e + 2x1o", "--layers", "1", "--lmax", "1", "--batch-size", "16",
        "--no-progress", "--root", str(tmp_path / "data"), "--out", "runs/homo",
    ]  # fmt: skip
    assert main(args) == 0
    return {}


def _check_minimal_example(namespace: dict) -> None:
    assert namespace["basis"].dim > 0
    assert namespace["err"] < 1e-5  # float32


def _check_conv(namespace: dict) -> None:
    assert namespace["out"].shape == (30, namespace["conv"].rep_out.dim)


def _check_teleport(namespace: dict) -> None:
    assert [step for step, _ in namespace["hook"].history] == [100]  # "every:100"


def _check_degree_order(namespace: dict) -> None:
    # "its outputs do not change": the caller's order is restored
    torch.testing.assert_close(namespace["x"], namespace["expected"], rtol=1e-10, atol=1e-10)


def _check_noether(namespace: dict) -> None:
    # the generated trajectory starts without rotation and NVE keeps it so (to rounding)
    loss = namespace["loss"]
    assert loss.ndim == 0 and 0 <= float(loss) < 1e-20


def _check_predict(namespace: dict) -> None:
    homo = namespace["homo"]
    assert homo.shape == (1,) and bool(torch.isfinite(homo).all())


#: By a line only that snippet holds: what it takes from its surrounding text (built in
#: ``tmp_path``, with ``monkeypatch``) and what its result must satisfy.
SNIPPET_CHECKS: dict[str, tuple[Callable[..., dict] | None, Callable[[dict], None]]] = {
    "sg.testing.equivariance_error": (None, _check_minimal_example),
    "sg.nn.ImplicitSteerableConv(": (None, _check_conv),
    'predict("runs/homo"': (_trained_homo_run, _check_predict),
    "noether_loss(AngularMomentum(), traj)": (None, _check_noether),
    "hook = Teleport.from_spec": (_teleport_context, _check_teleport),
    "order = order_by_in_degree": (_degree_order_context, _check_degree_order),
}


def test_every_snippet_is_checked():
    """Each README snippet has its entry (a new one needs its context and check here)."""
    assert SNIPPETS
    for snippet in SNIPPETS:
        assert sum(marker in snippet for marker in SNIPPET_CHECKS) == 1, snippet


@pytest.mark.parametrize("marker", list(SNIPPET_CHECKS))
def test_readme_snippet_runs(marker, tmp_path, monkeypatch):
    """The snippet runs as written and does what the README says."""
    snippet = _snippet(marker)
    make_context, check = SNIPPET_CHECKS[marker]
    namespace = {} if make_context is None else make_context(tmp_path, monkeypatch)
    exec(compile(snippet, "README.md", "exec"), namespace)
    check(namespace)


def _readme_commands() -> list[str]:
    """Every ``symgraph …`` command line of the README: in its shell blocks (also after
    ``torchrun … -m``) and inline (```symgraph train …```), comments dropped."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`(symgraph (?:train|evaluate) [^`…]*)`", text)
    commands = []
    for line in lines:
        line = re.split(r"\s#", line)[0]
        found = re.search(r"(?:^|-m )symgraph (.*)$", line.strip())
        if found:
            commands.append(found.group(1).strip())
    return commands


def test_readme_commands_parse():
    """Each ``symgraph`` command line the README shows is accepted by the CLI's parser."""
    import shlex

    from symgraph.cli import build_parser
    from symgraph.train.jobs import load_jobs

    commands = _readme_commands()
    assert len(commands) >= 10 and any(c.startswith("train fluid") for c in commands)
    parser = build_parser(load_jobs())
    for command in commands:
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit:
            pytest.fail(f"README command does not parse: symgraph {command}")
