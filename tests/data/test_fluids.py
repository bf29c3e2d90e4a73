"""Smoke-plume simulator, its dataset, and the real ocean-current sample."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch

from symgraph.data.fluids import (
    PlumeConfig,
    SmokePlumeDataset,
    load_ocean_currents,
    simulate_plume,
    simulate_plumes,
    spectral_divergence,
)
from symgraph.lattice import FieldLayout, Lattice, rotate_field

SMALL = PlumeConfig(size=32, initial_vorticity=1.0, inflow_position=(0.1, -0.3))


def _rotated_run(config: PlumeConfig, frames: int, k: int = 1):
    """(rotate(simulate(x0)), simulate(rotate(x0))) in float64."""
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(config.size, config.size, generator=gen, dtype=torch.float64)
    vel, rho = simulate_plume(config, frames, initial_vorticity=w0, dtype=torch.float64)
    w0_rot = rotate_field(w0[None, None], k)[0, 0]
    vel_r, rho_r = simulate_plume(
        config.rotated(k), frames, initial_vorticity=w0_rot, dtype=torch.float64
    )
    return (rotate_field(vel, k, "1x1o"), rotate_field(rho, k)), (vel_r, rho_r)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --------------------------------------------------------------------------- simulator


def test_shapes_and_incompressibility():
    vel, rho = simulate_plume(SMALL, 30, torch.Generator().manual_seed(0))
    assert vel.shape == (30, 2, 32, 32) and rho.shape == (30, 1, 32, 32)
    assert vel.dtype == torch.float32 and bool(torch.isfinite(vel).all())
    div = spectral_divergence(vel.double(), SMALL.length)
    scale = vel.abs().max() * 2 * math.pi / SMALL.spacing  # |grad u| bound
    assert float(div.abs().max() / scale) < 1e-6
    assert float(rho.amax()) > 0.1  # smoke is being injected and carried


def test_incompressible_with_walls_and_plume_rises_in_force_direction():
    cfg = SMALL.replace(walls=2, initial_vorticity=0.0, inflow_position=(0.0, -0.3))
    vel, rho = simulate_plume(cfg, 40, dtype=torch.float64)
    div = spectral_divergence(vel, cfg.length)
    assert float(div.abs().max()) < 1e-8 * float(vel.abs().max()) / cfg.spacing
    fx, fy = cfg.force()
    assert abs(fx) < 1e-12 and fy > 0  # inflow below the centre, force towards it
    n = cfg.size
    y = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * cfg.spacing
    centroid = [float((r[0].sum(1) * y).sum() / r.sum()) for r in rho[[5, -1]]]
    assert centroid[1] > centroid[0] + 0.02  # the smoke moves up (+y)
    assert float(vel[:, :, :2].abs().max()) < 0.2 * float(vel.abs().max())  # quiet walls


def test_deterministic_under_a_seed():
    a = simulate_plume(SMALL, 10, torch.Generator().manual_seed(7))
    b = simulate_plume(SMALL, 10, torch.Generator().manual_seed(7))
    c = simulate_plume(SMALL, 10, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_batched_equals_single():
    configs = [SMALL, SMALL.rotated(1).replace(buoyancy=1.5)]
    w0 = torch.randn(2, 32, 32)
    vel, rho = simulate_plumes(configs, 8, initial_vorticity=w0, dtype=torch.float64)
    for i, cfg in enumerate(configs):
        v1, r1 = simulate_plume(cfg, 8, initial_vorticity=w0[i], dtype=torch.float64)
        assert torch.allclose(vel[i], v1, atol=1e-12) and torch.allclose(rho[i], r1, atol=1e-12)


def test_a_batch_needs_equal_steps_per_frame_and_warm_up():
    for field, value in (("substeps", 4), ("warmup_steps", 10)):
        other = SMALL.replace(**{field: value})
        with pytest.raises(ValueError, match=f"configs: `{field}` must be equal across a batch"):
            simulate_plumes([SMALL, other], 2)


@pytest.mark.parametrize("n", [9, 10])
def test_spectral_divergence_of_odd_and_even_grids(n):
    """div(sin(2π·4x), 0) = 8π cos(2π·4x): exact for odd N too (no Nyquist mode to drop)."""
    x = torch.arange(n, dtype=torch.float64) / n
    u = torch.sin(2 * math.pi * 4 * x).expand(n, n)  # varies along the last axis (x)
    velocity = torch.stack([u, torch.zeros_like(u)])
    expected = 8 * math.pi * torch.cos(2 * math.pi * 4 * x).expand(n, n)
    torch.testing.assert_close(spectral_divergence(velocity, 1.0), expected)


@pytest.mark.parametrize("k, walls", [(1, 0), (2, 0), (3, 2)])
def test_symmetric_dynamics_commute_with_rotations(k, walls):
    cfg = SMALL.replace(walls=walls)
    (vel_a, rho_a), (vel_b, rho_b) = _rotated_run(cfg, 40, k)
    assert _rel(vel_a, vel_b) < 1e-10 and _rel(rho_a, rho_b) < 1e-10


@pytest.mark.parametrize("breaking", [0.1, 0.5])
def test_symmetry_breaking_breaks_rotations(breaking):
    cfg = SMALL.replace(symmetry_breaking=breaking)
    (vel_a, rho_a), (vel_b, rho_b) = _rotated_run(cfg, 40)
    assert _rel(vel_a, vel_b) > 1e-2 and _rel(rho_a, rho_b) > 1e-2


def test_force_direction_and_knob():
    cfg = PlumeConfig(inflow_position=(0.3, 0.0), buoyancy=2.0)
    assert cfg.force() == pytest.approx((-2.0, 0.0), abs=1e-12)  # towards the centre
    rot = cfg.rotated(1)
    assert rot.inflow_position == pytest.approx((0.0, 0.3))
    assert rot.force() == pytest.approx((0.0, -2.0), abs=1e-12)  # turned with the inflow
    up = cfg.replace(symmetry_breaking=1.0)
    assert up.force() == pytest.approx((0.0, 2.0), abs=1e-12)  # global gravity only
    assert up.rotated(1).force() == pytest.approx(up.force())


def test_bad_configs_and_blow_up_are_reported():
    with pytest.raises(ValueError, match="symmetry_breaking"):
        PlumeConfig(symmetry_breaking=1.5)
    with pytest.raises(ValueError, match="size"):
        PlumeConfig(size=33)
    with pytest.raises(ValueError, match="dt: diffusion is unstable"):
        PlumeConfig(viscosity=0.1)
    with pytest.raises(ValueError, match="inflow_position"):
        PlumeConfig(inflow_position=(0.7, 0.0))
    with pytest.raises(ValueError, match="initial_vorticity"):
        simulate_plume(SMALL, 2, initial_vorticity=torch.zeros(16, 16))
    with pytest.raises(ValueError, match="finite"):
        simulate_plume(SMALL, 2, initial_vorticity=torch.full((32, 32), float("nan")))
    with pytest.raises(RuntimeError, match="unstable|blew up"):
        simulate_plume(
            SMALL.replace(buoyancy=0.0, dt=0.05, viscosity=0.0),
            5,
            initial_vorticity=torch.randn(32, 32) * 200,
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dt", 0.0),
        ("inflow_radius", 0.0),
        ("buoyancy", float("inf")),
        ("substeps", 0),
        ("dt", True),  # a bool is not a number here
        ("viscosity", True),
        ("symmetry_breaking", True),
    ],
)
def test_config_rejects_zero_steps_and_sizes_infinite_rates_and_bools(field, value):
    """Strictly positive fields refuse 0, rates refuse inf, ``substeps`` at least 1, and no
    field takes a bool for a number; the error names the field."""
    with pytest.raises(ValueError, match=f"{field}: expected"):
        PlumeConfig(**{field: value})


def test_config_walls_and_inflow_bounds():
    """Walls must leave an interior (``2 walls < size``); the inflow lies in the closed
    square ``[-L/2, L/2]^2`` (both edges: their polar angles, hence forces, differ)."""
    assert PlumeConfig(size=8, walls=3).walls == 3
    with pytest.raises(ValueError, match="walls"):
        PlumeConfig(size=8, walls=4)
    assert PlumeConfig(inflow_position=(-0.5, -0.5)).inflow_position == (-0.5, -0.5)
    assert PlumeConfig(inflow_position=(0.5, 0.5)).inflow_position == (0.5, 0.5)
    with pytest.raises(ValueError, match=r"inflow_position: expected \(x, y\) in \[-0.5, 0.5\]"):
        PlumeConfig(inflow_position=(0.51, 0.0))
    with pytest.raises(ValueError, match="inflow_position"):
        PlumeConfig(inflow_position=(0.0, -0.51))


def test_config_stability_bound_uses_the_diagonal_wavenumber_and_both_diffusivities():
    """RK3 stability needs ``(max(nu, kappa) k_max^2 + drag) dt <= 2`` with the largest kept
    wavevector ``(2 pi / L)(N / 3)(1, 1)``: for N = 64, dt = 0.01, drag = 0.1 the limit is
    ``nu <= 199.9 / (2 (2 pi 64 / 3)^2) ~ 5.56e-3``."""
    k_max_sq = 2 * (2 * math.pi * 64 / 3) ** 2
    limit = (2.0 / 0.01 - 0.1) / k_max_sq
    assert limit == pytest.approx(5.563e-3, rel=1e-3)
    PlumeConfig(viscosity=0.99 * limit)
    PlumeConfig(diffusivity=0.99 * limit)
    with pytest.raises(ValueError, match="dt: diffusion is unstable"):
        PlumeConfig(viscosity=1.2 * limit)  # stable along an axis, not along the diagonal
    with pytest.raises(ValueError, match="dt: diffusion is unstable"):
        PlumeConfig(diffusivity=1.2 * limit)


def test_rotation_keeps_edge_inflows_on_their_edge_and_takes_negative_turns():
    """An inflow turned onto ``x = L/2`` stays there (wrapped to ``-L/2`` its polar angle,
    hence the force, would turn by a half turn); ``k = -1`` is ``k = 3``."""
    cfg = PlumeConfig(inflow_position=(0.0, -0.5))
    assert cfg.rotated(1).inflow_position == (0.5, 0.0)
    assert cfg.rotated(2).inflow_position == (0.0, 0.5)
    off_axis = PlumeConfig(inflow_position=(0.1, -0.3))
    assert off_axis.rotated(-1).inflow_position == pytest.approx((-0.3, -0.1))
    assert off_axis.rotated(-1) == off_axis.rotated(3)
    assert off_axis.rotated(4) == off_axis
    with pytest.raises(TypeError, match="k: expected an integer number of quarter turns, got 1.5"):
        off_axis.rotated(1.5)


@pytest.mark.parametrize("position", [(0.0, -0.5), (-0.5, -0.5), (0.5, 0.2), (0.1, -0.3)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotated_config_turns_the_force_with_it_also_on_the_edge(position, k):
    """For ``s = 0`` the force of the rotated config is the rotated force, wherever the
    inflow sits (an inflow on the edge or in a corner included)."""
    cfg = PlumeConfig(inflow_position=position)
    c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
    fx, fy = cfg.force()
    assert cfg.rotated(k).force() == pytest.approx((c * fx - s * fy, s * fx + c * fy), abs=1e-12)


@pytest.mark.parametrize(("position", "k"), [((0.0, -0.5), 1), ((-0.5, -0.5), 2)])
def test_rotated_config_with_an_edge_inflow_commutes_with_the_dynamics(position, k):
    """Simulating the rotated config from the rotated state gives the rotated fields, also
    for an inflow on the domain's edge or corner (before: its force turned the wrong way)."""
    cfg = SMALL.replace(inflow_position=position)
    (vel_a, rho_a), (vel_b, rho_b) = _rotated_run(cfg, 20, k)
    assert _rel(vel_a, vel_b) < 1e-10 and _rel(rho_a, rho_b) < 1e-10


