"""Next-frame predictors for 2D fluid fields on a periodic grid, and autoregressive rollouts.

Every model maps the last ``T`` frames ``[B, T, C, H, W]`` of a field with a
:class:`~symgraph.lattice.FieldLayout` (velocity ``"1x1o"`` -> channels ``(u, v)``; with
density ``"1x1o + 1x0e"``) to the next frame ``[B, C, H, W]``, as a residual update of the
last frame on the scale ``scale`` (a typical field magnitude: inputs are divided by it,
updates multiplied; one number for all channels, or one per field of the layout, e.g.
``(velocity, density)`` scales for ``"1x1o + 1x0e"``, see :func:`field_scales`):

- :class:`FluidCNN` -- ``conv``: plain ``torch.nn.Conv2d`` layers (circular padding) and
  SiLU, the baseline without symmetry;
- :class:`SteerableFluidNet` -- ``equivariant``: :class:`~symgraph.nn.ImplicitSteerableConv`
  layers and gated nonlinearities on the periodic lattice graph (through the lattice fast
  path: one dense conv per layer). Frames become node features of the representation
  ``T x`` each irrep of the layout (``"3x1o"`` for three velocity frames); the default
  group ``C4`` is the rotation group of the square grid, for which the model commutes
  exactly with quarter turns of the field (:func:`symgraph.lattice.rotate_field`);
- ``relaxed``: the same network of :class:`~symgraph.nn.RelaxedImplicitSteerableConv`
  layers, exactly equivariant at initialisation, whose non-equivariant pathways may grow
  where the data break the symmetry (penalty :func:`symgraph.nn.relaxation_penalty`); or,
  with ``relaxation="input"``, the ``equivariant`` network reading a learned global
  :class:`~symgraph.nn.SymmetryBreakingInput` in every layer.

:func:`build_fluid_model` builds any of the three by name with comparable parameter
counts; :func:`rollout` feeds predictions back to forecast several frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from symgraph.caching import tensor_cache
from symgraph.checks import check_finite, check_int, check_tensor, is_finite_real, is_int, is_real
from symgraph.groups import MatrixGroup, Rep, as_group, as_rep
from symgraph.lattice import FieldLayout, Lattice, LatticeGraph, lattice_graph
from symgraph.nn.activations import Gate, gate_rep
from symgraph.nn.conv import ImplicitSteerableConv
from symgraph.nn.relaxed_implicit import RelaxedImplicitSteerableConv
from symgraph.nn.symmetry_breaking import SymmetryBreakingInput

__all__ = [
    "FluidCNN",
    "SteerableFluidNet",
    "build_fluid_model",
    "check_stencil",
    "as_field_layout",
    "field_scales",
    "rescale_fields",
    "rollout",
    "FLUID_MODELS",
    "FLUID_FEATURES",
    "FLUID_RELAXATIONS",
]

#: the model names of :func:`build_fluid_model`.
FLUID_MODELS = ("conv", "equivariant", "relaxed")
#: the hidden features of the steerable models of :func:`build_fluid_model`.
FLUID_FEATURES = ("irreps", "regular")
#: how the ``relaxed`` model of :func:`build_fluid_model` may break the symmetry.
FLUID_RELAXATIONS = ("kernel", "input")


def _check_frames(frames: object, layout: FieldLayout, frames_in: int) -> Tensor:
    """``frames [B, T, C, H, W]`` with ``T = frames_in`` and ``C`` the layout's channels."""
    frames = check_tensor(frames, "frames")
    if frames.dim() != 5 or frames.shape[1] != frames_in:
        raise ValueError(
            f"frames: expected [B, {frames_in}, {layout.field_channels}, H, W] (the last "
            f"{frames_in} frames), got shape {list(frames.shape)}"
        )
    if frames.shape[2] != layout.field_channels:
        raise ValueError(
            f"frames: expected {layout.field_channels} channels per frame for layout "
            f"'{layout.irreps}', got {frames.shape[2]} (shape {list(frames.shape)})"
        )
    if not frames.is_floating_point():
        raise TypeError(f"frames: expected a floating-point tensor, got dtype {frames.dtype}")
    return check_finite(frames, "frames")


