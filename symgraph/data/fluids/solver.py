"""A periodic pseudo-spectral vorticity-streamfunction solver for 2D smoke plumes.

Equations on the periodic square (``omega`` vorticity, ``rho`` smoke density,
``u = (d psi / dy, -d psi / dx)`` with ``-lap psi = omega``, so ``div u = 0`` exactly):

    d omega / dt = -div(u omega) + nu lap omega - drag omega + curl(rho F)
    d rho / dt   = -div(u rho)   + kappa lap rho - decay rho + S(x)

``curl(rho F) = F_y d rho / dx - F_x d rho / dy`` for the constant buoyant force ``F`` of
:meth:`PlumeConfig.force`; ``S`` is a Gaussian source at the inflow (minimum-image distance).
Derivatives are spectral (``rfft2``), products are formed on the grid and de-aliased by
the 2/3 rule with a square mask ``|k_x|, |k_y| < N / 3``; the state is kept inside that mask
(which also removes the Nyquist modes), so the discrete operators commute with the
90-degree rotations and reflections of the grid. Time stepping is the strong-stability-
preserving Runge-Kutta 3 scheme of Shu and Osher. Optional walls use volume penalisation:
after every step the velocity and smoke are zeroed inside the solid frame and the velocity
is projected back to a divergence-free field (by taking its curl).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from symgraph.checks import is_finite_real, is_int
from symgraph.data.fluids.config import PlumeConfig

__all__ = ["PlumeSolver", "simulate_plume", "simulate_plumes", "spectral_divergence"]

_SHARED = (
    "size",
    "length",
    "dt",
    "viscosity",
    "diffusivity",
    "drag",
    "density_decay",
    "walls",
    "substeps",
    "warmup_steps",
)


def _wavenumbers(n: int, length: float, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """``ky [N, 1]`` and ``kx [1, N // 2 + 1]`` angular wavenumbers in rfft2 layout."""
    scale = 2 * math.pi / length
    ky = torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device) * scale
    kx = torch.fft.rfftfreq(n, d=1.0 / n, dtype=dtype, device=device) * scale
    return ky[:, None], kx[None, :]


