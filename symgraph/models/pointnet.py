"""``SteerablePointNet``: a G-invariant point-cloud classifier built from implicit kernels.

Architecture (``stages = S``)::

    x = [1, r, o·n (0e); o, n (1o)]     input features of every point
    stage 0:  kNN conv          all points          -> hidden[0]
    stage s:  FPS (ratio)       points of stage s-1 -> ceil(ratio * n) points
              pooling conv      kNN of each sampled point among the points of stage s-1
              kNN conv          among the sampled points (residual)   -> hidden[s]
    readout:  mean and max over points of the G-invariant components
    head:     batch norm -> linear -> SiLU -> dropout -> linear -> logits

``o = (p - c) / s`` is the offset of a point from its cloud's centroid ``c`` in units of
the cloud's RMS radius ``s``, ``r = |o|`` and ``n`` the normal. The offset gives every
point the global layout of the shape from the first layer on (local kNN features alone
barely differ between smooth shapes), and the invariants ``r`` and ``o·n`` are quadratic
in it, which linear equivariant layers cannot produce. ``r`` also enters every kernel MLP
as a scalar node attribute of both endpoints (the implicit kernels take invariant
attributes at no cost). The batch norm on the pooled invariants lets the head see their
small differences between shapes.
Every convolution is an :class:`~symgraph.nn.ImplicitSteerableConv` of the chosen group
followed by an equivariant layer norm and a gated nonlinearity. Relative positions are
divided by the mean edge length of their cloud in that convolution, so the kernels see
distances of order 1 at every stage whatever the number of points; with the scaled
centroid offsets the model is invariant to the scale of each cloud as well.

Symmetry: the logits are invariant (exactly, except in eval mode with a ``tta_group``
larger than G) under every element of G acting on positions and normals of a cloud
(normals transform as ``1o``, like the positions), and under translations (only relative
positions are used). kNN graphs and farthest-point sampling
(:mod:`symgraph.models.pooling`) depend on distances only; ties among equal distances are
broken by index in farthest-point sampling and arbitrarily (``torch.topk``) in kNN, which
matters only for clouds with exact symmetries or, in float32, for candidates within
rounding error.

Input handling: NaN/inf coordinates or normals raise ``ValueError``; a cloud with fewer
than ``k + 1`` points raises ``ValueError`` naming ``k``; duplicate points are allowed
(zero-length edges carry no direction; farthest-point sampling never picks a point twice).
Deeper stages with fewer than ``k + 1`` points use all the other points as neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from e3nn import o3
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from symgraph.checks import (
    check_batch,
    check_features,
    check_parameter_dtype,
    check_positions,
    is_int,
    is_real,
)
from symgraph.graph import knn_graph
from symgraph.groups import MatrixGroup, Rep, as_group
from symgraph.models.pooling import farthest_point_sampling, knn_bipartite
from symgraph.nn import (
    EquivariantLayerNorm,
    Gate,
    ImplicitSteerableConv,
    InvariantReadout,
    gate_rep,
)
from symgraph.nn.exact_buffers import ExactBufferModule

__all__ = ["SteerablePointNet"]

_TTA_SEED = 1234


def _stage_reps(
    hidden: str | o3.Irreps | Sequence[str | o3.Irreps], stages: int, group: MatrixGroup
) -> list[Rep]:
    if not is_int(stages) or stages < 1:
        raise ValueError(f"stages: expected a positive int, got {stages!r}")
    stages = int(stages)
    if isinstance(hidden, (str, o3.Irreps)):
        hidden = [hidden] * stages
    hidden = list(hidden)
    if len(hidden) != stages:
        raise ValueError(
            f"hidden: expected one representation per stage ({stages}), got {len(hidden)}"
        )
    return [Rep(h, group) for h in hidden]


def _scaled_rel(rel: Tensor, cloud: Tensor, num_clouds: int) -> Tensor:
    """``rel [E, 3]`` divided by the mean edge length of each edge's cloud."""
    length = scatter(rel.norm(dim=1), cloud, dim=0, dim_size=num_clouds, reduce="mean")
    return rel / length.clamp_min(1e-12)[cloud, None]


