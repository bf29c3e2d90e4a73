"""Bad input across the public API: each mistake raises an error naming the argument, and a
single name given as a string means that one name."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from symgraph.data.fluids.config import PlumeConfig
from symgraph.data.qm9 import QM9
from symgraph.data.transforms import (
    KNNGraph,
    RadiusGraph,
    RandomGroupRotation,
    SamplePointsFixed,
    transform_fingerprint,
)
from symgraph.graph import radius_graph
from symgraph.groups import SO3, C, MatrixGroup, Rep
from symgraph.models import FluidCNN, SteerableDynamics, SteerablePointNet
from symgraph.nn import (
    EquivariantLinear,
    EquivariantMLP,
    ImplicitSteerableConv,
    InvariantReadout,
    RadialEmbedding,
    RelaxedGroupConv,
    default_kernel_hidden,
)
from symgraph.noether import tailor
from symgraph.teleport import Teleport
from symgraph.testing import equivariance_error
from symgraph.train import TrainConfig

EDGES = torch.tensor([[0, 1, 2], [1, 2, 3]])


def test_convolution_inputs_must_match_the_parameters_dtype():
    conv = ImplicitSteerableConv("2x0e + 1x1o", "2x0e + 1x1o")
    x, pos = torch.randn(4, 5), torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"pos: expected dtype torch.float32 .* got torch.float64"):
        conv(x, pos.double(), EDGES)
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32 .*\.to\(torch.float64\)"):
        conv(x.double(), pos, EDGES)
    assert conv.double()(x.double(), pos.double(), EDGES).dtype == torch.float64


def test_linear_layer_refuses_integer_and_other_precision_features():
    rep = Rep("2x0e + 1x1o", SO3())
    linear = EquivariantLinear(rep, rep)
    with pytest.raises(
        TypeError, match="x: expected a floating-point tensor, got dtype torch.int64"
    ):
        linear(torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        linear(torch.ones(3, 5, dtype=torch.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused_not_propagated(bad):
    """A NaN/inf feature raises at the layer that reads it, naming the argument (no silent
    NaN output), in message passing, in linear maps and at a model's atom features."""
    conv = ImplicitSteerableConv("2x0e + 1x1o", "2x0e", node_dim=2)
    x, pos, node_attr = torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 2)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="x: expected finite values, got 1 NaN/inf entries"):
        conv(x, pos, EDGES)
    x[2, 3] = 0.0
    node_attr[0, 1] = bad
    with pytest.raises(ValueError, match="node_attr: expected finite values"):
        conv(x, pos, EDGES, node_attr=node_attr)
    assert torch.isfinite(conv(x, pos, EDGES, node_attr=node_attr.nan_to_num(0.0))).all()
    linear = EquivariantLinear(Rep("2x0e + 1x1o", SO3()), Rep("2x0e", SO3()))
    with pytest.raises(ValueError, match="h: expected finite values"):
        linear.rep_in.check_features(torch.full((3, 5), bad), "h")
    x[0, 0] = bad
    with pytest.raises(ValueError, match="x: expected finite values"):
        linear(x)


def test_node_attributes_of_a_layer_without_them_are_refused():
    conv = ImplicitSteerableConv("2x0e", "2x0e")
    with pytest.raises(ValueError, match="node_attr: this layer was built with node_dim=0.*=7"):
        conv(torch.randn(4, 2), torch.randn(4, 3), EDGES, node_attr=torch.randn(4, 7))


def test_radial_embedding_wants_floating_distances():
    embed = RadialEmbedding(8, 5.0)
    with pytest.raises(TypeError, match="distance: expected a floating tensor"):
        embed(torch.tensor([1, 2, 3]))
    with pytest.raises(
        ValueError, match=r"distance: expected a floating tensor \[E\], got \[6, 1\]"
    ):
        embed(torch.rand(6, 1))
    assert embed(torch.rand(6)).shape == (6, 8)


def test_graph_indices_and_neighbour_counts_are_checked():
    pos = torch.randn(6, 3)
    with pytest.raises(ValueError, match="batch: expected graph indices >= 0, got -1"):
        radius_graph(pos, 2.0, batch=torch.tensor([-1, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="max_num_neighbors: expected a positive int or None"):
        radius_graph(pos, 2.0, max_num_neighbors=-1)
    with pytest.raises(ValueError, match="max_num_neighbors: expected a positive int or None"):
        RadiusGraph(1.0, max_num_neighbors=0)
    with pytest.raises(ValueError, match=r"data.batch: expected shape \[6\]"):
        KNNGraph(2)(Data(pos=pos, batch=torch.tensor([0, 0, 1])))


def test_readout_names_batch_and_num_graphs():
    readout = InvariantReadout(Rep("2x0e + 1x1o", SO3()))
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"batch: expected shape \[4\]"):
        readout(x, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"num_graphs: expected at least batch.max\(\) \+ 1 = 3"):
        readout(x, torch.tensor([0, 0, 1, 2]), num_graphs=2)
    assert readout(x, torch.tensor([0, 0, 1, 1]), num_graphs=3).shape[0] == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_equivariance_error_names_a_bad_number_of_elements(bad):
    """0 used to fail inside ``torch.stack`` (no element, no error to report), and the
    other values as ``sample``'s ``n``, an argument the caller never passed."""
    group, rep = SO3(), Rep("2x0e + 1x1o", SO3())
    layer = EquivariantLinear(rep, rep)
    with pytest.raises(ValueError, match="num_elements: expected a positive int"):
        equivariance_error(layer, group, [torch.randn(3, rep.dim)], [rep], rep, num_elements=bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lmax": -1}, "lmax: expected an int >= 0"),
        ({"lmax": 2.0}, "lmax: expected an int >= 0"),
        ({"lmax": 2, "scalars": 0}, "scalars: expected an int >= 1"),
        ({"lmax": 2, "mul": 0}, "mul: expected an int >= 1"),
    ],
)
def test_default_kernel_hidden_refuses_what_it_would_silently_change(kwargs, message):
    """``lmax=-1`` gave ``"8x0e"`` and ``mul=0`` one copy of every ``l`` (``max(0 // l, 1)``)."""
    with pytest.raises(ValueError, match=message):
        default_kernel_hidden(**kwargs)