def test_a_centre_inflow_has_polar_angle_zero_after_any_turn():
    """Signed zeros are dropped: ``(-0.0, 0.0)`` (a turned centre) is the centre, angle 0."""
    centre = PlumeConfig(inflow_position=(0.0, 0.0))
    for k in range(4):
        assert centre.rotated(k).inflow_angle == 0.0
    assert math.copysign(1.0, PlumeConfig(inflow_position=(-0.0, 0.3)).inflow_position[0]) == 1.0


# --------------------------------------------------------------------------- dataset

TINY = dict(
    num_train_simulations=2,
    num_domain_simulations=1,
    frames=12,
    future_frames=5,
    input_frames=3,
    target_frames=2,
    base_config=PlumeConfig(size=16, initial_vorticity=1.0, warmup_steps=4),
    seed=5,
)


def test_dataset_splits_and_items():
    train = SmokePlumeDataset(split="train", symmetry_breaking=0.2, **TINY)
    future = SmokePlumeDataset(split="future", symmetry_breaking=0.2, **TINY)
    domain = SmokePlumeDataset(split="domain", symmetry_breaking=0.2, **TINY)
    assert len(train) == 2 * (7 - 5 + 1) and len(future) == 2 * 1 and len(domain) == 3
    x, y = train[0]
    assert x.shape == (3, 2, 16, 16) and y.shape == (2, 2, 16, 16)
    assert torch.equal(train.data, future.data)  # same simulations, later frames
    assert future.window(0) == (0, 7)
    assert train.frame_range == (0, 7) and future.frame_range == (7, 12)  # past / future
    # training inflows near the axes, domain inflows near the diagonals
    for cfg in train.configs:
        angle = cfg.inflow_angle % (math.pi / 2)
        assert min(angle, math.pi / 2 - angle) <= math.pi / 8 + 1e-9
    for cfg in domain.configs:
        assert abs(cfg.inflow_angle % (math.pi / 2) - math.pi / 4) <= math.pi / 8 + 1e-9
        assert cfg.symmetry_breaking == 0.2
    both = SmokePlumeDataset(split="train", fields="velocity+density", **TINY)
    assert both[0][0].shape == (3, 3, 16, 16) and both.layout == "1x1o + 1x0e"
    layout = FieldLayout(both.layout)
    assert layout.to_nodes(both[0][0]).shape == (3 * 256, 4)


