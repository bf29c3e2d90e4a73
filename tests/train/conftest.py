"""Fixtures of the training-loop tests: a tiny toy graph regression."""

from __future__ import annotations

import pytest

from symgraph.train.toy import ToyGraphs


@pytest.fixture(scope="module")
def toy_splits():
    """(train, val, test) = 32 / 6 / 6 random geometric graphs."""
    dataset = ToyGraphs(44, seed=1)
    return dataset[:32], dataset[32:38], dataset[38:]
