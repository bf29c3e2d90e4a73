"""SteerableMoleculeNet: invariance / equivariance of predictions, learning, bad input."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

import symgraph as sg
from symgraph.data import from_ase
from symgraph.models import SteerableMoleculeNet
from symgraph.testing import transform


def molecules():
    from ase.build import molecule

    return Batch.from_data_list([from_ase(molecule(n)) for n in ("CH3CH2OH", "C6H6", "HCN")])


def moved(batch, g, shift):
    out = batch.clone()
    out.pos = transform(batch.pos, "pos", g, shift)
    return out


@pytest.mark.parametrize("group", ["O3", "SO3", "SO2", "D4"])
def test_scalar_predictions_are_invariant(group):
    torch.manual_seed(0)
    model = SteerableMoleculeNet(group=group, hidden="8x0e + 2x1o + 1x2e", num_layers=2).double()
    batch = molecules()
    batch.pos, batch.x, batch.edge_attr = (
        batch.pos.double(),
        batch.x.double(),
        batch.edge_attr.double(),
    )
    reference = model(batch)
    for g in model.group.sample(3, dtype=torch.float64):
        out = model(moved(batch, g, torch.randn(3, dtype=torch.float64)))
        assert torch.allclose(out, reference, atol=1e-10 * reference.abs().max().item())


def test_dipole_readout_is_equivariant():
    torch.manual_seed(0)
    model = SteerableMoleculeNet(
        hidden="8x0e + 2x1o", num_layers=2, dipole=True, num_radial=12
    ).double()
    assert all(conv.kernel.radial.num_basis == 12 for conv in model.convs)
    batch = molecules()
    batch.pos, batch.x, batch.edge_attr = (
        batch.pos.double(),
        batch.x.double(),
        batch.edge_attr.double(),
    )
    reference = model(batch)
    assert reference.shape == (3, 3)
    for g in sg.groups.O3().sample(3, dtype=torch.float64):
        out = model(moved(batch, g, torch.randn(3, dtype=torch.float64)))
        assert torch.allclose(out, reference @ g.T, atol=1e-10 * reference.abs().max().item())


@pytest.mark.parametrize(
    ("group", "dipole", "read"),
    [
        ("O3", False, "8x0e"),
        ("O3", True, "8x0e + 2x1o"),
        ("SO2", False, "8x0e + 2x1o + 1x2e"),  # 1o and 2e hold SO(2)-invariant components
    ],
)
def test_last_layer_outputs_only_what_the_readout_reads(group, dipole, read):
    """The last layer outputs ``rep_read``: each of its parameters then moves the prediction
    (in the full last layer, the unread blocks' kernel paths get zero gradients)."""

    def idle_parameters(model: SteerableMoleculeNet) -> list[str]:
        model(molecules()).pow(2).sum().backward()
        return [
            name
            for name, p in model.convs[-1].named_parameters()
            if p.grad is None or not p.grad.abs().sum() > 0
        ]

    torch.manual_seed(0)
    options = {"group": group, "hidden": "8x0e + 2x1o + 1x2e", "num_layers": 2, "dipole": dipole}
    model = SteerableMoleculeNet(**options)
    assert model.rep_read == sg.Rep(read, group)
    assert model.convs[-1].rep_out == sg.nn.gate_rep(model.rep_read)
    assert model.convs[0].rep_out == sg.nn.gate_rep(model.rep_hidden)
    assert model.node_features(molecules()).shape[1] == model.rep_read.dim
    assert f"hidden={model.rep_hidden.short()}, read={model.rep_read.short()}," in repr(model)
    assert idle_parameters(model) == []
    full = SteerableMoleculeNet(**options, last_layer="full")
    assert full.rep_read == full.rep_hidden
    assert full.node_features(molecules()).shape[1] == full.rep_hidden.dim
    assert bool(idle_parameters(full)) == (model.rep_read != model.rep_hidden)


def test_trimmed_dipole_readout_is_equivariant():
    """With a ``2e`` block the dipole model drops it from the last layer and stays equivariant."""
    torch.manual_seed(0)
    model = SteerableMoleculeNet(hidden="8x0e + 2x1o + 1x2e", num_layers=2, dipole=True)
    model = model.double()
    assert model.rep_read.short() == sg.Rep("8x0e + 2x1o").short()
    batch = molecules()
    for key in ("pos", "x", "edge_attr"):
        batch[key] = batch[key].double()
    reference = model(batch)
    for g in sg.groups.O3().sample(3, dtype=torch.float64):
        out = model(moved(batch, g, torch.randn(3, dtype=torch.float64)))
        assert torch.allclose(out, reference @ g.T, atol=1e-10 * reference.abs().max().item())


def test_equivariance_error_takes_a_batch_with_specs_by_attribute():
    """``sg.testing.equivariance_error`` on a model that takes a PyG Batch: the dipole turns
    with the molecules; a wrong dipole or a plain spec for the Batch is caught."""
    from symgraph.testing import equivariance_error

    torch.manual_seed(0)
    model = SteerableMoleculeNet(hidden="8x0e + 2x1o", num_layers=1, dipole=True).double()
    batch = molecules()
    for key in ("pos", "x", "edge_attr"):
        batch[key] = batch[key].double()
    error = equivariance_error(model, sg.groups.O3(), [batch], [{"pos": "pos"}], "vector")
    assert error < 1e-10
    twisted = lambda b: model(b) @ torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))  # noqa: E731
    assert equivariance_error(twisted, sg.groups.O3(), [batch], [{"pos": "pos"}], "vector") > 1e-3
    assert torch.equal(batch.pos, molecules().pos.double())  # the argument is left as it was
    with pytest.raises(ValueError, match="spec: a DataBatch argument needs a dict of specs"):
        equivariance_error(model, sg.groups.O3(), [batch], ["pos"], "vector")
    with pytest.raises(ValueError, match="spec: DataBatch has no attribute 'positions'"):
        equivariance_error(model, sg.groups.O3(), [batch], [{"positions": "pos"}], "vector")
    with pytest.raises(ValueError, match="spec: a dict of specs is for a PyG Data argument"):
        equivariance_error(torch.neg, sg.groups.O3(), [batch.pos], [{"pos": "pos"}], "pos")