def test_molecule_model_checks_atom_rows_against_positions():
    from ase.build import molecule

    from symgraph.data import from_ase
    from symgraph.models import SteerableMoleculeNet

    model = SteerableMoleculeNet(hidden="4x0e + 1x1o", num_layers=1)
    batch = Batch.from_data_list([from_ase(molecule("CH4"))])
    extra = batch.clone()
    extra.x = torch.cat([batch.x, batch.x[:2]])
    with pytest.raises(ValueError, match="data.x: expected 5 rows .* got 7"):
        model(extra)
    wide = batch.clone()
    wide.pos = batch.pos.double()  # e.g. positions from numpy
    with pytest.raises(TypeError, match="data.pos: expected dtype torch.float32"):
        model(wide)


def test_a_single_key_may_be_a_string():
    torch.manual_seed(0)
    data = Data(pos=torch.randn(5, 3), normal=torch.randn(5, 3))
    rotated = RandomGroupRotation(SO3(), keys="pos", seed=0)(data.clone())
    assert not torch.allclose(rotated.pos, data.pos)
    assert torch.equal(rotated.normal, data.normal)  # only the named key moves


def test_a_single_known_quantity_may_be_a_string():
    from symgraph.noether.known import known_quantity

    scales = {"momentum": 2.0}
    one, listed = known_quantity("momentum", scales), known_quantity(["momentum"], scales)
    assert one.dim == listed.dim == 3 and one.weights == listed.weights == [0.5]


def test_direction_embedding_and_bilinear_shapes_are_named():
    from symgraph.groups import O3
    from symgraph.nn import EquivariantBilinear
    from symgraph.nn.embedding import direction_embedding

    with pytest.raises(ValueError, match=r"rel: expected shape \[N, 3\]"):
        direction_embedding(torch.randn(4, 2), 2)
    with pytest.raises(ValueError, match="lmax: expected an int ≥ 1, got 0"):
        direction_embedding(torch.randn(4, 3), 0)
    bilinear = EquivariantBilinear(Rep("1x1o", O3()), Rep("1x1o", O3()), Rep("1x0e", O3()))
    with pytest.raises(ValueError, match=r"b: expected leading dimensions .* \[4\], got \[5\]"):
        bilinear(torch.randn(4, 3), torch.randn(5, 3))
    assert bilinear(torch.randn(4, 3), torch.randn(1, 3)).shape == (4, 1)  # broadcasting


def test_degenerate_sizes_are_refused_at_construction():
    from symgraph.models import EquivariantDynamics
    from symgraph.nn.embedding import cosine_cutoff

    with pytest.raises(ValueError, match="velocity_scale: expected a positive typical speed"):
        EquivariantDynamics(velocity_scale=0.0)
    with pytest.raises(ValueError, match="hidden: expected a positive width, got 0"):
        EquivariantDynamics(hidden=0)
    with pytest.raises(ValueError, match="cutoff: expected a positive distance, got 0.0"):
        cosine_cutoff(torch.rand(3), 0.0)
    with pytest.raises(ValueError, match="backend: expected one of .* got 'bogus'"):
        ImplicitSteerableConv("2x0e", "2x0e", backend="bogus")


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(lmax=2.0), "lmax: expected an int ≥ 1, got 2.0"),
        (dict(lmax=True), "lmax: expected an int ≥ 1, got True"),
        (dict(cutoff="5"), "cutoff: expected a positive number or None, got '5'"),
        (dict(cutoff=True), "cutoff: expected a positive number or None, got True"),
        (dict(r_max=0), "r_max: expected a positive number, got 0"),
        (dict(r_max=None), "r_max: expected a positive number, got None"),
        (dict(r_max=True), "r_max: expected a positive number, got True"),
    ],
)
def test_kernel_settings_of_the_wrong_type_are_named(setting, message):
    with pytest.raises(ValueError, match=message):
        ImplicitSteerableConv("2x0e", "2x0e", **setting)
    assert ImplicitSteerableConv("2x0e", "2x0e", lmax=1, cutoff=3, r_max=2.5).kernel.lmax == 1