class _Block(nn.Module):
    """Implicit steerable conv -> equivariant layer norm -> gate (+ residual when possible).

    Shapes: ``x [N, rep_in.dim], pos [N, 3], edge_index [2, E], rel [E, 3] (scaled),
    radial [N, 1] (the kernel's node attribute) -> [N, rep_out.dim]``.
    """

    def __init__(
        self,
        rep_in: Rep,
        rep_out: Rep,
        kernel_hidden: str | None,
        kernel_layers: int,
        lmax: int,
        num_radial: int,
        checkpoint: bool,
        residual: bool,
    ) -> None:
        super().__init__()
        pre = gate_rep(rep_out)
        self.conv = ImplicitSteerableConv(
            rep_in, pre, node_dim=1, hidden=kernel_hidden, layers=kernel_layers, lmax=lmax,
            num_radial=num_radial, r_max=3.0, aggr="mean", checkpoint=checkpoint,
        )  # fmt: skip
        self.norm = EquivariantLayerNorm(pre)
        self.gate = Gate(rep_out)
        self.residual = residual and rep_in == rep_out

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        self.norm.reset_parameters()

    def forward(
        self, x: Tensor, pos: Tensor, edge_index: Tensor, rel: Tensor, radial: Tensor
    ) -> Tensor:
        out = self.gate(self.norm(self.conv(x, pos, edge_index, node_attr=radial, rel=rel)))
        return x + out if self.residual else out


class _CloudBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the invariant features of a batch of clouds ``[B, F]``.

    A training batch of a single cloud has no variance: it is normalised with the running
    statistics instead of raising.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                self.eps,
            )  # fmt: skip
        return super().forward(x)