def test_learns_on_real_qm9(shared_data, tmp_path):
    from torch_geometric.loader import DataLoader

    from symgraph.data.qm9 import QM9, target_index

    dataset = QM9(tmp_path, source="csv", csv_files=[shared_data / "qm9" / "qm9pack_first200.csv"])
    index = target_index("U0")
    y = dataset._data.y[:, index]
    mean, std = y.mean(), y.std()
    torch.manual_seed(0)
    model = SteerableMoleculeNet(hidden="16x0e + 4x1o", num_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(dataset[:64], batch_size=32, shuffle=True)
    losses = []
    for _ in range(25):
        for batch in loader:
            loss = (model(batch)[:, 0] - (batch.y[:, index] - mean) / std).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.3 * sum(losses[:4]) / 4


def test_bad_input():
    with pytest.raises(ValueError, match="readout"):
        SteerableMoleculeNet(readout="max")
    with pytest.raises(ValueError, match="group: unknown group name"):
        SteerableMoleculeNet(group="SO4")
    with pytest.raises(ValueError, match=r"last_layer: expected one of \('readout', 'full'\)"):
        SteerableMoleculeNet(last_layer="scalars")
    # num_targets=0 gave predictions [B, 0]; 2.5, True and -1 failed inside torch.empty
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_targets: expected a positive int"):
            SteerableMoleculeNet(hidden="4x0e", num_layers=1, num_targets=bad)
    with pytest.raises(ValueError, match="atom_dim: expected a positive int"):
        SteerableMoleculeNet(hidden="4x0e", num_layers=1, atom_dim=2.0)
    three = SteerableMoleculeNet(hidden="4x0e", num_layers=1, num_targets=3)
    assert "num_targets=3," in repr(three)
    model = SteerableMoleculeNet(hidden="4x0e", num_layers=1)
    batch = molecules()
    batch.x = batch.x[:, :5]
    with pytest.raises(ValueError, match=r"data.x: expected shape \[N, 13\]"):
        model(batch)
    batch = molecules()
    batch.edge_attr = batch.edge_attr[:-1]
    with pytest.raises(ValueError, match=r"data.edge_attr: expected shape \["):
        model(batch)


def test_edges_beyond_the_cutoff_are_dropped_without_changing_anything(monkeypatch):
    """A 3 Å cutoff on a graph built with 5 Å: the layers see only the shorter edges, and
    predictions and gradients equal those of the graph cut to 3 Å beforehand."""
    torch.manual_seed(0)
    model = SteerableMoleculeNet(hidden="8x0e + 2x1o", num_layers=2, cutoff=3.0).double()
    batch = molecules()
    batch.pos, batch.x, batch.edge_attr = (
        batch.pos.double(),
        batch.x.double(),
        batch.edge_attr.double(),
    )
    length = (batch.pos[batch.edge_index[0]] - batch.pos[batch.edge_index[1]]).norm(dim=-1)
    short = length < 3.0
    assert 0 < int(short.sum()) < short.numel()
    cut = batch.clone()
    cut.edge_index, cut.edge_attr = batch.edge_index[:, short], batch.edge_attr[short]
    seen = []
    conv_forward = type(model.convs[0]).forward

    def recording(conv, x, pos, edge_index, *args, **kwargs):
        seen.append(edge_index.shape[1])
        return conv_forward(conv, x, pos, edge_index, *args, **kwargs)

    monkeypatch.setattr(type(model.convs[0]), "forward", recording)
    outputs = []
    for data in (batch, cut):
        data.pos.requires_grad_(True)
        out = model(data)
        (grad,) = torch.autograd.grad(out.sum(), data.pos)
        outputs.append((out.detach(), grad))
    assert seen == [int(short.sum())] * 4
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=0, atol=1e-12)