def test_representation_helpers_want_a_rep_and_counts_are_checked():
    from symgraph.graph import order_by_in_degree
    from symgraph.nn.linear import invariant_subspace
    from symgraph.nn.relaxed_steerable import symmetry_breaking_basis

    with pytest.raises(TypeError, match=r"rep: expected a symgraph Rep .* Rep\('1x1o', group\)"):
        symmetry_breaking_basis("1x1o")
    with pytest.raises(TypeError, match="rep: expected a symgraph Rep"):
        invariant_subspace("1x0e")
    with pytest.raises(ValueError, match="num_nodes: expected a non-negative int, got -1"):
        order_by_in_degree(EDGES, -1)


def test_empty_representations_and_widths_are_refused():
    from symgraph.models import SteerablePointNet

    with pytest.raises(ValueError, match="irreps_in: expected a non-empty representation"):
        ImplicitSteerableConv("0x0e", "2x0e")
    with pytest.raises(ValueError, match="irreps_out: expected a non-empty representation"):
        ImplicitSteerableConv("2x0e", "")
    with pytest.raises(ValueError, match="hidden: expected a non-empty representation"):
        ImplicitSteerableConv("2x0e", "2x0e", hidden="0x0e")
    with pytest.raises(ValueError, match="mlp_hidden: expected a positive int, got 0"):
        SteerablePointNet(4, mlp_hidden=0)
    # nn.Dropout takes NaN, and the first training forward raised far from the cause
    for dropout in (float("nan"), -0.1, 1.0):
        with pytest.raises(ValueError, match=r"dropout: expected a probability in \[0, 1\)"):
            SteerablePointNet(4, dropout=dropout)


def test_frame_names_the_dtype_of_integer_positions():
    from symgraph.data.frames import Frame

    with pytest.raises(TypeError, match="pos: expected a float tensor .* got dtype torch.int64"):
        Frame(pos=torch.zeros(3, 3, dtype=torch.long), z=torch.ones(3, dtype=torch.long))


def test_models_and_relaxed_layers_name_a_dtype_mismatch():
    from symgraph.models import EquivariantDynamics
    from symgraph.nn import RelaxedSteerableConv

    pos, vel = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3)
    with pytest.raises(TypeError, match="pos: expected dtype torch.float32"):
        EquivariantDynamics(hidden=8, num_layers=1)(pos, vel, torch.tensor([6, 1, 1, 1]))
    relaxed = RelaxedSteerableConv("2x0e", "2x0e", cutoff=3.0)
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        relaxed(torch.randn(4, 2, dtype=torch.float64), pos.float(), EDGES)


@pytest.mark.parametrize("kind", ["steerable", "group"])
def test_relaxed_layers_refuse_positions_in_another_dtype_like_the_implicit_conv(kind):
    """float64 positions (or offsets) into a float32 layer were rounded silently."""
    from symgraph.nn import RelaxedSteerableConv

    if kind == "steerable":
        relaxed = RelaxedSteerableConv("2x0e", "2x0e", cutoff=3.0)
    else:
        relaxed = RelaxedGroupConv(1, 1, "C4")
    x, pos = torch.randn(4, relaxed.rep_in.dim), torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"pos: expected dtype torch.float32 .* got torch.float64"):
        relaxed(x, pos.double(), EDGES)
    offsets = torch.randn(EDGES.shape[1], 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"offsets: expected dtype torch.float32"):
        relaxed(x, pos, EDGES, offsets)
    assert relaxed(x, pos, EDGES, offsets.float()).dtype == torch.float32
    assert relaxed.double()(x.double(), pos.double(), EDGES).dtype == torch.float64


def test_kernel_bilinear_and_point_net_inputs_are_checked():
    from symgraph.models import SteerablePointNet
    from symgraph.nn import EquivariantBilinear, ImplicitKernel

    kernel = ImplicitKernel("1x0e", "1x0e", edge_dim=2, node_dim=1)
    rel = torch.randn(3, 3)
    with pytest.raises(ValueError, match=r"edge_attr: expected a tensor \[E, 2\]"):
        kernel(rel)
    with pytest.raises(ValueError, match=r"edge_attr: expected shape \[3, 2\]"):
        kernel(rel, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"node_src: expected shape \[3, 1\] .* got None"):
        kernel.hidden_features(rel, torch.randn(3, 2))
    with pytest.raises(TypeError, match="rel: expected dtype torch.float32"):
        kernel(rel.double(), torch.randn(3, 2), torch.randn(3, 1), torch.randn(3, 1))
    assert kernel(rel, torch.randn(3, 2), torch.randn(3, 1), torch.randn(3, 1)).shape == (3, 1, 1)
    with pytest.raises(ValueError, match="num_radial: expected a positive int, got 0"):
        ImplicitSteerableConv("1x0e", "1x0e", num_radial=0)
    with pytest.raises(ValueError, match="edge_dim: expected a non-negative int, got True"):
        ImplicitKernel("1x0e", "1x0e", edge_dim=True)
    conv = ImplicitSteerableConv("1x0e + 1x1o", "1x0e")
    with pytest.raises(TypeError, match="rel: expected dtype torch.float32"):
        conv(torch.randn(4, 4), torch.randn(4, 3), EDGES, rel=torch.randn(3, 3).double())
    bilinear = EquivariantBilinear("1x1o", "1x1o", "1x0e")
    with pytest.raises(TypeError, match="a: expected dtype torch.float32"):
        bilinear(torch.randn(2, 3).double(), torch.randn(2, 3).double())
    net = SteerablePointNet(3, group="SO2", hidden="4x0e + 2x1o", k=3, stages=1).double()
    pos = torch.randn(8, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="normal: expected dtype torch.float64"):
        net.classify(pos, torch.nn.functional.normalize(torch.randn(8, 3), dim=1))


