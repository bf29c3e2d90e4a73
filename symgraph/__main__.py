"""``python -m symgraph`` (and ``torchrun -m symgraph``): the ``symgraph`` command."""

from symgraph.cli import main

raise SystemExit(main())