def _double(batch):
    batch.pos, batch.x, batch.edge_attr = (
        batch.pos.double(),
        batch.x.double(),
        batch.edge_attr.double(),
    )
    return batch


def test_relabelling_the_atoms_permutes_features_and_keeps_predictions():
    """Atoms given in another order (molecules interleaved): node features are permuted the
    same way and the per-molecule predictions do not change."""
    torch.manual_seed(0)
    model = SteerableMoleculeNet(hidden="8x0e + 2x1o", num_layers=2).double()
    batch = _double(molecules())
    perm = torch.randperm(batch.num_nodes, generator=torch.Generator().manual_seed(1))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    relabelled = batch.clone()
    relabelled.pos, relabelled.x, relabelled.batch = (
        batch.pos[perm],
        batch.x[perm],
        batch.batch[perm],
    )
    relabelled.edge_index = inverse[batch.edge_index]
    features = model.node_features(batch)
    torch.testing.assert_close(
        model.node_features(relabelled),
        features[perm],
        rtol=0,
        atol=1e-10 * float(features.detach().abs().max()),
    )
    reference = model(batch)
    torch.testing.assert_close(
        model(relabelled), reference, rtol=0, atol=1e-10 * float(reference.detach().abs().max())
    )


def test_mean_readout_divides_the_sum_by_the_atom_count():
    """With the same weights, ``readout="mean"`` is ``readout="sum"`` over the atom count."""
    torch.manual_seed(0)
    summed = SteerableMoleculeNet(hidden="8x0e + 2x1o", num_layers=1, num_targets=2).double()
    mean = SteerableMoleculeNet(
        hidden="8x0e + 2x1o", num_layers=1, num_targets=2, readout="mean"
    ).double()
    mean.load_state_dict(summed.state_dict())
    batch = _double(molecules())
    atoms = torch.bincount(batch.batch).double()[:, None]
    assert len(set(atoms[:, 0].tolist())) > 1  # the molecules differ in size
    torch.testing.assert_close(mean(batch) * atoms, summed(batch), rtol=1e-10, atol=1e-12)


def test_num_graphs_smaller_than_the_batch_is_refused():
    """A declared ``num_graphs`` below ``batch.max() + 1`` is an error, even by one."""
    model = SteerableMoleculeNet(hidden="4x0e", num_layers=1)
    batch = molecules()
    data = Data(
        x=batch.x, pos=batch.pos, edge_index=batch.edge_index, edge_attr=batch.edge_attr,
        batch=batch.batch,
    )  # fmt: skip
    data.num_graphs = batch.num_graphs - 1
    with pytest.raises(ValueError, match="data.num_graphs: expected at least"):
        model(data)
    data.num_graphs = batch.num_graphs + 1  # a trailing molecule without atoms: a zero row
    out = model(data)
    assert out.shape == (batch.num_graphs + 1, 1) and float(out[-1].detach().abs().max()) == 0.0