def test_dataset_is_deterministic_and_cached_atomically(tmp_path):
    a = SmokePlumeDataset(tmp_path, "domain", **TINY)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("smoke_plume_") and files[0].endswith(".pt")
    with mock.patch.object(SmokePlumeDataset, "_generate", side_effect=AssertionError("regen")):
        b = SmokePlumeDataset(tmp_path, "domain", **TINY)  # read from the cache
    c = SmokePlumeDataset(None, "domain", **TINY)  # regenerated in memory
    assert torch.equal(a.data, b.data) and torch.equal(a.data, c.data)
    other = SmokePlumeDataset(tmp_path, "domain", **{**TINY, "seed": 6})
    assert not torch.equal(other.data, a.data)
    assert len(list(tmp_path.iterdir())) == 2  # one file per parameter set, no leftovers


def test_dataset_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SmokePlumeDataset(split="test", **TINY)
    with pytest.raises(ValueError, match="frames"):
        SmokePlumeDataset(**{**TINY, "future_frames": 2})
    with pytest.raises(ValueError, match="symmetry_breaking"):
        SmokePlumeDataset(symmetry_breaking=-0.1, **TINY)


def quarter(cfg):
    """The axis (0, 1, 2, 3 quarter turns) an inflow sits near."""
    turn = round(cfg.inflow_angle / (math.pi / 2)) % 4
    offset = cfg.inflow_angle - turn * math.pi / 2
    assert abs(math.remainder(offset, 2 * math.pi)) <= math.pi / 8 + 1e-9
    return turn


