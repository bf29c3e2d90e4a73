"""Registry entries for PyTorch and PyG layers (imported by :mod:`symgraph.teleport`).

Searched containers (execution order known):

- ``torch.nn.Sequential``;
- ``torch_geometric.nn.MLP`` (``lins``, ``norms``, ``act``, ``act_first``, ``plain_last``,
  functional dropout);
- ``torch_geometric.nn.models.basic_gnn.BasicGNN`` and its subclasses that keep its
  ``forward`` (``GCN``, ``GraphSAGE``, ``GIN``, ...): ``convs[i]`` → act/norm/dropout →
  ``convs[i+1]``; with ``jk="last"`` the last conv also feeds ``lin``; other ``jk`` modes
  reuse every hidden output and are skipped;
- ``torch_geometric.nn.Sequential``: consecutive children whose single output is used
  only by the next child (as its first argument).

Layers (input side = columns that absorb ``1/s``; output side = rows and bias scaled by
``s``): ``torch.nn.Linear``, ``torch_geometric.nn.Linear``, ``GCNConv``,
``SAGEConv`` (``project=False``, ``normalize=False``, aggregation sum/mean/max/min),
``GraphConv`` (same aggregations), ``GINConv`` (through its ``nn``), and containers
through their first and last layers. Normalisation layers provide an output side through
their per-channel affine parameters: ``BatchNorm1d`` (on ``[N, C]`` inputs, where its
channels are the last axis as the next layer reads them; teleport's loss check refuses
it on ``[N, C, L]``), ``LayerNorm`` (1-D, affine), PyG ``BatchNorm``, ``LayerNorm``,
``GraphNorm``. ``BatchNorm2d/3d`` and ``GroupNorm`` scale axis 1 of image-like inputs,
which no registered layer reads as its channels, so they provide none.

Pass-through (positively homogeneous or elementwise-masking): ``ReLU``, ``LeakyReLU``,
``PReLU``, ``Identity``, ``Dropout``, PyG's ``SumAggregation``, ``MeanAggregation``,
``MaxAggregation``, ``MinAggregation`` (e.g. a pooling child of a PyG ``Sequential``).

Linear pass-throughs (linear, on samples only; for the data-free GL(d) rule ``"linear"``):
``Identity``, ``Dropout(p=0)``, PyG's ``SumAggregation`` and ``MeanAggregation``. Linear
wrapper: ``GINConv`` (through its ``nn``; its input end only with a sum or mean
aggregation).
"""

from __future__ import annotations

from torch import nn
from torch.nn.parameter import UninitializedParameter

from .base import ParamSlice
from .registry import (
    Stage,
    register_channel_map,
    register_container,
    register_linear_passthrough,
    register_linear_wrapper,
    register_passthrough,
)

__all__ = ["join", "NORM_SCALE_TYPES"]

_CHANNEL_AGGRS = {"add", "sum", "mean", "max", "min"}
_LINEAR_AGGRS = {"add", "sum", "mean"}


def join(prefix: str, name: str) -> str:
    """``prefix.name`` (or ``name`` at the root)."""
    return f"{prefix}.{name}" if prefix else name


def _initialised(*params: object) -> bool:
    return all(
        isinstance(p, nn.Parameter) and not isinstance(p, UninitializedParameter)
        for p in params
        if p is not None
    )


