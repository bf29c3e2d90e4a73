"""The top-level package: every subpackage is an attribute of ``symgraph``, the heavy ones
imported only on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import symgraph as sg

LAZY = ("data", "lattice", "models", "noether", "teleport", "train")


def test_subpackages_are_attributes_of_the_package():
    for name in (*LAZY, "graph", "groups", "nn", "ops", "testing"):
        assert getattr(sg, name).__name__ == f"symgraph.{name}"
        assert name in sg.__all__
    assert sg.noether.tailor is __import__("symgraph.noether", fromlist=["tailor"]).tailor
    with pytest.raises(AttributeError, match="module 'symgraph' has no attribute 'noethr'"):
        sg.noethr  # noqa: B018


def test_importing_the_package_leaves_the_heavy_subpackages_unimported():
    code = (
        "import sys, symgraph\n"
        "heavy = ('symgraph.train', 'symgraph.noether', 'symgraph.teleport', 'symgraph.models')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "symgraph.teleport\n"
        "print('symgraph.teleport' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
