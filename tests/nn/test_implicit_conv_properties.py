"""Property tests: the convolutions and bilinear maps are equivariant for any irreps, group,
lmax and aggregation."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgraph.graph import radius_graph
from symgraph.groups import group_from_name
from symgraph.nn import EquivariantBilinear, ImplicitSteerableConv
from symgraph.nn.relaxed_implicit import RelaxedImplicitSteerableConv
from symgraph.nn.relaxed_steerable import RelaxedSteerableConv
from symgraph.testing import equivariance_error

GROUPS = ["O3", "SO3", "SO2", "C4", "D6", "Octahedral", "FullOctahedral", "Icosahedral"]


@st.composite
def irreps(draw, max_terms: int = 3) -> str:
    terms = draw(
        st.lists(
            st.tuples(st.integers(1, 3), st.integers(0, 3), st.sampled_from("eo")),
            min_size=1,
            max_size=max_terms,
        )
    )
    return " + ".join(f"{m}x{l}{p}" for m, l, p in terms)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    irreps_in=irreps(),
    irreps_out=irreps(),
    group=st.sampled_from(GROUPS),
    lmax=st.integers(1, 3),
    aggr=st.sampled_from(["add", "mean"]),
    edge_dim=st.sampled_from([0, 2]),
    seed=st.integers(0, 2**16),
)
def test_equivariant_for_any_irreps(irreps_in, irreps_out, group, lmax, aggr, edge_dim, seed):
    """Random irreps (l ≤ 3, both parities, multiplicities), group, lmax, aggregation and
    edge attributes: finite outputs of the right width, equivariant to float64 precision."""
    torch.manual_seed(seed)
    g = group_from_name(group)
    conv = ImplicitSteerableConv(
        irreps_in, irreps_out, group=g, lmax=lmax, aggr=aggr, edge_dim=edge_dim, cutoff=2.0
    ).double()
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(14, 3, generator=gen, dtype=torch.float64)
    edge_index = radius_graph(pos, 2.0)
    edge_attr = torch.randn(edge_index.shape[1], edge_dim, generator=gen, dtype=torch.float64)
    x = torch.randn(14, conv.rep_in.dim, generator=gen, dtype=torch.float64)

    def f(x, pos):
        return conv(x, pos, edge_index, edge_attr if edge_dim else None)

    out = f(x, pos)
    assert out.shape == (14, conv.rep_out.dim) and bool(torch.isfinite(out).all())
    err = equivariance_error(f, g, [x, pos], [conv.rep_in, "pos"], conv.rep_out, num_elements=2)
    assert err < 1e-10, err


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    irreps_in=irreps(),
    irreps_out=irreps(),
    irreps_b=irreps(max_terms=2),
    group=st.sampled_from(GROUPS),
    lmax=st.integers(1, 3),
    aggr=st.sampled_from(["add", "mean"]),
    seed=st.integers(0, 2**16),
)
def test_relaxed_layers_and_bilinear_maps_are_equivariant_for_any_irreps(
    irreps_in, irreps_out, irreps_b, group, lmax, aggr, seed
):
    """The relaxed convolutions as initialised (no relaxation yet) and
    ``EquivariantBilinear(irreps_in ⊗ irreps_b -> irreps_out)``, for random irreps."""
    torch.manual_seed(seed)
    g = group_from_name(group)
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    edge_index = radius_graph(pos, 2.0)
    for cls in (RelaxedSteerableConv, RelaxedImplicitSteerableConv):
        conv = cls(irreps_in, irreps_out, group=g, lmax=lmax, aggr=aggr, cutoff=2.0).double()
        x = torch.randn(12, conv.rep_in.dim, generator=gen, dtype=torch.float64)

        def f(x, pos, conv=conv):
            return conv(x, pos, edge_index)

        err = equivariance_error(f, g, [x, pos], [conv.rep_in, "pos"], conv.rep_out, num_elements=2)
        assert err < 1e-10, (cls.__name__, err)
    bilinear = EquivariantBilinear(irreps_in, irreps_b, irreps_out, group=g).double()
    a = torch.randn(5, bilinear.rep_a.dim, generator=gen, dtype=torch.float64)
    b = torch.randn(5, bilinear.rep_b.dim, generator=gen, dtype=torch.float64)
    reps = [bilinear.rep_a, bilinear.rep_b]
    assert equivariance_error(bilinear, g, [a, b], reps, bilinear.rep_out, num_elements=2) < 1e-10