def test_readout_takes_any_float_dtype_exactly():
    readout = InvariantReadout(Rep("2x0e + 1x1o", SO3()))  # float32 buffers, no weights
    x = torch.randn(4, 5, dtype=torch.float64)
    out = readout(x, torch.tensor([0, 0, 1, 1]))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, readout.double()(x, torch.tensor([0, 0, 1, 1])))


def test_dynamics_breaking_input_and_relaxed_kernel_sizes_are_named():
    from symgraph.groups import group_from_name
    from symgraph.models import EquivariantDynamics
    from symgraph.nn import RelaxedImplicitSteerableConv, SymmetryBreakingInput

    for options, message in (
        (dict(num_rbf=-1), "num_rbf: expected a positive int, got -1"),
        (dict(num_layers=0), "num_layers: expected a positive int, got 0"),
        (dict(max_z=-1), "max_z: expected an int >= 0, got -1"),
        (dict(dt=float("inf")), "dt: expected a positive finite time step"),
    ):
        with pytest.raises(ValueError, match=message):
            EquivariantDynamics(**{"hidden": 8, "num_layers": 1, **options})
    breaking = SymmetryBreakingInput("1x1o", group_from_name("C4"))
    with pytest.raises(TypeError, match="x: expected floating-point node features"):
        breaking(torch.ones(5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="free_hidden: expected a positive int, got True"):
        RelaxedImplicitSteerableConv("1x0e", "1x0e", free_hidden=True)


def test_lattice_ops_and_gate_name_bad_arguments():
    from symgraph.lattice import (
        FieldLayout,
        Lattice,
        cell_index,
        cell_positions,
        field_to_nodes,
        kernel_index,
        kernel_to_stencil,
        lattice_graph,
        rotate_field,
        stencil_to_kernel,
    )
    from symgraph.nn.activations import Gate
    from symgraph.ops import lattice_convolution, lattice_degree
    from symgraph.ops.fused import segment_reduce
    from symgraph.ops.gate import gate

    lattice = Lattice((4, 5), radius=1)
    x = torch.randn(20, 2)
    weight = torch.randn(3, 2, 3, 3)
    degree = lattice_degree(lattice)
    with pytest.raises(ValueError, match=r"degree: expected shape \[4, 5\].*got \[5\]"):
        lattice_convolution(x, weight, lattice, degree=degree[0])
    with pytest.raises(ValueError, match=r"bias: expected shape \[3\] \(C_out\), got \[1\]"):
        lattice_convolution(x, weight, lattice, bias=torch.zeros(1), degree=degree)
    with pytest.raises(ValueError, match=r"bias: expected shape \[3\] \(C_out\), got \[1\]"):
        lattice_convolution(x, weight, lattice, bias=torch.zeros(1))
    with pytest.raises(ValueError, match=r"x: expected \[B \* 20, C\] node features"):
        lattice_convolution(torch.randn(21, 2), weight, lattice)
    with pytest.raises(ValueError, match=r"weight: expected x's dtype and device \(torch.float64"):
        lattice_convolution(x.double(), weight, lattice)
    for call in (
        lambda: cell_index("x"),
        lambda: cell_positions("x"),
        lambda: field_to_nodes(torch.zeros(1, 1, 4, 4), "x"),
        lambda: kernel_to_stencil(torch.zeros(3, 3), "x"),
    ):
        with pytest.raises(TypeError, match="lattice: expected a Lattice, got str"):
            call()
    with pytest.raises(TypeError, match="k: expected an int number of quarter turns, got '1'"):
        rotate_field(torch.zeros(1, 1, 4, 4), "1")
    from symgraph.lattice import reflect_field

    with pytest.raises(ValueError, match="a quarter turn needs H == W"):
        rotate_field(torch.randn(1, 1, 3, 5), 1)
    with pytest.raises(ValueError, match=r"axis: expected one of \['x', 'y'\], got 'z'"):
        reflect_field(torch.randn(1, 1, 4, 4), "z")
    with pytest.raises(ValueError, match="expected 2 channels for layout '1x1o'"):
        rotate_field(torch.randn(1, 3, 4, 4), layout="1x1o")
    with pytest.raises(ValueError, match=r"field: expected \[B, C, H, W\]"):
        reflect_field(torch.randn(1, 2, 5))
    with pytest.raises(TypeError, match="dtype: expected a floating-point torch dtype"):
        lattice_graph(lattice, dtype=torch.long)  # half-cell positions would round
    with pytest.raises(ValueError, match="spacing: expected positive finite numbers, got None"):
        Lattice((4, 4), spacing=None)
    with pytest.raises(ValueError, match="offsets: expected integer offsets"):
        kernel_index(torch.tensor([[0.5, 0.0]]), 1)
    with pytest.raises(TypeError, match="lattice: expected a Lattice, got tuple"):
        stencil_to_kernel(torch.randn(2, 9), (4, 4))
    with pytest.raises(TypeError, match="lattice: expected a Lattice, got tuple"):
        FieldLayout("1x1o", dim=2).to_field(torch.randn(16, 3), (4, 4))
    with pytest.raises(ValueError, match="num_segments: expected an int >= 0, got 2.5"):
        segment_reduce(torch.randn(3, 2), torch.tensor([0, 0, 1]), 2.5)
    segments = Gate(Rep("2x0e + 1x1o", SO3())).segments  # 2 values + 3 vector rows + 1 gate
    with pytest.raises(ValueError, match=r"x: expected 6 rows along axis 1"):
        gate(torch.randn(3, 8), 1, segments)
    with pytest.raises(ValueError, match=r"axis: expected an int in \[0, 2\)"):
        gate(torch.randn(3, 6), -1, segments)


def test_data_builders_name_bad_arguments():
    import numpy as np

    from symgraph.data.molecules import from_geometry, perceive_bonds
    from symgraph.data.qm9 import _target_columns
    from symgraph.data.shapes import ProceduralShapes, sample_shape
    from symgraph.graph import knn_graph

    pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.1]])
    with pytest.raises(ValueError, match="`charge` expected an integer total charge, got 1.5"):
        from_geometry([6, 1], pos, charge=1.5)
    with pytest.raises(ValueError, match="`charge` expected an integer total charge, got '0'"):
        perceive_bonds([6, 1], pos, charge="0")
    with pytest.raises(ValueError, match=r"`z` expected integer atomic numbers, got \[6.7, 1\]"):
        from_geometry([6.7, 1], pos)
    with pytest.raises(ValueError, match="`cutoff` must be a positive number"):
        from_geometry([6, 1], pos, cutoff=True)
    with pytest.raises(ValueError, match="target: expected a target name, an index or a non"):
        _target_columns([])
    with pytest.raises(ValueError, match="num_points: expected at least 2 points to normalise"):
        sample_shape("chair", 1)
    with pytest.raises(ValueError, match="num_points: expected at least 2 points per shape"):
        ProceduralShapes(2, num_points=1)
    with pytest.raises(ValueError, match="`k` must be a positive int, got True"):
        knn_graph(torch.randn(4, 3), True)
    with pytest.raises(ValueError, match="`r` must be a positive number, got '2'"):
        radius_graph(torch.randn(4, 3), "2")


