"""EquivariantDynamics: exact E(3) equivariance (float64) and input checks."""

from __future__ import annotations

import pytest
import torch

from symgraph.models.dynamics import EquivariantDynamics


def random_orthogonal(det: float) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("det", [1.0, -1.0])
@pytest.mark.parametrize("cutoff", [None, 3.0])
def test_equivariant_under_e3(det, cutoff):
    model = EquivariantDynamics(hidden=16, num_layers=2, dt=2.0, cutoff=cutoff).double()
    # make the learned terms large so that equivariance is tested on a non-trivial map
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    n = 10
    pos = torch.randn(n, 3, dtype=torch.float64) * 1.5
    vel = torch.randn(n, 3, dtype=torch.float64) * 0.01
    z = torch.tensor([6, 1, 1, 8, 1, 6, 1, 1, 7, 1])
    batch = torch.tensor([0] * 5 + [1] * 5)
    rot, shift = random_orthogonal(det), torch.randn(3, dtype=torch.float64) * 2
    p1, v1 = model(pos, vel, z, batch)
    p2, v2 = model(pos @ rot.T + shift, vel @ rot.T, z, batch)
    assert (p1 @ rot.T + shift - p2).abs().max() < 1e-10
    assert (v1 @ rot.T - v2).abs().max() < 1e-10
    assert (v1 - vel).abs().max() > 1e-4  # the map is not the identity
    # molecules in a batch do not interact
    p_a, v_a = model(pos[:5], vel[:5], z[:5])
    torch.testing.assert_close(p_a, p1[:5])
    torch.testing.assert_close(v_a, v1[:5])


def test_update_is_continuous_as_a_neighbour_crosses_the_cutoff():
    """Every edge term fades out with the envelope: the prediction just inside and just
    outside the cutoff agree (the learned MLPs have biases, so a term not weighted by the
    envelope would drop from accel(0) to 0 there)."""
    torch.manual_seed(0)
    model = EquivariantDynamics(hidden=8, num_layers=2, cutoff=3.0).double()
    with torch.no_grad():  # a trained-looking model: learned terms far from zero
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    vel = torch.randn(2, 3, dtype=torch.float64) * 0.01
    z = torch.tensor([8, 1])

    def step(distance: float) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.tensor([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], dtype=torch.float64)
        next_pos, next_vel = model(pos, vel, z)
        return next_pos - pos, next_vel

    (inside_pos, inside_vel), (outside_pos, outside_vel) = step(3.0 - 1e-7), step(3.0 + 1e-7)
    assert (inside_vel - outside_vel).abs().max() < 1e-9
    assert (inside_pos - outside_pos).abs().max() < 1e-9
    near_pos, near_vel = step(2.5)  # well inside, the neighbour does move the prediction
    assert (near_vel - outside_vel).abs().max() > 1e-5


def test_untrained_model_moves_in_straight_lines():
    model = EquivariantDynamics(hidden=8, num_layers=1, dt=0.5).double()
    pos = torch.randn(4, 3, dtype=torch.float64)
    vel = torch.randn(4, 3, dtype=torch.float64) * 0.01
    p, v = model(pos, vel, torch.tensor([6, 1, 1, 1]))
    step = (0.5 * vel).abs().max()  # ~0.01: the bound must be a fraction of the step itself
    assert (p - (pos + 0.5 * vel)).abs().max() < 0.05 * step
    assert (v - vel).abs().max() < 0.05 * vel.abs().max()


def test_bad_inputs():
    model = EquivariantDynamics(hidden=8, num_layers=1)
    pos = torch.randn(4, 3)
    with pytest.raises(ValueError, match="vel"):
        model(pos, torch.randn(3, 3), torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="z"):
        model(pos, torch.randn(4, 3), torch.ones(4))
    with pytest.raises(ValueError, match="dt"):
        EquivariantDynamics(dt=0.0)
