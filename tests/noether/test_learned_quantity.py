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


def test_edge_features_match_their_formulas():
    """One edge ``j = 0 -> i = 1`` at distance 1.5 Å, cutoff 3 Å, speed scale 0.01 Å/fs:
    ``v_i·v_j / s² = 2``, ``r_ij·(v_j − v_i) / (|r_ij| s) = −1``, envelope ``½(cos(π/2)+1)``."""
    from symgraph.noether.learned import invariant_edge_features

    f64 = dict(dtype=torch.float64)
    frame = Frame(
        pos=torch.tensor([[0.0, 0, 0], [1.5, 0, 0]], **f64),
        vel=torch.tensor([[0.02, 0.01, 0.0], [0.01, 0.0, 0.03]], **f64),
        z=torch.tensor([6, 1]),
    )
    centres = torch.tensor([0.0, 1.0, 2.0], **f64)
    edge_index = torch.tensor([[0], [1]])
    attr, env = invariant_edge_features(frame, edge_index, centres, 0.5, 3.0, 0.01)
    rbf = torch.exp(-(((1.5 - centres) / 0.5) ** 2))
    torch.testing.assert_close(attr[0], torch.cat([rbf, torch.tensor([2.0, -1.0], **f64)]))
    torch.testing.assert_close(env, torch.tensor([0.5], **f64))
    _, flat = invariant_edge_features(frame, edge_index, centres, 0.5, None, 0.01)
    torch.testing.assert_close(flat, torch.ones(1, **f64))
    still, _ = invariant_edge_features(frame, edge_index, centres, 0.5, 3.0, 0.01, False)
    torch.testing.assert_close(still[0, 3:], torch.zeros(2, **f64))


def test_a_message_goes_from_j_to_i():
    """With the single edge ``j = 0 -> i = 1`` only atom 1 receives a message: atoms 0 and
    2 are updated as without any edge."""
    from symgraph.noether.learned import InvariantMessagePassing

    torch.manual_seed(0)
    layer = InvariantMessagePassing(hidden=4, edge_dim=3).double()
    h = torch.randn(3, 4, dtype=torch.float64)
    edge_attr = torch.randn(1, 3, dtype=torch.float64)
    out = layer(h, torch.tensor([[0], [1]]), edge_attr, torch.ones(1, dtype=torch.float64))
    alone = layer(h, torch.zeros(2, 0, dtype=torch.long), edge_attr[:0], edge_attr[:0, 0])
    torch.testing.assert_close(out[[0, 2]], alone[[0, 2]])
    assert not torch.allclose(out[1], alone[1])


def test_the_largest_atomic_number_is_embedded():
    g = NeuralConservedQuantity(out_dim=2, hidden=8, max_z=8).double()
    frame = Frame(torch.randn(2, 3, dtype=torch.float64), z=torch.tensor([8, 1]))
    assert g(frame).shape == (1, 2)


def test_vector_outputs_follow_their_formula():
    """With constant weights ``a = 0.5``, ``b = 2``: ``Σ_i a (r_i − c) + b v_i / s`` (``c``
    the centre of mass)."""
    g = NeuralConservedQuantity(out_dim=1, hidden=8, vector_dim=1, velocity_scale=0.02).double()
    last = g.vector_weights[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, 2.0]))
    frame = molecules(1)
    mass = frame.mass[:, None]
    com = (mass * frame.pos).sum(0) / mass.sum()
    want = 0.5 * (frame.pos - com).sum(0) + 2.0 * frame.vel.sum(0) / 0.02
    torch.testing.assert_close(g(frame)[0, 1:], want)