def check_stencil(radius: int, grid: int) -> None:
    """Refuse a stencil of ``radius`` cells that the periodic ``grid x grid`` lattice of the
    models cannot hold (it would wrap onto itself): :class:`Lattice` checks it."""
    check_int(radius, "radius")
    check_int(grid, "grid")
    Lattice((grid, grid), radius=radius, periodic=True)


def _check_scale(scale: object, name: str = "scale") -> float:
    """``scale`` as a float: inputs are divided by it, so it must be positive and finite."""
    if not (is_finite_real(scale) and scale > 0):
        raise ValueError(
            f"{name}: expected a positive finite number (a typical field magnitude), got {scale!r}"
        )
    return float(scale)


#: ``((channels, scale), ...)``: consecutive blocks of field channels and their scale.
FieldScales = tuple[tuple[slice, float], ...]


def field_scales(scale: float | Sequence[float], layout: FieldLayout | str) -> FieldScales:
    """The field channels each scale of ``scale`` applies to, checked.

    Args:
        scale: one positive number for every channel, or one per field of ``layout`` in its
            order (``(velocity, density)`` for ``"1x1o + 1x0e"``). The channels of a vector
            field share one scale (a per-component scale would not commute with rotations);
            fields of different units (velocity, density) need their own.
        layout: the field layout of one frame (``FieldLayout`` or its irreps string).

    Returns:
        ``((channels, scale), ...)``: a slice of the ``C`` field channels and its scale per
        block, covering ``0 .. C - 1`` in order (one block for a single number).
    """
    fields = as_field_layout(layout).field_slices
    if is_real(scale):
        return ((slice(0, fields[-1].stop), _check_scale(scale)),)
    irreps = as_field_layout(layout).irreps
    if isinstance(scale, (str, bytes)) or not isinstance(scale, Sequence):
        raise TypeError(
            f"scale: expected a positive finite number (a typical field magnitude) or a "
            f"sequence of one per field of '{irreps}', got {type(scale).__name__} {scale!r}"
        )
    if len(scale) != len(fields):
        raise ValueError(
            f"scale: expected one number per field of '{irreps}' ({len(fields)}), "
            f"got {len(scale)}: {list(scale)!r}"
        )
    return tuple(
        (channels, _check_scale(value, f"scale[{index}]"))
        for index, (channels, value) in enumerate(zip(fields, scale))
    )


def as_field_layout(layout: FieldLayout | str) -> FieldLayout:
    """``layout`` as a :class:`FieldLayout` (an irreps string: of a 2D lattice)."""
    return layout if isinstance(layout, FieldLayout) else FieldLayout(layout, dim=2)


def _given_scale(scales: FieldScales, scale: object) -> float | tuple[float, ...]:
    """``scale`` as checked by :func:`field_scales`: a float, or a tuple per field."""
    return scales[0][1] if is_real(scale) else tuple(value for _, value in scales)


def rescale_fields(x: Tensor, scales: FieldScales, inverse: bool = False) -> Tensor:
    """Divide the field channels of ``x [..., C, H, W]`` by their scales (multiply with
    ``inverse=True``); ``scales`` from :func:`field_scales`."""
    if len(scales) == 1:
        return x * scales[0][1] if inverse else x / scales[0][1]
    parts = [x[..., channels, :, :] for channels, _ in scales]
    if inverse:
        return torch.cat([part * value for part, (_, value) in zip(parts, scales)], dim=-3)
    return torch.cat([part / value for part, (_, value) in zip(parts, scales)], dim=-3)