# ----------------------------------------------------------------------------- linear layers
def _linear_in(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
    if not _initialised(m.weight):
        return None
    return [ParamSlice(join(prefix, "weight"), 1)]


def _linear_out(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
    if not _initialised(m.weight, m.bias):
        return None
    out = [ParamSlice(join(prefix, "weight"), 0)]
    if m.bias is not None:
        out.append(ParamSlice(join(prefix, "bias"), 0))
    return out


register_channel_map(nn.Linear, inputs=_linear_in, outputs=_linear_out)


# ----------------------------------------------------------------------------- normalisation
def _affine_out(weight_name: str = "weight", bias_name: str = "bias"):
    def outputs(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
        try:
            weight = m.get_parameter(weight_name)
        except AttributeError:
            return None
        if weight.dim() != 1 or not _initialised(weight):
            return None
        out = [ParamSlice(join(prefix, weight_name), 0)]
        try:
            m.get_parameter(bias_name)
            out.append(ParamSlice(join(prefix, bias_name), 0))
        except AttributeError:
            pass
        return out

    return outputs


def _layer_norm_out(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
    if len(m.normalized_shape) != 1:
        return None
    return _affine_out()(m, prefix)


register_channel_map(nn.BatchNorm1d, outputs=_affine_out())
register_channel_map(nn.LayerNorm, outputs=_layer_norm_out)

# Normalisations whose *input* scale does not matter when eps = 0, with the shape of the
# invariance: "channel" (one scale per channel) or "global" (one scale in all).
NORM_SCALE_TYPES: dict[type, str] = {
    nn.BatchNorm1d: "channel",
    nn.LayerNorm: "global",
}


# ----------------------------------------------------------------------------- pass-through
for _act in (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Dropout):
    register_passthrough(_act)
register_linear_passthrough(nn.Identity)
register_linear_passthrough(nn.Dropout, lambda m: m.p == 0)


# ----------------------------------------------------------------------------- containers
def _sequential_stages(m: nn.Module, prefix: str) -> list[Stage]:
    # every position, repeats included (``named_children`` lists a module used twice once,
    # which would join the layers around its second use)
    return [(join(prefix, name), child) for name, child in m._modules.items()]


register_container(nn.Sequential, _sequential_stages)


def _register_pyg() -> None:
    """PyG entries (skipped if torch_geometric is missing)."""
    try:
        import torch_geometric.nn as pyg_nn
        from torch_geometric.nn.models.basic_gnn import BasicGNN
    except ImportError:  # pragma: no cover - PyG is a dependency
        return

    register_channel_map(pyg_nn.Linear, inputs=_linear_in, outputs=_linear_out)

    # normalisations
    register_channel_map(pyg_nn.BatchNorm, outputs=_affine_out("module.weight", "module.bias"))
    register_channel_map(pyg_nn.LayerNorm, outputs=_affine_out())
    register_channel_map(pyg_nn.GraphNorm, outputs=_affine_out())
    NORM_SCALE_TYPES[pyg_nn.BatchNorm] = "channel"
    NORM_SCALE_TYPES[pyg_nn.GraphNorm] = "channel"
    NORM_SCALE_TYPES[pyg_nn.LayerNorm] = "global"

    # convolutions
    def gcn_in(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
        return _linear_in(m.lin, join(prefix, "lin"))

    def gcn_out(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
        if not _initialised(m.lin.weight):
            return None
        out = [ParamSlice(join(prefix, "lin.weight"), 0)]
        if getattr(m, "bias", None) is not None:
            out.append(ParamSlice(join(prefix, "bias"), 0))
        return out

    register_channel_map(pyg_nn.GCNConv, inputs=gcn_in, outputs=gcn_out)

    def two_linears(neigh: str, root: str, ok):
        def inputs(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
            if not ok(m):
                return None
            lins = [(n, getattr(m, n, None)) for n in (neigh, root)]
            lins = [(n, lin) for n, lin in lins if lin is not None]
            if not _initialised(*(lin.weight for _, lin in lins)):
                return None
            return [ParamSlice(join(prefix, f"{n}.weight"), 1) for n, _ in lins]

        def outputs(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
            if not ok(m):
                return None
            out: list[ParamSlice] = []
            for n in (neigh, root):
                lin = getattr(m, n, None)
                if lin is None:
                    continue
                got = _linear_out(lin, join(prefix, n))
                if got is None:
                    return None
                out += got
            return out

        return inputs, outputs

    def sage_ok(m: nn.Module) -> bool:
        return (
            not m.project
            and not m.normalize
            and isinstance(m.aggr, str)
            and m.aggr in _CHANNEL_AGGRS
        )

    def graph_conv_ok(m: nn.Module) -> bool:
        return isinstance(m.aggr, str) and m.aggr in _CHANNEL_AGGRS

    sage_in, sage_out = two_linears("lin_l", "lin_r", sage_ok)
    register_channel_map(pyg_nn.SAGEConv, inputs=sage_in, outputs=sage_out)
    gc_in, gc_out = two_linears("lin_rel", "lin_root", graph_conv_ok)
    register_channel_map(pyg_nn.GraphConv, inputs=gc_in, outputs=gc_out)

    def gin_in(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
        from .registry import input_slices

        if not (isinstance(m.aggr, str) and m.aggr in _CHANNEL_AGGRS):
            return None
        return input_slices(m.nn, join(prefix, "nn"))

    def gin_out(m: nn.Module, prefix: str) -> list[ParamSlice] | None:
        from .registry import output_slices

        return output_slices(m.nn, join(prefix, "nn"))

    register_channel_map(pyg_nn.GINConv, inputs=gin_in, outputs=gin_out)

    def gin_linear(m: nn.Module, prefix: str, last: bool) -> Stage | None:
        if not last and not (isinstance(m.aggr, str) and m.aggr in _LINEAR_AGGRS):
            return None
        return join(prefix, "nn"), m.nn

    register_linear_wrapper(pyg_nn.GINConv, gin_linear)

    # poolings as modules (a child of a PyG Sequential: "x, batch -> x")
    aggr = pyg_nn.aggr
    for pool in (aggr.SumAggregation, aggr.MeanAggregation):
        register_passthrough(pool)
        register_linear_passthrough(pool)
    for pool in (aggr.MaxAggregation, aggr.MinAggregation):
        register_passthrough(pool)  # commutes with positive scales, not with every g

    # containers
    def mlp_stages(m: nn.Module, prefix: str) -> list[Stage]:
        stages: list[Stage] = []
        act = [] if m.act is None else [(join(prefix, "act"), m.act)]
        for i, (_lin, norm) in enumerate(zip(m.lins, m.norms)):
            stages.append((join(prefix, f"lins.{i}"), m.lins[i]))
            norm_stage = [(join(prefix, f"norms.{i}"), norm)]
            stages += act + norm_stage if m.act_first else norm_stage + act
            stages.append((join(prefix, f"dropout.{i}"), nn.Dropout(m.dropout[i])))
        if m.plain_last:
            stages.append((join(prefix, f"lins.{len(m.lins) - 1}"), m.lins[-1]))
            stages.append((join(prefix, "dropout.last"), nn.Dropout(m.dropout[-1])))
        return stages

    register_container(pyg_nn.MLP, mlp_stages)

    def basic_gnn_stages(m: nn.Module, prefix: str) -> list[Stage] | None:
        if m.jk_mode not in (None, "last"):
            return None
        stages: list[Stage] = []
        act = [] if m.act is None else [(join(prefix, "act"), m.act)]
        for i, (conv, norm) in enumerate(zip(m.convs, m.norms)):
            stages.append((join(prefix, f"convs.{i}"), conv))
            if i < m.num_layers - 1 or m.jk_mode is not None:
                norm_stage = [(join(prefix, f"norms.{i}"), norm)]
                stages += act + norm_stage if m.act_first else norm_stage + act
                stages.append((join(prefix, "dropout"), m.dropout))
        if m.jk_mode == "last" and hasattr(m, "lin"):
            stages.append((join(prefix, "lin"), m.lin))
        return stages

    register_container(BasicGNN, basic_gnn_stages)

    def pyg_sequential_stages(m: nn.Module, prefix: str) -> list[Stage] | None:
        children = getattr(m, "_children", None)
        if children is None:
            return None
        stages: list[Stage] = []
        for k, child in enumerate(children):
            if k > 0 and not _links(children, k - 1):
                stages.append((join(prefix, "<break>"), None))
            stages.append((join(prefix, child.name), getattr(m, child.name)))
        return stages

    register_container(pyg_nn.Sequential, pyg_sequential_stages)


def _links(children: list, k: int) -> bool:
    """Whether child ``k``'s single output flows only into child ``k + 1``'s first argument."""
    produced = list(children[k].return_names)
    consumer = list(children[k + 1].param_names)
    if len(produced) != 1 or not consumer or consumer[0] != produced[0]:
        return False
    value, uses = produced[0], 0
    for later in children[k + 1 :]:
        uses += list(later.param_names).count(value)
        if value in later.return_names:
            break
    return uses == 1


_register_pyg()
