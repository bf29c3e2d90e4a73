"""The Noether tailoring example runs end to end in quick mode."""

from __future__ import annotations

import math


def test_example_quick_mode(capsys, load_script):
    module = load_script("examples/noether_tailoring.py")
    out = module.main(["--quick"])
    assert all(math.isfinite(v) for v in out.values())
    # the report lines are printed
    printed = capsys.readouterr().out
    assert "generator (rdkit MMFF94, CCO)" in printed and "tailored (E, P, L)" in printed
