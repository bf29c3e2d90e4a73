"""symgraph.testing: the elements tried cover the group."""

from __future__ import annotations

import pytest
import torch

from symgraph.groups import group_from_name
from symgraph.testing import equivariance_error, equivariance_error_per_element


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A pseudovector: equivariant under rotations, not under reflections."""
    return torch.linalg.cross(a, b)


@pytest.mark.parametrize("seed", range(12))
def test_one_element_of_o3_still_tries_a_reflection(seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = (
        torch.randn(5, 3, dtype=torch.float64, generator=gen),
        torch.randn(5, 3, dtype=torch.float64, generator=gen),
    )
    group = group_from_name("O3")
    err = equivariance_error(
        _cross, group, [a, b], ["vector", "vector"], "vector", num_elements=1, generator=gen
    )
    assert err > 0.1
    assert (
        equivariance_error(
            _cross, group_from_name("SO3"), [a, b], ["vector", "vector"], "vector", generator=gen
        )
        < 1e-12
    )


@pytest.mark.parametrize("name", ["O3", "O2", "O2Full", "SO2Inversion", "SO3"])
def test_elements_cycle_through_every_component_and_stay_in_the_group(name):
    group = group_from_name(name)
    x = torch.randn(4, 3, dtype=torch.float64)
    elements, errors = equivariance_error_per_element(
        lambda v: v, group, [x], ["vector"], "vector", num_elements=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    k = group.num_components
    assert elements.shape == (max(2, k), 3, 3) and errors.shape == (max(2, k),)
    reps = group._components.to(torch.float64)
    got = [group._component_key(g) for g in elements]
    assert got[:k] == [group._component_key(r) for r in reps]  # each component, in order
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(elements @ elements.transpose(1, 2), eye.expand_as(elements))