def test_dataset_half_turn_domain_split():
    train = SmokePlumeDataset(split="train", domain_split="half-turn", **{**TINY, "seed": 3})
    domain = SmokePlumeDataset(split="domain", domain_split="half-turn", **{**TINY, "seed": 3})
    # training inflows near the axes 0 and pi/2, taken in turn; domain ones turned by pi
    assert [quarter(cfg) for cfg in train.configs] == [0, 1]
    assert [quarter(cfg) for cfg in domain.configs] == [2]
    assert domain.params["domain_split"] == "half-turn"
    default = SmokePlumeDataset(split="train", **TINY)
    assert "domain_split" not in default.params  # the default keeps its cache key
    with pytest.raises(ValueError, match="domain_split"):
        SmokePlumeDataset(domain_split="random", **TINY)


def test_dataset_three_quarter_domain_split():
    """Training inflows near three axes in turn, domain inflows near the fourth only."""
    options = {**TINY, "num_train_simulations": 4, "num_domain_simulations": 2, "seed": 1}
    train = SmokePlumeDataset(split="train", domain_split="three-quarter", **options)
    domain = SmokePlumeDataset(split="domain", domain_split="three-quarter", **options)
    assert [quarter(cfg) for cfg in train.configs] == [0, 1, 2, 0]
    assert [quarter(cfg) for cfg in domain.configs] == [3, 3]
    assert train.params["domain_split"] == "three-quarter"


