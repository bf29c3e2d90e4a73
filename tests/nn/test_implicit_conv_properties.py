"""ImplicitSteerableConv is equivariant for any irreps, group, lmax and aggregation."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgraph.graph import radius_graph
from symgraph.groups import group_from_name
from symgraph.nn import ImplicitSteerableConv
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