def spectral_divergence(velocity: Tensor, length: float = 1.0) -> Tensor:
    """Spectral ``du/dx + dv/dy`` of periodic fields ``[..., 2, H, W]`` -> ``[..., H, W]``."""
    if velocity.dim() < 3 or velocity.shape[-3] != 2 or velocity.shape[-1] != velocity.shape[-2]:
        raise ValueError(
            f"velocity: expected [..., 2, N, N] (u, v channels), got {list(velocity.shape)}"
        )
    if not (is_finite_real(length) and length > 0):
        raise ValueError(f"length: expected a positive finite side L, got {length!r}")
    n = velocity.shape[-1]
    ky, kx = _wavenumbers(n, length, velocity.dtype, velocity.device)
    kx = kx.clone()
    ky = ky.clone()
    if n % 2 == 0:  # the Nyquist modes (even N only) have no odd derivative: drop them
        kx[..., n // 2] = 0
        ky[n // 2] = 0
    hat = torch.fft.rfft2(velocity)
    div = 1j * kx * hat[..., 0, :, :] + 1j * ky * hat[..., 1, :, :]
    return torch.fft.irfft2(div, s=(n, n))


class PlumeSolver:
    """Batched solver: one simulation per config, all sharing grid and physical constants.

    Args:
        configs: the simulations; fields in ``_SHARED`` (grid, ``dt``, viscosities, drag,
            decay, walls) must agree, the inflow and force may differ.
        dtype: float32 or float64 (the state is complex of matching precision).
        device: where to run.
    """

    def __init__(
        self,
        configs: Sequence[PlumeConfig],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        configs = list(configs)
        if not configs or not all(isinstance(c, PlumeConfig) for c in configs):
            raise TypeError("configs: expected a non-empty sequence of PlumeConfig")
        for name in _SHARED:
            values = {getattr(c, name) for c in configs}
            if len(values) > 1:
                raise ValueError(f"configs: `{name}` must be equal across a batch, got {values}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.configs = configs
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        cfg = configs[0]
        n, length = cfg.size, cfg.length
        self.n = n
        ky, kx = _wavenumbers(n, length, dtype, self.device)
        self.ikx = 1j * kx
        self.iky = 1j * ky
        k2 = kx**2 + ky**2
        self.inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        cut = n / 3
        index_y = torch.fft.fftfreq(n, d=1.0 / n, device=self.device).abs()[:, None]
        index_x = torch.fft.rfftfreq(n, d=1.0 / n, device=self.device)[None, :]
        self.mask = ((index_y < cut) & (index_x < cut)).to(dtype)
        cdtype = self.ikx.dtype
        # spectral operators as complex tensors (no real -> complex copies per step)
        self._cmask = self.mask.to(cdtype)
        self._grad = torch.stack(torch.broadcast_tensors(self.ikx, self.iky))[:, None]  # [2,1,N,M]
        self._vel = torch.stack(
            torch.broadcast_tensors(self.iky * self.inv_k2, -self.ikx * self.inv_k2)
        )  # [2, N, M]
        self._linear = torch.stack(
            [-(cfg.viscosity * k2 + cfg.drag), -(cfg.diffusivity * k2 + cfg.density_decay)]
        ).to(cdtype)  # [2, N, M]: (vorticity, density)

        force = torch.tensor([c.force() for c in configs], dtype=dtype, device=self.device)
        fx, fy = force[:, 0, None, None], force[:, 1, None, None]
        self.curl_force = (self.ikx * fy - self.iky * fx) * self.mask  # [B, N, M], times rho_hat
        self.source_hat = torch.fft.rfft2(self._sources()) * self.mask  # [B, N, M]
        self.fluid = None
        if cfg.walls:
            fluid = torch.zeros(n, n, dtype=dtype, device=self.device)
            w = cfg.walls
            fluid[w : n - w, w : n - w] = 1
            self.fluid = fluid

    # -- setup ------------------------------------------------------------------------
    def coordinates(self) -> tuple[Tensor, Tensor]:
        """``x [1, N]`` and ``y [N, 1]`` cell-centre coordinates (centred domain)."""
        cfg = self.configs[0]
        c = torch.arange(self.n, dtype=torch.float64, device=self.device) - (self.n - 1) / 2
        c = (c * cfg.spacing).to(self.dtype)
        return c[None, :], c[:, None]

    def _sources(self) -> Tensor:
        x, y = self.coordinates()
        length = self.configs[0].length
        out = []
        for c in self.configs:
            px, py = c.inflow_position
            dx = torch.remainder(x - px + length / 2, length) - length / 2
            dy = torch.remainder(y - py + length / 2, length) - length / 2
            r2 = dx**2 + dy**2
            out.append(c.inflow_rate * torch.exp(-r2 / (2 * c.inflow_radius**2)))
        return torch.stack(out)

    def random_vorticity(self, generator: torch.Generator | None = None) -> Tensor:
        """``[B, N, N]`` smooth random vorticity with RMS ``config.initial_vorticity``."""
        b = len(self.configs)
        noise = torch.randn(b, self.n, self.n, generator=generator, dtype=torch.float64)
        hat = torch.fft.rfft2(noise.to(self.device, self.dtype))
        ky, kx = _wavenumbers(self.n, self.configs[0].length, self.dtype, self.device)
        k2 = (kx**2 + ky**2) * (self.configs[0].length / (2 * math.pi)) ** 2  # in mode units
        hat = hat * torch.exp(-k2 / 16.0) * self.mask * (k2 > 0)
        field = torch.fft.irfft2(hat, s=(self.n, self.n))
        rms = field.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-30)
        amp = torch.tensor([c.initial_vorticity for c in self.configs], dtype=self.dtype)
        return field / rms * amp.to(self.device)[:, None, None]

    # -- dynamics ---------------------------------------------------------------------
    # The state is ``[B, 2, N, N // 2 + 1]`` complex: the rfft2 of (vorticity, density).

    def velocity_hat(self, w_hat: Tensor) -> Tensor:
        """Spectral velocity ``[..., 2, N, M]`` (u_hat, v_hat) of a vorticity ``[..., N, M]``."""
        return self._vel * w_hat.unsqueeze(-3)

    def rhs(self, state: Tensor) -> Tensor:
        """Time derivative of the spectral state ``[B, 2, N, N // 2 + 1]``."""
        n = self.n
        vel_hat = self.velocity_hat(state[:, 0])
        phys = torch.fft.irfft2(torch.cat([vel_hat, state], 1), s=(n, n))  # u, v, w, rho
        flux = torch.fft.rfft2(phys[:, :2, None] * phys[:, None, 2:])  # [B, (u,v), (w,rho)]
        adv = (self._grad * flux).sum(1)  # div(u w), div(u rho)
        forcing = torch.stack([self.curl_force * state[:, 1], self.source_hat], 1)
        return forcing + self._linear * state - adv * self._cmask

    def step(self, state: Tensor) -> Tensor:
        """One SSP-RK3 step of ``dt`` (then wall penalisation, if any)."""
        dt = self.configs[0].dt
        s1 = state + dt * self.rhs(state)
        s2 = 0.75 * state + 0.25 * (s1 + dt * self.rhs(s1))
        s3 = state / 3 + 2 / 3 * (s2 + dt * self.rhs(s2))
        if self.fluid is not None:
            s3 = self._penalise(s3)
        return s3

    def _penalise(self, state: Tensor) -> Tensor:
        phys = self._physical(state) * self.fluid
        hat = torch.fft.rfft2(phys) * self._cmask
        w_hat = self.ikx * hat[:, 1] - self.iky * hat[:, 0]  # curl: drops the gradient part
        return torch.stack([w_hat, hat[:, 2]], 1)

    def _physical(self, state: Tensor) -> Tensor:
        """``[B, 3, N, N]`` grid (u, v, density) of a spectral state."""
        both = torch.cat([self.velocity_hat(state[:, 0]), state[:, 1:]], 1)
        return torch.fft.irfft2(both, s=(self.n, self.n))

    def to_fields(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Grid ``velocity [B, 2, N, N]`` (u, v) and ``density [B, 1, N, N]``."""
        phys = self._physical(state)
        return phys[:, :2], phys[:, 2:]

    def run(
        self,
        frames: int,
        initial_vorticity: Tensor | None = None,
        initial_density: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Simulate ``frames`` frames of ``substeps`` steps each, after ``warmup_steps``.

        Args:
            frames: number of returned frames ``T`` (>= 1).
            initial_vorticity: ``[B, N, N]``; default: :meth:`random_vorticity` (zero when
                ``initial_vorticity`` of the config is 0).
            initial_density: ``[B, N, N]``; default zero.
            generator: random source of the default initial vorticity.

        Returns:
            ``velocity [B, T, 2, N, N]`` and ``density [B, T, 1, N, N]`` in ``dtype``.

        Raises:
            RuntimeError: when the run blows up (CFL number above 1 or non-finite values).
        """
        if not is_int(frames) or frames < 1:
            raise ValueError(f"frames: expected a positive integer, got {frames!r}")
        frames = int(frames)
        b, n = len(self.configs), self.n
        w0 = self._initial(initial_vorticity, "initial_vorticity", generator)
        r0 = self._initial(initial_density, "initial_density", None)
        w_hat = torch.fft.rfft2(w0) * self.mask * (self.inv_k2 > 0)  # no mean vorticity
        state = torch.stack([w_hat, torch.fft.rfft2(r0) * self.mask], 1)
        cfg = self.configs[0]
        for _ in range(cfg.warmup_steps):
            state = self.step(state)
        velocity = torch.empty(b, frames, 2, n, n, dtype=self.dtype, device=self.device)
        density = torch.empty(b, frames, 1, n, n, dtype=self.dtype, device=self.device)
        for t in range(frames):
            for _ in range(cfg.substeps):
                state = self.step(state)
            vel, rho = self.to_fields(state)
            self._check_stable(vel, rho, t)
            velocity[:, t], density[:, t] = vel, rho
        return velocity, density

    def _initial(self, value: Tensor | None, name: str, generator) -> Tensor:
        b, n = len(self.configs), self.n
        if value is None:
            if name == "initial_vorticity" and any(c.initial_vorticity for c in self.configs):
                return self.random_vorticity(generator)
            return torch.zeros(b, n, n, dtype=self.dtype, device=self.device)
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a tensor [B, N, N], got {type(value).__name__}")
        if value.dim() == 2:
            value = value[None].expand(b, n, n) if value.shape == (n, n) else value
        if value.shape != (b, n, n):
            raise ValueError(f"{name}: expected shape [{b}, {n}, {n}], got {list(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}: expected finite values, got NaN/inf")
        return value.to(self.device, self.dtype)

    def _check_stable(self, vel: Tensor, rho: Tensor, frame: int) -> None:
        cfg = self.configs[0]
        if not (bool(torch.isfinite(vel).all()) and bool(torch.isfinite(rho).all())):
            raise RuntimeError(
                f"simulation blew up (non-finite values) at frame {frame}; "
                "reduce dt or the buoyancy"
            )
        cfl = float(vel.abs().amax()) * cfg.dt / cfg.spacing
        if cfl > 1.0:
            raise RuntimeError(
                f"simulation unstable at frame {frame}: CFL number {cfl:.2f} > 1 "
                f"(max speed {float(vel.abs().amax()):.3g}, dt {cfg.dt}); reduce dt"
            )


def simulate_plumes(
    configs: Sequence[PlumeConfig],
    steps: int,
    generator: torch.Generator | None = None,
    *,
    initial_vorticity: Tensor | None = None,
    initial_density: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Batched :func:`simulate_plume`: ``velocity [B, T, 2, N, N]``, ``density [B, T, 1, N, N]``."""
    solver = PlumeSolver(configs, dtype=dtype, device=device)
    return solver.run(steps, initial_vorticity, initial_density, generator)


def simulate_plume(
    config: PlumeConfig,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    initial_vorticity: Tensor | None = None,
    initial_density: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Simulate one smoke plume.

    Args:
        config: the setup.
        steps: number of returned frames ``T``; frame ``t`` is the state after
            ``warmup_steps + (t + 1) * substeps`` solver steps.
        generator: random source of the initial vorticity (when
            ``config.initial_vorticity > 0`` and none is given; ``None``: torch's global RNG).
        initial_vorticity, initial_density: optional ``[N, N]`` initial fields.
        dtype, device: precision and device of the computation and the result.

    Returns:
        ``velocity [T, 2, N, N]`` (channels ``(u, v)``) and ``density [T, 1, N, N]``.
    """
    if not isinstance(config, PlumeConfig):
        raise TypeError(f"config: expected a PlumeConfig, got {type(config).__name__}")
    fields = []
    for name, value in (
        ("initial_vorticity", initial_vorticity),
        ("initial_density", initial_density),
    ):
        if value is not None:
            if not isinstance(value, Tensor) or value.shape != (config.size, config.size):
                got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
                want = f"[{config.size}, {config.size}]"
                raise ValueError(f"{name}: expected shape {want}, got {got}")
            value = value[None]
        fields.append(value)
    velocity, density = simulate_plumes(
        [config],
        steps,
        generator,
        initial_vorticity=fields[0],
        initial_density=fields[1],
        dtype=dtype,
        device=device,
    )
    return velocity[0], density[0]