class SteerablePointNet(ExactBufferModule):
    """G-invariant point-cloud classifier: implicit-kernel convs, FPS pooling, invariant head.

    Args:
        num_classes: number of classes ``C``.
        group: a catalog name (``"SO3"``, ``"O2Dihedral"``, ``"C4"`` ...) or a MatrixGroup.
        hidden: features of every stage (irreps string), or a list with one per stage.
        stages: resolution levels; each one after the first samples ``ratio`` of the points.
        k: neighbours per point in every kNN graph (and per sampled point when pooling).
        ratio: fraction of points kept by farthest-point sampling at each stage.
        use_normals: take ``normal [N, 3]`` as a ``1o`` input feature (then required).
            Under reflections normals transform like positions (``n -> g n``).
        tta: test-time augmentation: in eval mode, average the logits over this many
            elements of ``tta_group`` (all of its elements when it is finite); 0: off.
        tta_group: the group of the augmentation (default: ``group``, for which the model
            is already invariant, so averaging only smooths ties in FPS / kNN). A larger
            continuous group, e.g. ``"SO3"`` for an ``"SO2"`` model, averages over a fixed
            sample of its elements: approximate invariance under the larger group, at the
            price of the exact G-invariance in eval mode (``g·x`` and ``x`` see differently
            rotated samples; errors of ~1e-2 measured on small models).
        kernel_hidden, kernel_layers, lmax, num_radial: the kernel MLPs
            (:class:`~symgraph.nn.ImplicitKernel`).
        mlp_hidden: width of the classification MLP.
        dropout: dropout probability before the last layer of the MLP, in ``[0, 1)``.
        checkpoint: recompute kernel activations in backward (less memory, slower).

    Shapes:
        ``forward(data) -> [B, C]`` for a PyG ``Data`` / ``Batch`` with ``pos [N, 3]``,
        ``normal [N, 3]`` (when ``use_normals``) and ``batch [N]``;
        ``classify(pos [N, 3], normal [N, 3] | None, batch [N] | None) -> [B, C]``.
    """

    def __init__(
        self,
        num_classes: int,
        group: str | MatrixGroup = "SO3",
        hidden: str | o3.Irreps | Sequence[str | o3.Irreps] = "16x0e + 8x1o + 4x2e",
        stages: int = 2,
        k: int = 16,
        ratio: float = 0.25,
        use_normals: bool = True,
        tta: int = 0,
        tta_group: str | MatrixGroup | None = None,
        kernel_hidden: str | None = None,
        kernel_layers: int = 2,
        lmax: int = 2,
        num_radial: int = 8,
        mlp_hidden: int = 64,
        dropout: float = 0.0,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if not is_int(num_classes) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        if not is_int(k) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        if not is_real(ratio) or not 0 < ratio <= 1:
            raise ValueError(f"ratio: expected a number in (0, 1], got {ratio!r}")
        if not is_int(tta) or tta < 0:
            raise ValueError(f"tta: expected a non-negative int, got {tta!r}")
        if not is_int(mlp_hidden) or mlp_hidden < 1:
            raise ValueError(f"mlp_hidden: expected a positive int, got {mlp_hidden!r}")
        if not is_real(dropout) or not 0 <= dropout < 1:  # nn.Dropout takes NaN
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        num_classes, mlp_hidden = int(num_classes), int(mlp_hidden)
        self.group = as_group(group)
        self.tta_group = self.group if tta_group is None else as_group(tta_group, "tta_group")
        self.num_classes, self.k, self.ratio, self.tta = num_classes, int(k), float(ratio), int(tta)
        self.use_normals = use_normals
        self.rep_input = Rep("3x0e + 2x1o" if use_normals else "2x0e + 1x1o", self.group)
        self.reps = _stage_reps(hidden, stages, self.group)

        def block(rep_in: Rep, rep_out: Rep, residual: bool) -> _Block:
            return _Block(
                rep_in, rep_out, kernel_hidden, kernel_layers, lmax, num_radial, checkpoint,
                residual,
            )  # fmt: skip

        self.embed = block(self.rep_input, self.reps[0], residual=False)
        self.pools = nn.ModuleList(
            [block(a, b, residual=False) for a, b in zip(self.reps[:-1], self.reps[1:])]
        )
        self.convs = nn.ModuleList([block(r, r, residual=True) for r in self.reps[1:]])
        self.readout_mean = InvariantReadout(self.reps[-1], "mean")
        self.readout_max = InvariantReadout(self.reps[-1], "max")
        num_features = 2 * self.readout_mean.num_invariants
        self.head = nn.Sequential(
            _CloudBatchNorm(num_features),
            nn.Linear(num_features, mlp_hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, num_classes),
        )
        self.register_exact_buffer("tta_elements", self._tta_elements())

    def _tta_elements(self) -> Tensor:
        if self.tta == 0:
            return torch.zeros(0, 3, 3)
        if self.tta_group.is_finite:
            return self.tta_group.elements(dtype=torch.float64)
        generator = torch.Generator().manual_seed(_TTA_SEED)
        return self.tta_group.sample(self.tta, generator=generator, dtype=torch.float64)

    def reset_parameters(self) -> None:
        for module in [self.embed, *self.pools, *self.convs]:
            module.reset_parameters()
        for layer in self.head:
            if isinstance(layer, (nn.Linear, nn.BatchNorm1d)):
                layer.reset_parameters()

    # ----------------------------------------------------------------- forward
    def forward(self, data: Data) -> Tensor:
        """Logits ``[B, C]`` of a PyG ``Data`` / ``Batch`` (``pos``, ``normal``, ``batch``)."""
        if not hasattr(data, "pos"):
            raise TypeError(
                f"data: expected a PyG Data/Batch with `pos`, got {type(data).__name__}; "
                "call classify(pos, normal, batch) with tensors"
            )
        normal = getattr(data, "normal", None) if self.use_normals else None
        declared = getattr(data, "num_graphs", None)
        return self.classify(data.pos, normal, getattr(data, "batch", None), declared)

    def classify(
        self,
        pos: Tensor,
        normal: Tensor | None = None,
        batch: Tensor | None = None,
        num_clouds: int | None = None,
    ) -> Tensor:
        """Logits ``[B, C]`` of clouds ``pos [N, 3]`` with ``normal [N, 3]``, ``batch [N]``.

        ``num_clouds`` (a ``Batch``'s ``num_graphs``) lets a cloud without points at the end
        of the batch be refused like any other too-small cloud. In eval mode with
        ``tta > 0`` the logits are averaged over the augmentation elements.
        """
        pos = check_parameter_dtype(check_positions(pos, "pos"), self, "pos")
        batch = check_batch(batch, pos.shape[0])
        if self.use_normals:
            if normal is None:
                raise ValueError(
                    "normal: this SteerablePointNet has use_normals=True and needs normals "
                    "[N, 3] (data.normal); pass them or build the model with use_normals=False"
                )
            normal = check_features(normal, 3, "normal", pos.shape[0])
            normal = check_parameter_dtype(check_positions(normal, "normal"), self, "normal")
        self._check_sizes(pos, batch, num_clouds)
        if self.training or self.tta == 0:
            return self._logits(pos, normal, batch)
        logits = 0
        for g in self.exact_buffer_as("tta_elements", pos):
            moved = normal @ g.T if normal is not None else None
            logits = logits + self._logits(pos @ g.T, moved, batch)
        return logits / len(self.tta_elements)

    def _check_sizes(self, pos: Tensor, batch: Tensor | None, num_clouds: int | None) -> None:
        if batch is None:
            sizes = torch.tensor([pos.shape[0]])
        else:
            sizes = torch.bincount(batch, minlength=num_clouds or 0)
        smallest = int(sizes.min()) if sizes.numel() else 0
        if smallest < self.k + 1:
            which = int(sizes.argmin()) if sizes.numel() else 0
            raise ValueError(
                f"pos: SteerablePointNet(k={self.k}) needs at least k + 1 = {self.k + 1} points "
                f"per cloud, got a cloud (index {which}) with {smallest} points; lower k or "
                "upsample the cloud (symgraph.data.SamplePointsFixed)"
            )

    def _logits(self, pos: Tensor, normal: Tensor | None, batch: Tensor | None) -> Tensor:
        if batch is None:
            cloud, num_clouds = pos.new_zeros(pos.shape[0], dtype=torch.long), 1
        else:
            cloud, num_clouds = batch, int(batch.max()) + 1
        offset = self._centroid_offsets(pos, cloud, num_clouds)
        radial = offset.norm(dim=1, keepdim=True)
        parts = [pos.new_ones(pos.shape[0], 1), radial]
        if normal is not None:
            parts += [(offset * normal).sum(dim=1, keepdim=True), offset, normal]
        else:
            parts.append(offset)
        x = self._conv(self.embed, torch.cat(parts, dim=1), pos, radial, cloud, num_clouds)
        for pool, conv in zip(self.pools, self.convs):
            x, pos, radial, cloud = self._pool(pool, x, pos, radial, cloud, num_clouds)
            x = self._conv(conv, x, pos, radial, cloud, num_clouds)
        features = torch.cat(
            [
                self.readout_mean(x, cloud, num_clouds),
                self.readout_max(x, cloud, num_clouds),
            ],
            dim=1,
        )
        return self.head(features)

    @staticmethod
    def _centroid_offsets(pos: Tensor, cloud: Tensor, num_clouds: int) -> Tensor:
        """``(p - c) / s [N, 3]``: ``c`` the centroid of the point's cloud, ``s`` its RMS radius."""
        centred = pos - scatter(pos, cloud, dim=0, dim_size=num_clouds, reduce="mean")[cloud]
        radius = scatter(centred.pow(2).sum(1), cloud, dim=0, dim_size=num_clouds, reduce="mean")
        return centred / radius.clamp_min(1e-24).sqrt()[cloud, None]

    def _conv(
        self,
        block: _Block,
        x: Tensor,
        pos: Tensor,
        radial: Tensor,
        cloud: Tensor,
        num_clouds: int,
    ) -> Tensor:
        edge_index = knn_graph(pos, self.k, cloud)
        rel = pos[edge_index[0]] - pos[edge_index[1]]
        rel = _scaled_rel(rel, cloud[edge_index[1]], num_clouds)
        return block(x, pos, edge_index, rel, radial)

    def _pool(
        self,
        block: _Block,
        x: Tensor,
        pos: Tensor,
        radial: Tensor,
        cloud: Tensor,
        num_clouds: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample points by FPS and convolve the features of their kNN onto them.

        The conv runs on the union ``[sampled points; all points]`` with edges from the
        second part to the first; the rows of the sampled points are returned.
        """
        index, sampled_cloud = farthest_point_sampling(pos, self.ratio, cloud)
        edge_index = knn_bipartite(pos, pos[index], self.k, cloud, sampled_cloud)
        sampled = index.numel()
        rel = pos[edge_index[0]] - pos[index][edge_index[1]]
        rel = _scaled_rel(rel, sampled_cloud[edge_index[1]], num_clouds)
        union_edges = torch.stack([edge_index[0] + sampled, edge_index[1]])
        union_x = torch.cat([x[index], x])
        union_pos = torch.cat([pos[index], pos])
        union_radial = torch.cat([radial[index], radial])
        out = block(union_x, union_pos, union_edges, rel, union_radial)[:sampled]
        return out, pos[index], radial[index], sampled_cloud

    def extra_repr(self) -> str:
        hidden = ", ".join(rep.short() for rep in self.reps)
        return (
            f"num_classes={self.num_classes}, group={self.group.name}, hidden=[{hidden}], "
            f"k={self.k}, ratio={self.ratio}, use_normals={self.use_normals}, tta={self.tta}, "
            f"tta_group={self.tta_group.name}"
        )