class FluidCNN(nn.Module):
    """``conv``: ``layers`` Conv2d layers of ``hidden`` channels, SiLU, circular padding.

    Args:
        frames_in: number of past frames ``T``.
        layout: the field layout of one frame (``FieldLayout`` or its irreps string).
        hidden: channels of the hidden layers.
        layers: number of convolutions (at least 2).
        kernel_size: odd kernel size.
        scale: typical field magnitude, positive (inputs are divided by it, updates
            multiplied), or one per field of ``layout`` (see :func:`field_scales`).

    Shapes:
        ``frames [B, T, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(
        self,
        frames_in: int,
        layout: FieldLayout | str = "1x1o",
        hidden: int = 32,
        layers: int = 4,
        kernel_size: int = 3,
        scale: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        frames_in = check_int(frames_in, "frames_in")
        hidden = check_int(hidden, "hidden")
        if not is_int(layers) or layers < 2:
            raise ValueError(f"layers: expected an integer >= 2, got {layers!r}")
        if not is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd positive integer, got {kernel_size!r}")
        layers, kernel_size = int(layers), int(kernel_size)
        self.layout = as_field_layout(layout)
        self.frames_in, self._scales = frames_in, field_scales(scale, self.layout)
        #: the checked ``scale``: one float, or a tuple of one per field
        self.scale = _given_scale(self._scales, scale)
        channels = self.layout.field_channels
        widths = [frames_in * channels] + [hidden] * (layers - 1) + [channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2, padding_mode="circular")
            for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, frames: Tensor) -> Tensor:
        frames = _check_frames(frames, self.layout, self.frames_in)
        h = rescale_fields(frames, self._scales).flatten(1, 2)
        for index, conv in enumerate(self.convs):
            h = conv(h)
            if index < len(self.convs) - 1:
                h = torch.nn.functional.silu(h)
        return frames[:, -1] + rescale_fields(h, self._scales, inverse=True)


@tensor_cache(maxsize=8)
def _cached_graph(
    lattice: Lattice, batch_size: int, dtype: torch.dtype, device: str
) -> LatticeGraph:
    return lattice_graph(lattice, batch_size, dtype=dtype, device=device)


class SteerableFluidNet(nn.Module):
    """``equivariant`` / ``relaxed``: implicit steerable convolutions on the periodic grid.

    Args:
        frames_in: number of past frames ``T``.
        layout: the field layout of one frame (``FieldLayout`` or its irreps string).
        hidden: hidden representation, a ``Rep`` of ``group`` or its irreps string (gated:
            each layer outputs ``gate_rep(hidden)``; regular blocks go through SiLU pointwise).
        layers: number of convolutions (at least 2).
        group: the symmetry group or its name (``"C4"``, ``"D4"``, ``"SO2"`` ...).
        radius: stencil radius in cells (kernel size ``2 radius + 1``).
        relaxed: use :class:`RelaxedImplicitSteerableConv` layers.
        scale: typical field magnitude, positive (inputs are divided by it, updates
            multiplied), or one per field of ``layout`` (see :func:`field_scales`).
        kernel_hidden: hidden representation of every kernel MLP (the convolutions'
            ``hidden``; default :func:`~symgraph.nn.kernel.default_kernel_hidden`). Most of
            the parameters sit in the kernel heads, whose size grows with it.
        kernel_layers: hidden layers of every kernel MLP (the convolutions' ``layers``).
        breaking: irreps (or a Rep of ``group``) of a learned symmetry-breaking input
            :class:`~symgraph.nn.SymmetryBreakingInput` that every layer reads next to its
            features (``"1x1o"``: one global direction); ``None`` (default): none.
        kernel_options: further arguments of every convolution (``lmax``, ``num_radial``
            ...; ``r_max`` defaults to the stencil's reach ``radius √2``); ``free_hidden``,
            ``free_layers`` and ``free_input`` go to the relaxed layers only.

    Shapes:
        ``frames [B, T, C, H, W] -> [B, C, H, W]`` on a grid of unit spacing.
    """

    def __init__(
        self,
        frames_in: int,
        layout: FieldLayout | str = "1x1o",
        hidden: str | Rep = "8x0e + 8x1o",
        layers: int = 4,
        group: MatrixGroup | str = "C4",
        radius: int = 1,
        relaxed: bool = False,
        scale: float | Sequence[float] = 1.0,
        kernel_hidden: str | None = None,
        kernel_layers: int = 2,
        breaking: str | Rep | None = None,
        **kernel_options: object,
    ) -> None:
        super().__init__()
        frames_in = check_int(frames_in, "frames_in")
        radius = check_int(radius, "radius")
        if not is_int(layers) or layers < 2:
            raise ValueError(f"layers: expected an integer >= 2, got {layers!r}")
        layers = int(layers)
        self.layout = as_field_layout(layout)
        self._scales = field_scales(scale, self.layout)
        #: the checked ``scale``: one float, or a tuple of one per field
        self.scale = _given_scale(self._scales, scale)
        self.group = as_group(group)
        self.frames_in, self.radius, self.relaxed = frames_in, radius, relaxed
        # node features of T frames, grouped by irrep: "1x1o + 1x0e" -> "Tx1o + Tx0e"
        columns, parts = [], []
        size = {"0e": 1, "0o": 1, "1o": 3, "1e": 3}
        for irrep, column in self.layout.groups:
            parts.append(f"{frames_in}x{irrep}")
            for t in range(frames_in):
                start = t * self.layout.node_dim + column
                columns.extend(range(start, start + size[irrep]))
        self.register_buffer("_columns", torch.tensor(columns), persistent=False)
        rep_in = Rep(" + ".join(parts), self.group)
        rep_hidden = Rep(hidden, self.group) if isinstance(hidden, str) else hidden
        if not isinstance(rep_hidden, Rep) or rep_hidden.group != self.group:
            raise ValueError(
                f"hidden: expected an irreps string or a Rep of {self.group.name}, got {hidden!r}"
            )
        rep_out = Rep(self.layout.irreps, self.group)
        free_names = ("free_hidden", "free_layers", "free_input")
        free = {k: v for k, v in kernel_options.items() if k in free_names}
        if kernel_hidden is not None:  # named here: the kernels call theirs "hidden"
            kernel_hidden = as_rep(kernel_hidden, self.group, "kernel_hidden")
        options = {"r_max": radius * 2**0.5, "hidden": kernel_hidden, "layers": kernel_layers}
        options.update({k: v for k, v in kernel_options.items() if k not in free_names})
        self.breaking = None
        if breaking is not None:
            try:
                self.breaking = SymmetryBreakingInput(breaking, self.group)
            except ValueError as err:  # named by this argument
                name, sep, rest = str(err).partition(": ")
                raise ValueError(f"breaking: {rest if name == 'rep' else err}") from err
        reps = [rep_in] + [rep_hidden] * (layers - 1)
        if self.breaking is not None:
            reps = [rep + self.breaking.rep for rep in reps]
        self.convs = nn.ModuleList()
        self.gates = nn.ModuleList()
        for index, rep in enumerate(reps):
            last = index == layers - 1
            out = rep_out if last else gate_rep(rep_hidden)
            if relaxed:
                self.convs.append(RelaxedImplicitSteerableConv(rep, out, **options, **free))
            else:
                self.convs.append(ImplicitSteerableConv(rep, out, **options))
            if not last:
                self.gates.append(Gate(rep_hidden))

    def lattice(self, height: int, width: int) -> Lattice:
        """The periodic unit-spacing lattice of an ``H x W`` field with this stencil."""
        return Lattice((height, width), radius=self.radius, periodic=True)

    def forward(self, frames: Tensor) -> Tensor:
        frames = _check_frames(frames, self.layout, self.frames_in)
        batch, _, _, height, width = frames.shape
        lattice = self.lattice(height, width)
        graph = _cached_graph(lattice, batch, frames.dtype, str(frames.device))
        nodes = self.layout.to_nodes(rescale_fields(frames, self._scales).flatten(0, 1))
        nodes = nodes.reshape(batch, self.frames_in, lattice.num_cells, -1).transpose(1, 2)
        h = nodes.reshape(batch * lattice.num_cells, -1)[:, self._columns]
        for index, conv in enumerate(self.convs):
            if self.breaking is not None:
                h = self.breaking(h)
            h = conv(h, graph.pos, graph.edge_index, lattice=lattice)
            if index < len(self.gates):
                h = self.gates[index](h)
        update = self.layout.to_field(h, lattice, batch)
        return frames[:, -1] + rescale_fields(update, self._scales, inverse=True)


def build_fluid_model(
    kind: str,
    frames_in: int,
    layout: FieldLayout | str = "1x1o",
    *,
    width: int = 16,
    layers: int = 4,
    group: MatrixGroup | str = "C4",
    radius: int = 1,
    scale: float | Sequence[float] = 1.0,
    free_input: str = "position",
    features: str = "irreps",
    kernel_hidden: str | None = None,
    kernel_layers: int = 2,
    free_hidden: int = 8,
    relaxation: str = "kernel",
    breaking: str = "1x1o",
    grid: int | None = None,
) -> nn.Module:
    """A next-frame predictor by name, ``kind`` in :data:`FLUID_MODELS`.

    ``width`` sizes all three alike: the steerable models use ``width/2`` scalars and
    ``width/2`` vectors (``"8x0e + 8x1o"`` for 16, gated) with ``features="irreps"``, or
    ``width/2`` copies of the regular representation of a finite ``group`` with
    ``features="regular"`` (group-convolution features, SiLU pointwise: for ``C4`` the
    same ``2 width`` dimensions), the CNN ``2 * width`` channels, which gives parameter
    counts of the same order (see ``benchmarks/relaxed.py``). The kernel
    size is ``2 radius + 1`` for all. ``free_input`` (``relaxed`` only) says what the
    non-equivariant pathway of each layer may depend on, one of
    :data:`symgraph.nn.relaxed_implicit.FREE_INPUTS`: ``"position"`` (an MLP of the raw
    offset), ``"radial"`` (of its length only) or ``"constant"`` (one non-equivariant
    channel-mixing matrix per layer); ``free_hidden`` is the width ``H`` of that pathway's
    features (``"position"`` and ``"radial"``; its head has ``H`` times the parameters of
    a channel-mixing matrix). ``kernel_hidden`` and ``kernel_layers`` size the steerable
    models' kernel MLPs (see :class:`SteerableFluidNet`). ``scale`` normalises the fields:
    one typical magnitude, or one per field of ``layout`` (:func:`field_scales`).

    ``relaxation`` (``relaxed`` only, one of :data:`FLUID_RELAXATIONS`) says how the relaxed
    model breaks the symmetry: ``"kernel"`` (default) through the non-equivariant pathways
    of :class:`~symgraph.nn.RelaxedImplicitSteerableConv` layers, as above; ``"input"``
    through a learned symmetry-breaking input of irreps ``breaking`` that every layer of
    the equivariant network reads (:class:`~symgraph.nn.SymmetryBreakingInput`;
    ``"1x1o"``: one global direction, 2 parameters in the plane), ``free_*`` unused.

    ``grid`` (optional): the cells per side of the fields the model will read; a stencil
    that wraps onto itself on it (``2 radius + 1 > grid``) is refused here rather than at
    the first forward pass.
    """
    if kind not in FLUID_MODELS:
        raise ValueError(f"kind: expected one of {FLUID_MODELS}, got {kind!r}")
    width = check_int(width, "width")
    radius = check_int(radius, "radius")  # all kinds: a 1x1 stencil couples no cells
    if grid is not None:
        check_stencil(radius, grid)
    if features not in FLUID_FEATURES:
        raise ValueError(f"features: expected one of {FLUID_FEATURES}, got {features!r}")
    if relaxation not in FLUID_RELAXATIONS:
        raise ValueError(f"relaxation: expected one of {FLUID_RELAXATIONS}, got {relaxation!r}")
    if kind == "conv":
        return FluidCNN(frames_in, layout, 2 * width, layers, 2 * radius + 1, scale)
    half = max(width // 2, 1)
    hidden: str | Rep = f"{half}x0e + {half}x1o"
    if features == "regular":
        group = as_group(group)
        if not group.is_finite:
            raise ValueError(
                f"group: features='regular' needs a finite group, got {group.name} "
                "(use features='irreps')"
            )
        hidden = Rep.regular(group, half)
    relaxed_kernels = kind == "relaxed" and relaxation == "kernel"
    options: dict[str, object] = {}
    if relaxed_kernels:
        options = {"free_input": free_input, "free_hidden": free_hidden}
    elif kind == "relaxed":
        options = {"breaking": breaking}
    return SteerableFluidNet(
        frames_in, layout, hidden, layers, group, radius,
        relaxed=relaxed_kernels, scale=scale, kernel_hidden=kernel_hidden,
        kernel_layers=kernel_layers, **options,
    )  # fmt: skip


def rollout(model: nn.Module, frames: Tensor, steps: int) -> Tensor:
    """Forecast ``steps`` frames autoregressively: ``[B, T, C, H, W] -> [B, steps, C, H, W]``.

    Each prediction becomes the newest input frame of the next step.
    """
    frames = check_tensor(frames, "frames")
    steps = check_int(steps, "steps")
    window = frames
    predictions = []
    for _ in range(steps):
        nxt = model(window)
        predictions.append(nxt)
        window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
    return torch.stack(predictions, dim=1)
