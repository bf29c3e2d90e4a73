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


def _perturbed(model: EquivariantDynamics, size: float = 0.3) -> EquivariantDynamics:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn_like(p))
    return model


def test_positions_follow_the_mean_velocity_without_correction():
    """With the learned corrections off, ``r' = r + dt (v + v') / 2`` (trapezoidal step)."""
    torch.manual_seed(0)
    model = _perturbed(EquivariantDynamics(hidden=8, num_layers=2, dt=0.7).double())
    with torch.no_grad():
        for layer in model.layers:
            layer.correct[-1].weight.zero_()
            layer.correct[-1].bias.zero_()
    pos = torch.randn(5, 3, dtype=torch.float64)
    vel = torch.randn(5, 3, dtype=torch.float64) * 0.01
    p, v = model(pos, vel, torch.tensor([6, 1, 1, 8, 1]))
    assert (v - vel).abs().max() > 1e-4  # the velocity does change
    torch.testing.assert_close(p, pos + 0.35 * (vel + v), rtol=1e-12, atol=1e-12)


def test_update_scales_with_the_velocity_scale():
    """Velocities enter divided by ``velocity_scale`` and the learned terms come out
    multiplied by it: scaling both velocities and the scale by ``λ`` scales the whole
    update (``v'`` and ``r' - r``) by ``λ``."""
    torch.manual_seed(0)
    model = _perturbed(EquivariantDynamics(hidden=8, num_layers=2, dt=1.5).double())
    pos = torch.randn(5, 3, dtype=torch.float64)
    vel = torch.randn(5, 3, dtype=torch.float64) * 0.01
    z = torch.tensor([6, 1, 1, 8, 1])
    p1, v1 = model(pos, vel, z)
    model.velocity_scale *= 4.0
    p4, v4 = model(pos, 4.0 * vel, z)
    torch.testing.assert_close(v4, 4.0 * v1, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(p4 - pos, 4.0 * (p1 - pos), rtol=1e-10, atol=1e-14)
    assert (p1 - pos - 1.5 * vel).abs().max() > 1e-5  # the learned terms are not negligible


def test_soft_bound_is_monotone_and_bounded():
    """``_soft_bound``: about ``x`` for small ``x``, increasing, tending to ``±bound``."""
    from symgraph.models.dynamics import _soft_bound

    x = torch.linspace(-1e3, 1e3, 20001, dtype=torch.float64)
    y = _soft_bound(x, 10.0)
    assert (y.diff() > 0).all() and y.abs().max() < 10.0
    assert y[-1] > 9.99 and y[0] < -9.99
    small = torch.tensor([1e-3, -2e-3], dtype=torch.float64)
    torch.testing.assert_close(_soft_bound(small, 10.0), small, rtol=1e-7, atol=0)


def test_largest_atomic_number_is_embedded():
    """``max_z`` itself is a valid atomic number; ``max_z + 1`` is refused."""
    model = EquivariantDynamics(hidden=8, num_layers=1, max_z=9)
    pos, vel = torch.randn(2, 3), torch.randn(2, 3) * 0.01
    p, _ = model(pos, vel, torch.tensor([9, 1]))
    assert torch.isfinite(p).all()
    with pytest.raises(ValueError, match=r"z: expected atomic numbers in \[0, 9\]"):
        model(pos, vel, torch.tensor([10, 1]))