def test_models_count_graphs_without_atoms_and_layers_name_bad_settings():
    from ase.build import molecule
    from torch_geometric.data import Batch, Data

    from symgraph.data import from_ase
    from symgraph.models import SteerableMoleculeNet
    from symgraph.nn import ImplicitKernel
    from symgraph.nn.mlp import EquivariantMLPLayer

    torch.manual_seed(0)
    model = SteerableMoleculeNet(hidden="8x0e + 2x1o", num_layers=1)
    hcn, ch4 = from_ase(molecule("HCN")), from_ase(molecule("CH4"))
    empty = Data(**{k: v[:0] if torch.is_tensor(v) and v.dim() and v.shape[0] == hcn.num_nodes
                    else v for k, v in hcn.items()})  # fmt: skip
    empty.edge_index, empty.edge_attr = hcn.edge_index[:, :0], hcn.edge_attr[:0]
    both = model(Batch.from_data_list([hcn, ch4])).detach()
    with_empty = model(Batch.from_data_list([hcn, ch4, empty])).detach()
    assert with_empty.shape == (3, 1)  # one row per graph, the empty one included
    torch.testing.assert_close(with_empty[:2], both)
    readout = InvariantReadout(Rep("2x0e + 1x1o", SO3()))
    assert readout(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), num_graphs=0).shape == (
        0,
        2,
    )
    with pytest.raises(ValueError, match="nonlinearity: expected one of"):
        EquivariantMLPLayer(Rep("1x0e", SO3()), Rep("1x0e", SO3()), "relu", True, False)
    with pytest.raises(ValueError, match="hidden"):
        ImplicitKernel("1x0e", "1x0e", hidden="")
    kernel = ImplicitKernel("1x0e", "1x0e")
    with pytest.raises(ValueError, match="node_src: this kernel was built with node_dim=0"):
        kernel.check_inputs(torch.randn(3, 3), node_src=torch.randn(3, 2))


def test_pointnet_refuses_an_empty_cloud_at_the_end_and_averages_tta_exactly():
    from torch_geometric.data import Batch, Data

    from symgraph.models import SteerablePointNet

    torch.manual_seed(0)
    model = SteerablePointNet(3, group="C4", hidden="4x0e + 2x1o", k=4, use_normals=False)
    clouds = [
        Data(pos=torch.randn(12, 3)),
        Data(pos=torch.randn(10, 3)),
        Data(pos=torch.zeros(0, 3)),
    ]
    with pytest.raises(ValueError, match=r"a cloud \(index 2\) with 0 points"):
        model(Batch.from_data_list(clouds))
    exact = SteerablePointNet(3, group="C5", hidden="4x0e + 2x1o", k=4, use_normals=False,
                              tta=5, tta_group="C5").double().eval()  # fmt: skip
    pos = torch.randn(12, 3, dtype=torch.float64)
    plain = exact._logits(pos, None, None)
    torch.testing.assert_close(exact.classify(pos), plain, atol=1e-14, rtol=0)