def test_dataset_rejects_bad_windows_distances_and_ranges():
    """Past and future must each hold a window; counts are true ints (no bools); the inflow
    distance lies in ``(0, 0.5)``; the buoyancy range is ordered and finite."""
    for bad in ({"future_frames": 4}, {"frames": 9}):  # windows of 5 frames
        with pytest.raises(ValueError, match="frames"):
            SmokePlumeDataset(**{**TINY, **bad})
    with pytest.raises(ValueError, match="stride"):
        SmokePlumeDataset(**{**TINY, "stride": True})
    for distance in (0.0, 0.5):
        with pytest.raises(ValueError, match="inflow_distance"):
            SmokePlumeDataset(**TINY, inflow_distance=distance)
    for bad_range in ((3.0, 2.0), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="buoyancy_range"):
            SmokePlumeDataset(**TINY, buoyancy_range=bad_range)


def test_dataset_items_are_consecutive_frames_and_channels_velocity_first():
    """An item is frames ``start .. start + 5`` of its simulation split 3 / 2; with density
    the channels are ``(u, v, density)``."""
    train = SmokePlumeDataset(split="train", **TINY)
    x, y = train[4]  # simulation 1, first frame 1 (three windows per simulation)
    assert torch.equal(torch.cat([x, y]), train.data[1, 1:6])
    future = SmokePlumeDataset(split="future", **TINY)
    x, y = future[-1]
    assert torch.equal(torch.cat([x, y]), train.data[1, 7:12])
    both = SmokePlumeDataset(split="train", fields="velocity+density", **TINY)
    assert torch.equal(both.data[:, :, :2], train.data)
    assert float(both.data[:, :, 2].mean()) > 0  # smoke was injected


def test_dataset_inflows_and_forces_follow_the_arguments():
    """Inflows sit at ``inflow_distance * L`` from the centre, forces within ``buoyancy_range``."""
    base = PlumeConfig(size=16, length=2.0, initial_vorticity=1.0, warmup_steps=4)
    options = {**TINY, "base_config": base, "num_train_simulations": 4, "frames": 10}
    data = SmokePlumeDataset(**options, inflow_distance=0.2, buoyancy_range=(1.0, 1.2))
    for cfg in data.train_configs + data.domain_configs:
        assert math.hypot(*cfg.inflow_position) == pytest.approx(0.4)
        assert 1.0 <= cfg.buoyancy <= 1.2


def test_dataset_cache_key_and_stale_files(tmp_path):
    """Another base configuration gets its own file; a file under the key whose stored
    parameters differ is not trusted but regenerated."""
    a = SmokePlumeDataset(tmp_path, "domain", **TINY)
    base = TINY["base_config"].replace(inflow_radius=0.05)
    b = SmokePlumeDataset(tmp_path, "domain", **{**TINY, "base_config": base})
    assert a.cache_path != b.cache_path and len(list(tmp_path.iterdir())) == 2
    stored = torch.load(a.cache_path, weights_only=True)
    zeros = {k: torch.zeros_like(v) for k, v in stored["tensors"].items()}
    torch.save({"params": {**stored["params"], "seed": 99}, "tensors": zeros}, a.cache_path)
    assert torch.equal(SmokePlumeDataset(tmp_path, "domain", **TINY).data, a.data)


