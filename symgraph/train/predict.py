"""Predict molecular properties with a trained ``symgraph train qm9`` run.

>>> from ase.build import molecule
>>> from symgraph.train.predict import predict
>>> predict("runs/demo", [molecule("CH3CH2OH"), molecule("C6H6")])   # eV for HOMO
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from symgraph.checks import is_int
from symgraph.files import read_json
from symgraph.train.checkpoint import load_checkpoint
from symgraph.train.loop import RUN_FILES
from symgraph.train.tasks import RegressionTask

__all__ = ["load_qm9_run", "predict", "to_graph"]


def load_qm9_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[nn.Module, RegressionTask]:
    """The trained model (eval mode) and its task (target statistics) from a qm9 run folder."""
    from symgraph.data.qm9 import target_index
    from symgraph.train.job_qm9 import build_qm9_model
    from symgraph.train.jobs import get_job

    run_dir = Path(run_dir)
    config = read_json(run_dir / RUN_FILES["config"])
    if config.get("job") != "qm9":
        raise ValueError(f"run_dir: expected a run of the qm9 job, got job {config.get('job')!r}")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint: expected 'best' or 'last', got {checkpoint!r}")
    args = argparse.Namespace(**get_job("qm9").saved_args(config["args"]))
    state = load_checkpoint(run_dir / RUN_FILES["best" if checkpoint == "best" else "checkpoint"])
    model = build_qm9_model(args)
    model.load_state_dict(state["model"])
    task = RegressionTask(target_index(args.target))
    task.load_state_dict(state["task"])
    return model.eval(), task


def _is_ase_atoms(obj: object) -> bool:
    from ase import Atoms

    return isinstance(obj, Atoms)


def to_graph(molecule: object, cutoff: float) -> Data:
    """An ase ``Atoms``, an rdkit ``Mol`` with a conformer, or a ready ``Data`` as a graph."""
    from symgraph.data.molecules import from_ase, from_rdkit

    if isinstance(molecule, Data):
        return molecule
    if _is_ase_atoms(molecule):
        return from_ase(molecule, cutoff=cutoff)
    if type(molecule).__module__.startswith("rdkit") and hasattr(molecule, "GetAtoms"):
        # hydrogens that are no atoms: implicit ones, and the explicit counts that readers
        # keep on e.g. stereocentres and [nH] when they remove the H atoms
        missing = sum(a.GetNumImplicitHs() + a.GetNumExplicitHs() for a in molecule.GetAtoms())
        if missing:
            raise ValueError(
                f"molecules: an rdkit Mol with {missing} hydrogens that are not atoms (file "
                "readers drop them by default); the model was trained on all atoms: add them with "
                "Chem.AddHs(mol, addCoords=True)"
            )
        return from_rdkit(molecule, cutoff=cutoff)
    raise TypeError(
        f"molecules: expected ase Atoms, rdkit Mol or PyG Data, got {type(molecule).__name__}"
    )


def predict(
    run: str | Path | tuple[nn.Module, RegressionTask],
    molecules: Sequence[object],
    batch_size: int = 64,
) -> Tensor:
    """Predictions ``[M]`` in the dataset's units (eV for energies, D, bohr³ …).

    Args:
        run: a qm9 run folder, or ``(model, task)`` from :func:`load_qm9_run`.
        molecules: ase ``Atoms``, rdkit ``Mol`` (with a 3D conformer) or PyG ``Data``.
        batch_size: molecules per forward pass.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if isinstance(molecules, Data) or _is_ase_atoms(molecules) or hasattr(molecules, "GetAtoms"):
        raise TypeError(
            f"molecules: expected a sequence of molecules, got one {type(molecules).__name__}; "
            "wrap it in a list"
        )
    model, task = load_qm9_run(run) if isinstance(run, str | Path) else run
    cutoff = getattr(getattr(model, "model", model), "cutoff", 5.0)
    graphs = [to_graph(m, cutoff) for m in molecules]
    outputs = []
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = Batch.from_data_list(graphs[start : start + batch_size])
            outputs.append(model(batch).reshape(len(batch), -1)[:, 0])
    standardised = torch.cat(outputs) if outputs else torch.zeros(0)
    return standardised * task.std + task.mean