def test_radial_centres_survive_a_float32_round_trip():
    from symgraph.nn import RadialEmbedding

    built_in_float32 = RadialEmbedding(7, 3.3).double()
    built_in_float64 = RadialEmbedding(7, 3.3).double()
    distance = torch.linspace(0, 4, 9, dtype=torch.float64)
    assert torch.equal(built_in_float32(distance), built_in_float64(distance))
    reference = torch.linspace(0.0, 3.3, 7, dtype=torch.float64)
    assert torch.equal(built_in_float32.centres, reference)


@pytest.mark.parametrize(
    "layer", ["Gate", "NormActivation", "EquivariantLayerNorm", "InvariantReadout"]
)
def test_layers_on_one_representation_name_an_irreps_string(layer):
    """Gate, NormActivation, EquivariantLayerNorm and InvariantReadout take a Rep (it carries
    the group); an irreps string, as the other layers take, is named, not an AttributeError."""
    import symgraph.nn

    with pytest.raises(TypeError, match=r"rep: expected a symgraph Rep .* Rep\('4x0e \+ 1x1o'"):
        getattr(symgraph.nn, layer)("4x0e + 1x1o")
    assert getattr(symgraph.nn, layer)(Rep("4x0e + 1x1o", SO3())).rep.dim == 7


@pytest.mark.parametrize("layer", ["NormActivation", "EquivariantLayerNorm"])
def test_norm_layers_refuse_features_of_another_precision(layer):
    """As every layer with weights: float32 features into a float64 layer are refused, not
    silently promoted to a float64 output."""
    import symgraph.nn

    norm = getattr(symgraph.nn, layer)(Rep("2x0e + 1x1o", SO3())).double()
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float64 .* got torch.float32"):
        norm(torch.randn(3, 5))
    assert norm(torch.randn(3, 5, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("eps", [0.0, -1e-6, True, "1e-6"])
def test_layer_norm_eps_must_be_positive(eps):
    from symgraph.nn import EquivariantLayerNorm

    with pytest.raises(ValueError, match="eps: expected a positive number"):
        EquivariantLayerNorm(Rep("2x0e + 1x1o", SO3()), eps=eps)


def test_equivariance_error_of_an_empty_output_is_refused():
    """No entries to compare gave an error of 0/0 = NaN; it is now named."""
    from symgraph.testing import equivariance_error

    linear = EquivariantLinear(Rep("2x1o", SO3()), Rep("1x1o", SO3()))
    with pytest.raises(
        ValueError, match=r"args: the module's output has no entries \(shape \[0, 3\]"
    ):
        equivariance_error(linear, SO3(), [torch.randn(0, 6)], [linear.rep_in], linear.rep_out)
    nothing = lambda x: linear(x)[:, :0]  # noqa: E731  (nodes, but no output entries)
    with pytest.raises(ValueError, match=r"the module's output has no entries \(shape \[2, 0\]"):
        equivariance_error(nothing, SO3(), [torch.randn(2, 6)], [linear.rep_in], "0x0e")
    assert (
        equivariance_error(linear, SO3(), [torch.randn(2, 6)], [linear.rep_in], linear.rep_out)
        < 1e-5
    )


def test_layer_norm_of_an_empty_representation_is_the_identity():
    from symgraph.nn import EquivariantLayerNorm, NormActivation

    x = torch.randn(3, 0)
    assert EquivariantLayerNorm(Rep("0x0e", SO3()))(x).shape == (3, 0)
    assert NormActivation(Rep("0x0e", SO3()))(x).shape == (3, 0)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(lmax=True), "lmax: expected an int ≥ 1, got True"),
        (dict(num_radial=True), "num_radial: expected a positive int, got True"),
        (dict(cutoff=True), "cutoff: expected a positive number or None, got True"),
        (dict(cutoff="5"), "cutoff: expected a positive number or None, got '5'"),
        (dict(r_max=None), "r_max: expected a positive number, got None"),
        (dict(r_max=True), "r_max: expected a positive number, got True"),
    ],
)
def test_relaxed_steerable_settings_of_the_wrong_type_are_named(setting, message):
    """The settings RelaxedSteerableConv shares with the implicit kernel are checked alike at
    construction (a bool was taken as 1, lmax=True failed only in forward)."""
    from symgraph.nn import RelaxedSteerableConv

    with pytest.raises(ValueError, match=message):
        RelaxedSteerableConv("2x0e", "2x0e", **setting)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(length_scale=None), "length_scale: expected a positive finite number, got None"),
        (dict(length_scale=float("inf")), "length_scale: expected a positive finite number"),
        (dict(backend="bogus"), "backend: expected one of .* got 'bogus'"),
    ],
)
def test_relaxed_group_conv_settings_are_named_at_construction(setting, message):
    from symgraph.nn import RelaxedGroupConv

    with pytest.raises(ValueError, match=message):
        RelaxedGroupConv(1, 1, "C4", **setting)


def test_mlp_depth_is_no_bool():
    from symgraph.nn import EquivariantMLP

    with pytest.raises(ValueError, match="layers: expected a non-negative int, got True"):
        EquivariantMLP("2x0e", "2x0e", layers=True)