def test_an_unreadable_cache_is_regenerated_with_a_warning(tmp_path):
    """A truncated cache file (a crash of another writer, a full disk) is treated as stale:
    regenerated, with a warning naming the file, rather than torch's bare error."""
    first = SmokePlumeDataset(tmp_path, "domain", **TINY)
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=f"cache {first.cache_path} could not be read"):
        again = SmokePlumeDataset(tmp_path, "domain", **TINY)
    assert torch.equal(again.data, first.data)
    SmokePlumeDataset(tmp_path, "domain", **TINY)  # rewritten: readable again


def test_dataset_refuses_non_integer_seeds_and_non_number_distances():
    for seed in (1.5, True, "1"):
        with pytest.raises(ValueError, match="seed: expected an integer"):
            SmokePlumeDataset(**{**TINY, "seed": seed})
    for distance in ("0.3", None, True):
        with pytest.raises(ValueError, match="inflow_distance: expected a fraction"):
            SmokePlumeDataset(**TINY, inflow_distance=distance)


def test_config_accepts_numpy_breaking_levels_but_not_bools():
    import numpy as np

    config = PlumeConfig(size=16, symmetry_breaking=np.float32(0.5))
    assert config.symmetry_breaking == 0.5 and type(config.symmetry_breaking) is float
    assert PlumeConfig(size=16, symmetry_breaking=np.int64(1)).symmetry_breaking == 1
    for bad in (True, np.float64(1.5), "0.5"):
        with pytest.raises(ValueError, match="symmetry_breaking: expected a number in"):
            PlumeConfig(size=16, symmetry_breaking=bad)


def test_force_reload_regenerates_a_valid_cache(tmp_path):
    """A cache file with the right parameters is read, unless ``force_reload`` is given."""
    first = SmokePlumeDataset(tmp_path, "domain", **TINY)
    calls = []
    original = SmokePlumeDataset._generate

    def counted(self):
        calls.append(1)
        return original(self)

    with mock.patch.object(SmokePlumeDataset, "_generate", counted):
        SmokePlumeDataset(tmp_path, "domain", **TINY)
        assert calls == []
        again = SmokePlumeDataset(tmp_path, "domain", force_reload=True, **TINY)
    assert calls == [1] and torch.equal(again.data, first.data)


# --------------------------------------------------------------------------- ocean sample


def test_ocean_currents_sample_loads(shared_data):
    folder = shared_data / "fluids" / "ocean_currents"
    data = load_ocean_currents(folder / "ocean_current_sample.npy")
    assert data.shape == (50, 2, 64, 64) and data.dtype == torch.float32
    assert data.is_contiguous() and bool(torch.isfinite(data).all())
    assert float(data.std()) == pytest.approx(0.615, abs=0.01)
    assert torch.equal(load_ocean_currents(folder), data)  # a folder works too
    from_pt = load_ocean_currents(folder / "ocean_current_sample.pt")
    assert torch.equal(from_pt, data)
    # velocity frames map onto the lattice as 1o node features, and back
    lattice = Lattice((64, 64))
    layout = FieldLayout("1x1o")
    nodes = layout.to_nodes(data[:4], lattice)
    assert nodes.shape == (4 * 4096, 3) and torch.equal(
        layout.to_field(nodes, lattice, 4), data[:4]
    )


