"""NeuralConservedQuantity: exact E(3) invariance (float64), equivariant vector outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from symgraph.noether import Frame, NeuralConservedQuantity, Trajectory, noether_loss


def random_orthogonal(det: float) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


def molecules(num_graphs: int = 2, atoms: int = 6) -> Frame:
    n = num_graphs * atoms
    return Frame(
        pos=torch.randn(n, 3, dtype=torch.float64) * 1.5,
        vel=torch.randn(n, 3, dtype=torch.float64) * 0.01,
        z=torch.tensor([6, 1, 8, 1, 7, 1] * num_graphs)[:n],
        batch=torch.arange(num_graphs).repeat_interleave(atoms),
    )


@pytest.mark.parametrize("det", [1.0, -1.0])
@pytest.mark.parametrize("cutoff", [4.0, None])
def test_invariant_under_e3(det, cutoff):
    g = NeuralConservedQuantity(out_dim=5, hidden=16, cutoff=cutoff, vector_dim=2).double()
    frame = molecules()
    rot, shift = random_orthogonal(det), torch.randn(3, dtype=torch.float64) * 3
    moved = frame.replace(pos=frame.pos @ rot.T + shift, vel=frame.vel @ rot.T)
    a, b = g(frame), g(moved)
    assert a.shape == (2, 5 + 6) and g.dim == 11
    scale = a.abs().max()
    assert (a[:, :5] - b[:, :5]).abs().max() / scale < 1e-10
    vec_a, vec_b = a[:, 5:].reshape(2, 2, 3), b[:, 5:].reshape(2, 2, 3)
    assert (vec_a @ rot.T - vec_b).abs().max() / scale < 1e-10


def test_depends_on_state_and_species():
    g = NeuralConservedQuantity(out_dim=3, hidden=16).double()
    frame = molecules(1)
    base = g(frame)
    assert not torch.allclose(base, g(frame.replace(vel=frame.vel * 2)))
    assert not torch.allclose(base, g(frame.replace(pos=frame.pos * 1.1)))
    assert not torch.allclose(base, g(frame.replace(z=frame.z.flip(0))))
    blind = NeuralConservedQuantity(out_dim=3, hidden=16, use_velocities=False).double()
    torch.testing.assert_close(blind(frame), blind(frame.replace(vel=frame.vel * 2)))


def test_batch_consistency_and_loss():
    g = NeuralConservedQuantity(out_dim=4, hidden=16).double()
    frame = molecules(3)
    together = g(frame)
    apart = torch.cat([g(f) for f in frame.split()])
    torch.testing.assert_close(together, apart)
    traj = Trajectory.from_frames([frame, frame.replace(vel=frame.vel * 1.5)])
    loss = noether_loss(g, traj)
    loss.backward()
    assert all(p.grad is not None for p in g.layers.parameters())


class ScalarBackbone(nn.Module):
    """A toy invariant backbone: sums edge features into nodes."""

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(hidden + edge_dim, 8)

    def forward(self, x, pos, edge_index, edge_attr):
        agg = x.new_zeros(x.shape[0], edge_attr.shape[1]).index_add(0, edge_index[1], edge_attr)
        return self.lin(torch.cat([x, agg], -1))


def test_plug_in_backbone():
    g = NeuralConservedQuantity(
        out_dim=2, hidden=16, num_rbf=8, backbone=ScalarBackbone(16, 10), backbone_dim=8
    ).double()
    frame = molecules()
    rot = random_orthogonal(1.0)
    moved = frame.replace(pos=frame.pos @ rot.T, vel=frame.vel @ rot.T)
    assert g(frame).shape == (2, 2)
    assert (g(frame) - g(moved)).abs().max() < 1e-10


def test_bad_inputs():
    with pytest.raises(ValueError, match="cutoff"):
        NeuralConservedQuantity(cutoff=-1.0)
    g = NeuralConservedQuantity(max_z=10)
    with pytest.raises(ValueError, match="z: expected atomic numbers in"):
        g(Frame(torch.randn(2, 3), z=torch.tensor([1, 17])))


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="velocity_scale: expected a positive typical speed"):
        NeuralConservedQuantity(out_dim=2, hidden=8, velocity_scale=0.0)
    with pytest.raises(ValueError, match="num_rbf: expected at least 1"):
        NeuralConservedQuantity(out_dim=2, hidden=8, num_rbf=0)
    g = NeuralConservedQuantity(out_dim=2, hidden=8)  # float32 parameters
    with pytest.raises(TypeError, match=r"pos: expected dtype torch.float32 .* got torch.float64"):
        g(molecules())
    assert (
        g.uses_velocities
        and not NeuralConservedQuantity(2, 8, use_velocities=False).uses_velocities
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(out_dim=-1, vector_dim=1), "out_dim: expected an integer >= 0, got -1"),
        (dict(vector_dim=-1), "vector_dim: expected an integer >= 0, got -1"),
        (dict(hidden=0), "hidden: expected an integer >= 1, got 0"),
        (dict(num_layers=1.5), "num_layers: expected an integer >= 0, got 1.5"),
    ],
)
def test_sizes_are_checked_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        NeuralConservedQuantity(**options)