def test_an_irreps_string_e3nn_cannot_read_is_named_by_its_argument():
    """``as_rep`` names the argument (``irreps_in``, ``rep_out``, ``kernel_hidden``), not the
    parser's own ``irreps``."""
    from symgraph.models.fluids import SteerableFluidNet

    with pytest.raises(ValueError, match="irreps_in: expected an e3nn irreps string"):
        ImplicitSteerableConv("4x9q", "2x0e")
    with pytest.raises(ValueError, match="rep_out: expected an e3nn irreps string"):
        EquivariantLinear("2x0e", "1xq")
    with pytest.raises(ValueError, match="kernel_hidden: expected an e3nn irreps string"):
        SteerableFluidNet(2, group="C4", kernel_hidden="4x9q")


def _tailored(steps: object, lr: object, horizon: object) -> Tensor:
    """Predictions of :func:`~symgraph.noether.tailor` on a small pendulum model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x0 = torch.randn(4, 2)
    energy = lambda x: x[..., 1] ** 2 + 3 * (1 - torch.cos(x[..., 0]))  # noqa: E731
    return tailor(model, x0, energy, steps=steps, lr=lr, horizon=horizon).predictions


def _conv_output(lmax: object, cutoff: object) -> Tensor:
    torch.manual_seed(0)
    conv = ImplicitSteerableConv("2x0e + 1x1o", "2x0e + 1x1o", lmax=lmax, cutoff=cutoff)
    torch.manual_seed(1)
    return conv(torch.randn(4, 5), torch.randn(4, 3), EDGES)


#: ``name -> build(numpy) -> {attribute: value}``: each public object built with numpy
#: scalars (``numpy=True``) or the equal Python numbers; the values must be equal and of
#: the same Python type either way (what a repr, a config.json or a cache key sees).
NUMPY_SETTINGS: dict[str, Callable[[bool], dict[str, object]]] = {}


def _setting(build: Callable[[Callable], dict[str, object]]) -> None:
    """Register ``build(number)``, where ``number(x)`` is ``x`` or its numpy scalar."""

    def values(numpy: bool) -> dict[str, object]:
        if not numpy:
            return build(lambda x: x)
        return build(lambda x: np.int64(x) if isinstance(x, int) else np.float32(x))

    NUMPY_SETTINGS[build.__name__] = values


@_setting
def radius_graph_transform(n: Callable) -> dict[str, object]:
    graph = RadiusGraph(n(1.5), max_num_neighbors=n(8))
    data = graph(Data(pos=torch.arange(18.0).reshape(6, 3) / 4))
    return {
        "r": graph.r,
        "max": graph.max_num_neighbors,
        "repr": repr(graph),
        "edges": data.num_edges,
    }


@_setting
def knn_graph_transform(n: Callable) -> dict[str, object]:
    graph = KNNGraph(n(3))
    data = graph(Data(pos=torch.arange(18.0).reshape(6, 3) ** 2))
    return {"k": graph.k, "edges": data.edge_index.tolist()}


@_setting
def sample_points_fixed(n: Callable) -> dict[str, object]:
    sample = SamplePointsFixed(n(8), seed=n(3))
    key = transform_fingerprint(sample)
    data = sample(Data(pos=torch.arange(15.0).reshape(5, 3)))
    return {
        "num_points": sample.num_points,
        "seed": sample.seed,
        "key": key,
        "pos": data.pos.tolist(),
    }


@_setting
def point_net(n: Callable) -> dict[str, object]:
    net = SteerablePointNet(n(4), hidden="4x0e + 2x1o", k=n(4), ratio=n(0.5), mlp_hidden=n(8))
    return {"num_classes": net.num_classes, "k": net.k, "ratio": net.ratio, "tta": net.tta}


@_setting
def implicit_conv(n: Callable) -> dict[str, object]:
    conv = ImplicitSteerableConv("2x0e", "2x0e", lmax=n(1), cutoff=n(3.0), block_edges=n(64))
    out = _conv_output(n(1), n(3.0))
    return {
        "lmax": conv.kernel.lmax,
        "cutoff": conv.kernel.cutoff,
        "block_edges": conv.block_edges,
        "radial": conv.kernel.radial.num_basis,
        "out": out.tolist(),
    }


@_setting
def equivariant_mlp(n: Callable) -> dict[str, object]:
    mlp = EquivariantMLP("2x0e + 1x1o", "1x0e", layers=n(2))
    return {"parameters": sum(p.numel() for p in mlp.parameters())}


@_setting
def relaxed_group_conv(n: Callable) -> dict[str, object]:
    conv = RelaxedGroupConv(n(2), n(3), "C4", hidden=n(8), length_scale=n(0.5))
    return {"length_scale": conv.length_scale, "in": conv.in_channels, "hidden": conv.hidden}


@_setting
def teleport_hook(n: Callable) -> dict[str, object]:
    hook = Teleport("every:10", steps=n(2), lr=n(0.25))
    return {"steps": hook.kwargs["steps"], "lr": hook.kwargs["lr"], "repr": repr(hook)}


@_setting
def tailoring(n: Callable) -> dict[str, object]:
    return {"predictions": _tailored(n(2), n(0.5), n(3)).tolist()}


@_setting
def fluid_model(n: Callable) -> dict[str, object]:
    model = FluidCNN(n(2), hidden=n(4), layers=n(2), kernel_size=n(3), scale=n(2.0))
    return {"scale": model.scale, "frames_in": model.frames_in}


@_setting
def matrix_group(n: Callable) -> dict[str, object]:
    group = MatrixGroup(discrete=C(n(4)).discrete_generators.float(), atol=n(2.0**-20))
    return {"atol": group._atol, "order": group.order, "name": C(n(4)).name}


@_setting
def steerable_dynamics(n: Callable) -> dict[str, object]:
    model = SteerableDynamics(num_layers=n(1), dt=n(0.5), cutoff=n(4.0), species_dim=n(2))
    return {"dt": model.dt, "cutoff": model.cutoff, "species_dim": model.species_dim}


@_setting
def train_config(n: Callable) -> dict[str, object]:
    config = TrainConfig(epochs=n(2), batch_size=n(4), seed=n(1), lr=n(0.5))
    return {"config.json": json.dumps(dataclasses.asdict(config), default=str)}


@_setting
def plume_config(n: Callable) -> dict[str, object]:
    config = PlumeConfig(size=n(16), dt=n(0.5), walls=n(1), symmetry_breaking=n(0.5))
    return {"cache key": json.dumps(dataclasses.asdict(config))}


@pytest.mark.parametrize("name", sorted(NUMPY_SETTINGS))
def test_numpy_scalars_are_taken_as_python_numbers(name):
    """Settings given as numpy scalars (``np.int64`` from ``np.arange``, ``np.float32``) work
    as the equal Python numbers do, and what is stored holds Python ``int``/``float``: the
    same attributes, reprs, outputs and cache keys."""
    python, numpy = NUMPY_SETTINGS[name](False), NUMPY_SETTINGS[name](True)
    assert numpy == python
    for key, value in numpy.items():
        assert type(value) is type(python[key]), key


def test_qm9_takes_a_numpy_subset_and_cutoff(shared_data, tmp_path):
    csv = [shared_data / "qm9" / "qm9pack_first200.csv"]
    python = QM9(tmp_path / "a", source="csv", csv_files=csv, subset=5, cutoff=4.0, log=False)
    numpy = QM9(
        tmp_path / "b", source="csv", csv_files=csv, subset=np.int64(5), cutoff=np.float32(4.0),
        subset_seed=np.int64(0), log=False,
    )  # fmt: skip
    assert (type(numpy.subset), type(numpy.cutoff), type(numpy.subset_seed)) == (int, float, int)
    assert len(numpy) == len(python) == 5


#: ``(name, build(bad), message)``: settings that refuse bools (``np.bool_`` too), NaN and
#: negative numbers and tensors whatever their type, and inf where there is no finite one.
REFUSALS = [
    ("RadiusGraph", lambda bad: RadiusGraph(bad), "r: expected a positive finite radius"),
    ("KNNGraph", lambda bad: KNNGraph(bad), "k: expected a positive int"),
    ("seed", lambda bad: SamplePointsFixed(4, seed=bad), "seed: expected an int or None"),
    ("layers", lambda bad: EquivariantMLP("2x0e", "2x0e", layers=bad), "layers: expected"),
    ("lmax", lambda bad: ImplicitSteerableConv("2x0e", "2x0e", lmax=bad), "lmax: expected"),
    ("ratio", lambda bad: SteerablePointNet(4, ratio=bad), r"ratio: expected a number in \(0"),
    ("length_scale", lambda bad: RelaxedGroupConv(2, 2, "C4", length_scale=bad), "length_sc"),
    ("teleport lr", lambda bad: Teleport("every:10", lr=bad), "lr: expected a positive finite"),
    ("fluid scale", lambda bad: FluidCNN(2, scale=bad), "scale: expected a positive finite"),
    ("atol", lambda bad: MatrixGroup(atol=bad), "atol: expected a positive number"),
    ("dt", lambda bad: SteerableDynamics(dt=bad), "dt: expected a positive finite time step"),
    ("C(n)", lambda bad: C(bad), r"C\(n\): `n` must be a positive int"),
    ("qm9 cutoff", lambda bad: QM9(".", cutoff=bad), r"cutoff: expected a positive number \(Å"),
]
BAD_NUMBERS = [True, np.bool_(True), np.float32("nan"), np.float32(-1.0), torch.tensor(1.0)]


@pytest.mark.parametrize(
    ("build", "bad", "message"),
    [
        pytest.param(build, bad, message, id=f"{name}-{bad!r}")
        for name, build, message in REFUSALS
        for bad in [*BAD_NUMBERS, *([] if "cutoff" in name else [np.float64("inf")])]
    ],
)
def test_numpy_bools_nan_inf_negatives_and_tensors_stay_refused(build, bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build(bad)


@pytest.mark.parametrize("bad", [True, np.bool_(True), np.float32("nan"), np.float32(-1.0)])
def test_tailor_refuses_bool_nan_and_negative_rates_as_numpy_scalars(bad):
    """(A tensor rate is allowed: a learned one.)"""
    with pytest.raises(ValueError, match="lr: expected non-negative finite step sizes"):
        _tailored(1, bad, 2)
    with pytest.raises(ValueError, match="lr: expected non-negative finite step sizes"):
        _tailored(1, [0.1, bad], 2)