def test_ocean_currents_bad_files(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((50, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected a velocity sequence of shape \[T, 2, H, W\]"):
        load_ocean_currents(bad)
    with pytest.raises(FileNotFoundError):
        load_ocean_currents(tmp_path / "missing.npy")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((2, 2, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        load_ocean_currents(nan)


@pytest.mark.parametrize("where", [".", "ocean_currents", "fluids/ocean_currents"])
def test_ocean_currents_are_found_in_each_documented_folder(tmp_path, where):
    frames = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    folder = tmp_path / where
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "ocean_current_sample.npy", frames)
    assert torch.equal(load_ocean_currents(tmp_path), torch.from_numpy(frames))


def test_ocean_currents_dtype_and_layout(tmp_path):
    frames = np.linspace(-1.0, 1.0, 2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    np.save(tmp_path / "frames.npy", frames)
    wide = load_ocean_currents(tmp_path / "frames.npy", dtype=torch.float64)
    assert wide.dtype == torch.float64
    assert torch.equal(wide, torch.from_numpy(frames).double())
    transposed = torch.from_numpy(frames).transpose(2, 3)  # [T, 2, W, H], not contiguous
    torch.save(transposed, tmp_path / "frames.pt")
    loaded = load_ocean_currents(tmp_path / "frames.pt")
    assert loaded.is_contiguous() and torch.equal(loaded, transposed)


def test_ocean_currents_refuse_other_contents(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: no such file"):
        load_ocean_currents(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="path: no ocean_current_sample.npy"):
        load_ocean_currents(tmp_path)  # a folder without the sample
    torch.save({"u": torch.zeros(2, 2, 4, 4)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="to hold one tensor, got dict"):
        load_ocean_currents(tmp_path / "dict.pt")
    np.save(tmp_path / "flat.npy", np.zeros((5, 2, 8), dtype=np.float32))
    with pytest.raises(
        ValueError, match=r"\[T, 2, H, W\] \(channels u, v\), got shape \[5, 2, 8\]"
    ):
        load_ocean_currents(tmp_path / "flat.npy")
    np.save(tmp_path / "counts.npy", np.ones((2, 2, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="expected floating-point values, got dtype torch.int64"):
        load_ocean_currents(tmp_path / "counts.npy")


# --------------------------------------------------------------------------- exact solutions
QUIET = SMALL.replace(buoyancy=0.0, inflow_rate=0.0, initial_vorticity=0.0, substeps=1)


def _shear(config: PlumeConfig, amplitude: float, mode: int):
    """Vorticity ``A sin(k x)`` (``k = 2π mode / L``, varying along the last axis) and its
    velocity ``u = 0``, ``v = -A cos(k x) / k`` (from ``-lap psi = omega``). The advection
    terms of this shear flow vanish: it only decays, ``d omega / dt = -(nu k² + drag) omega``."""
    x = torch.arange(config.size, dtype=torch.float64) * config.spacing
    k = 2 * math.pi * mode / config.length
    n = config.size
    return (
        amplitude * torch.sin(k * x).expand(n, n),
        (-amplitude / k * torch.cos(k * x)).expand(n, n),
        k,
    )


def _rk3(z: float) -> float:
    """Amplification of ``y' = λ y`` by one SSP-RK3 step, ``z = λ dt``: the cubic Taylor
    polynomial of ``exp(z)``."""
    return 1 + z + z**2 / 2 + z**3 / 6


def test_one_step_of_linear_modes_is_the_rk3_polynomial():
    """A decaying shear flow and a smoke profile along x (no buoyancy, no source): each mode
    is multiplied by the SSP-RK3 amplification of its linear rate in one step."""
    cfg = QUIET
    w0, v0, k = _shear(cfg, 2.0, mode=2)
    x = torch.arange(cfg.size, dtype=torch.float64) * cfg.spacing
    k_rho = 2 * math.pi * 3 / cfg.length
    rho0 = 0.5 + 0.2 * torch.cos(k_rho * x).expand(cfg.size, cfg.size)
    vel, rho = simulate_plume(
        cfg, 1, initial_vorticity=w0, initial_density=rho0, dtype=torch.float64
    )
    decay_w = _rk3(-(cfg.viscosity * k**2 + cfg.drag) * cfg.dt)
    torch.testing.assert_close(vel[0, 0], torch.zeros_like(v0), rtol=0, atol=1e-12)
    torch.testing.assert_close(vel[0, 1], v0 * decay_w, rtol=0, atol=1e-12)
    mean = 0.5 * _rk3(-cfg.density_decay * cfg.dt)
    wave = 0.2 * _rk3(-(cfg.diffusivity * k_rho**2 + cfg.density_decay) * cfg.dt)
    expected = mean + wave * torch.cos(k_rho * x).expand(cfg.size, cfg.size)
    torch.testing.assert_close(rho[0, 0], expected, rtol=0, atol=1e-12)


def test_modes_outside_the_two_thirds_mask_are_removed():
    """The state lives in ``|k_x|, |k_y| < N / 3``: on a 32 grid mode 10 is kept, mode 11
    (``11 > 32 / 3``) is removed from the initial vorticity."""
    speeds = []
    for mode in (10, 11):
        w0, v0, _ = _shear(QUIET, 1.0, mode)
        vel, _ = simulate_plume(QUIET, 1, initial_vorticity=w0, dtype=torch.float64)
        speeds.append(float(vel.abs().max()) / float(v0.abs().max()))
    assert speeds[0] > 0.9 and speeds[1] < 1e-12


def test_a_cfl_number_between_one_and_two_is_reported():
    """A shear flow is stable at any speed (no advection), so only the CFL check stops it:
    ``max |v| dt / dx = 1.5`` is refused, ``0.9`` is not."""
    for cfl in (0.9, 1.5):
        k = 2 * math.pi * 2 / QUIET.length
        w0, _, _ = _shear(QUIET, cfl * k * QUIET.spacing / QUIET.dt, mode=2)
        if cfl < 1:
            simulate_plume(QUIET, 1, initial_vorticity=w0, dtype=torch.float64)
            continue
        with pytest.raises(RuntimeError, match=r"CFL number 1\.\d\d > 1"):
            simulate_plume(QUIET, 1, initial_vorticity=w0, dtype=torch.float64)


def test_random_initial_vorticity_has_the_configured_rms():
    """Each simulation of a batch starts from a field of RMS ``config.initial_vorticity``."""
    from symgraph.data.fluids.solver import PlumeSolver

    solver = PlumeSolver([SMALL, SMALL.replace(initial_vorticity=2.5)], dtype=torch.float64)
    field = solver.random_vorticity(torch.Generator().manual_seed(0))
    rms = field.pow(2).mean(dim=(-2, -1)).sqrt()
    torch.testing.assert_close(
        rms, torch.tensor([1.0, 2.5], dtype=torch.float64), rtol=1e-12, atol=0
    )


def test_spectral_divergence_drops_the_nyquist_modes_of_both_axes():
    """``cos(π N x)`` (the Nyquist mode) has zero slope at every sample: the divergence of
    ``(cos(π N x) sin(2π y), sin(2π x) cos(π N y))`` on an even grid is zero."""
    n = 10
    c = torch.arange(n, dtype=torch.float64) / n
    nyquist, wave = torch.cos(math.pi * n * c), torch.sin(2 * math.pi * c)
    u = wave[:, None] * nyquist[None, :]  # rows are y, columns x
    v = nyquist[:, None] * wave[None, :]
    div = spectral_divergence(torch.stack([u, v]), 1.0)
    assert float(div.abs().max()) < 1e-12


# --------------------------------------------------------------------------- argument checks


def test_ocean_currents_refuse_an_integer_dtype(tmp_path):
    """An integer ``dtype`` would truncate the velocities (|u| < 2.5 m/s) to -2 .. 2."""
    np.save(tmp_path / "frames.npy", np.full((2, 2, 4, 4), 0.7, dtype=np.float32))
    with pytest.raises(TypeError, match="dtype: expected a floating-point torch.dtype"):
        load_ocean_currents(tmp_path / "frames.npy", dtype=torch.int32)
    half = load_ocean_currents(tmp_path / "frames.npy", dtype=torch.float16)
    assert half.dtype == torch.float16


@pytest.mark.parametrize("position", [0.1, (0.1,), (0.1, "a"), (0.1, None), (0.1, 0.2, 0.3)])
def test_config_names_an_inflow_position_that_is_not_a_pair_of_numbers(position):
    with pytest.raises(ValueError, match="inflow_position: expected finite"):
        PlumeConfig(inflow_position=position)


@pytest.mark.parametrize("bad_range", [2.0, (1.0,), (1.0, 2.0, 3.0), ("a", 2.0)])
def test_dataset_names_a_buoyancy_range_that_is_not_a_pair(bad_range):
    with pytest.raises(ValueError, match=r"buoyancy_range: expected a pair \(low, high\)"):
        SmokePlumeDataset(**TINY, buoyancy_range=bad_range)


@pytest.mark.parametrize("length", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_spectral_divergence_refuses_a_side_that_is_not_positive(length):
    with pytest.raises(ValueError, match="length: expected a positive finite side L"):
        spectral_divergence(torch.zeros(2, 8, 8), length)
