"""Noether networks benchmark: does conservation tailoring improve long rollouts?

Part (a), the seed's pendulum and spring tables (Alet et al. 2021, Tables 1-2): a vanilla
MLP step predictor ``x_{t+1} = x_t + MLP(x_t)`` against the same MLP meta-tailored
(Algorithm 1) with the true Hamiltonian as ``g`` (oracle) and with a meta-learned
``g_φ``. Data in the style of Hamiltonian Neural Networks (Greydanus et al. 2019):
pendulum ``H = 3(1 − cos q) + p²``, spring ``H = q² + p²``, trajectories of 3 time units
integrated to 1e-10, training observations with Gaussian noise (σ = 0.1), clean held-out
test trajectories. Every method gets the same data, optimizer, batch size and number of
outer steps; the metric is the RMSE of the full rollout from each test trajectory's
initial state.

Part (b), molecular rollouts: an E(3)-equivariant dynamics model (a factory, by default
``symgraph.models.dynamics.EquivariantDynamics``) trained on the library's own MMFF94 NVE
trajectories of ethanol, rolled out 100+ steps from held-out initial frames: position RMSE
and energy drift against horizon, without tailoring, with known quantities (energy,
momentum, angular momentum) tailored at test time, and with a meta-learned invariant
``g_φ`` (``NeuralConservedQuantity``). Writes ``benchmarks/out/noether_rollouts.png``.

Run::

    OMP_NUM_THREADS=1 python benchmarks/noether.py            # full
    OMP_NUM_THREADS=1 python benchmarks/noether.py --quick    # < 60 s, part (a) only
    OMP_NUM_THREADS=1 python benchmarks/noether.py --part b   # molecular rollouts

Results go to ``benchmarks/out/noether_<part>.json`` (and the PNG); a markdown table is
printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import result_path, write_result  # noqa: E402

from symgraph.noether import (  # noqa: E402
    AsePotential,
    LinearMomentum,
    MetaTailoring,
    NeuralConservedQuantity,
    ScaleShift,
    TotalEnergy,
    Trajectory,
    rollout,
    tailor,
    trajectory_mse,
)
from symgraph.noether.known import known_quantity, typical_scales  # noqa: E402
from symgraph.noether.metrics import position_rmse, quantity_drift  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


# ----------------------------------------------------------------------------------------
# part (a): pendulum and spring
# ----------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    hamiltonian: Callable[[torch.Tensor], torch.Tensor]  # [..., 2] -> [...]
    formula: str
    radius: tuple[float, float]
    points: int  # frames per trajectory (t in [0, 3])


def _pendulum_h(x: torch.Tensor) -> torch.Tensor:
    return 3.0 * (1.0 - torch.cos(x[..., 0])) + x[..., 1] ** 2


def _spring_h(x: torch.Tensor) -> torch.Tensor:
    return x[..., 0] ** 2 + x[..., 1] ** 2


SYSTEMS = {
    "pendulum": System("pendulum", _pendulum_h, "p² − 3 cos q (+3)", (1.3, 2.3), 45),
    "spring": System("spring", _spring_h, "q² + p²", (0.1, 1.0), 30),
}


def _vector_field(system: System) -> Callable[[float, np.ndarray], np.ndarray]:
    def field(_t: float, y: np.ndarray) -> np.ndarray:
        x = torch.tensor(y, dtype=torch.float64, requires_grad=True)
        dq, dp = torch.autograd.grad(system.hamiltonian(x), x)[0]
        return np.array([float(dp), -float(dq)])  # q' = ∂H/∂p, p' = −∂H/∂q

    return field


def make_trajectories(system: System, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` clean trajectories ``[T, n, 2]`` on ``t ∈ [0, 3]`` (HNN-style initial states)."""
    from scipy.integrate import solve_ivp

    t_eval = np.linspace(0.0, 3.0, system.points)
    out = []
    for _ in range(n):
        y0 = rng.uniform(-1, 1, 2)
        y0 = y0 / np.linalg.norm(y0) * rng.uniform(*system.radius)
        sol = solve_ivp(
            _vector_field(system), (0.0, 3.0), y0, t_eval=t_eval, rtol=1e-10, atol=1e-10
        )
        out.append(sol.y.T)
    return torch.tensor(np.stack(out, axis=1), dtype=torch.float32)


class MLPStep(nn.Module):
    """``x -> x + MLP(x)`` (the vanilla predictor of the seed's tables).

    Each hidden layer is followed by a :class:`ScaleShift` (identity at initialisation):
    the per-sample parameters that tailoring adapts, as in the reference implementation.
    """

    def __init__(self, hidden: int = 200) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden),
            nn.Tanh(),
            ScaleShift(hidden),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            ScaleShift(hidden),
            nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class HamiltonianG(nn.Module):
    """The true Hamiltonian as a (parameter-free) conserved quantity."""

    def __init__(self, system: System) -> None:
        super().__init__()
        self.system = system

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.system.hamiltonian(x)


def _windows(data: torch.Tensor, length: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    t, n, _ = data.shape
    starts = torch.randint(0, t - length, (batch,), generator=gen)
    which = torch.randint(0, n, (batch,), generator=gen)
    idx = starts[None, :] + torch.arange(length + 1)[:, None]
    return data[idx, which[None, :]]


RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # line search of test-time tailoring (clipped steps)


def _rmse(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((pred[1:] - truth[1:]) ** 2).mean().sqrt())


def _row(
    system: System,
    method: str,
    description: str,
    pred: torch.Tensor,
    test: torch.Tensor,
    steps: int,
    seconds: float,
) -> dict:
    h0 = system.hamiltonian(test[0])
    return {
        "system": system.name,
        "method": method,
        "description": description,
        "rmse": _rmse(pred, test),
        "energy_drift_final": float((system.hamiltonian(pred[-1]) - h0).abs().mean()),
        "outer_steps": steps,
        "train_seconds": round(seconds, 1),
    }


def run_pendulum_like(system: System, quick: bool, seed: int) -> list[dict]:
    """All methods of part (a) on one system; same data, optimizer and outer steps."""
    rng = np.random.default_rng(seed)
    train_clean = make_trajectories(system, 25, rng)
    test = make_trajectories(system, 25, rng)
    noisy = train_clean + 0.1 * torch.as_tensor(
        rng.standard_normal(train_clean.shape), dtype=torch.float32
    )
    outer_steps, hidden = (60, 64) if quick else (1500, 200)
    window, batch, horizon = 10, 32, test.shape[0] - 1
    true_g = HamiltonianG(system)

    def train(
        g: nn.Module, inner: int, model: nn.Module | None = None, steps: int = outer_steps
    ) -> tuple[MetaTailoring, float]:
        torch.manual_seed(seed)
        model = model if model is not None else MLPStep(hidden)
        meta = MetaTailoring(
            model,
            g,
            inner_steps=inner,
            inner_lr=1e-2,
            params="scale_shift",
            per_sample=True,
            reduction="mean",
            learn_inner_lr=inner > 0,
            max_grad_norm=10.0,
            loss_horizon=window,
            clip_grad_norm=10.0,
        )
        opt = torch.optim.Adam(meta.parameter_groups(lr_out=1e-3, lr_emb=1e-3))
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for _ in range(steps):
            meta.training_step(_windows(noisy, window, batch, gen), opt)
        meta.eval()
        return meta, time.perf_counter() - start

    def test_time(g: Callable, model: nn.Module) -> torch.Tensor:
        res = tailor(
            model,
            test[0],
            g,
            steps=5,
            lr=RATES,
            params="scale_shift",
            horizon=horizon,
            per_sample=True,
            reduction="mean",
            max_grad_norm=1.0,
        )
        return res.predictions.detach()

    rows = []
    vanilla, sec = train(true_g, 0)
    with torch.no_grad():
        rows.append(
            _row(
                system,
                "Vanilla MLP",
                "N/A",
                rollout(vanilla.model, test[0], horizon),
                test,
                outer_steps,
                sec,
            )
        )
    learned, sec = train(nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 16)), 1)
    rows.append(
        _row(
            system,
            "Noether Nets (learned g), Algorithm 1",
            "g_φ: MLP 2→64→16",
            learned(test[0], horizon).detach(),
            test,
            outer_steps,
            sec,
        )
    )
    oracle, sec = train(true_g, 1)
    rows.append(
        _row(
            system,
            "True H [oracle], Algorithm 1",
            system.formula,
            oracle(test[0], horizon).detach(),
            test,
            outer_steps,
            sec,
        )
    )
    rows.append(
        _row(
            system,
            "Vanilla + test-time tailoring, true H",
            system.formula,
            test_time(true_g, vanilla.model),
            test,
            outer_steps,
            0.0,
        )
    )
    # g_φ meta-learned on the frozen vanilla predictor (θ adapted only in the inner loop)
    frozen = copy.deepcopy(vanilla.model).requires_grad_(False)
    g_phi = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 16))
    _, sec = train(g_phi, 1, model=frozen, steps=outer_steps // 2)
    rows.append(
        _row(
            system,
            "Vanilla + test-time tailoring, learned g",
            "g_φ on frozen θ",
            test_time(g_phi, frozen),
            test,
            outer_steps + outer_steps // 2,
            sec,
        )
    )
    return rows


def part_a(quick: bool, seed: int) -> list[dict]:
    rows = []
    for name in ("pendulum", "spring"):
        rows += run_pendulum_like(SYSTEMS[name], quick, seed)
    return rows


def table_a(rows: list[dict]) -> str:
    seed_rmse = {
        ("pendulum", "Vanilla MLP"): "0.0563",
        ("pendulum", "True H [oracle], Algorithm 1"): "0.0422",
        ("pendulum", "Noether Nets (learned g), Algorithm 1"): "0.0423",
        ("spring", "Vanilla MLP"): ".0174",
        ("spring", "True H [oracle], Algorithm 1"): ".0166",
        ("spring", "Noether Nets (learned g), Algorithm 1"): ".0165",
    }
    lines = [
        "| system | method | g | rollout RMSE | seed's RMSE | mean abs ΔH at T |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = seed_rmse.get((r["system"], r["method"]), "–")
        lines.append(
            f"| {r['system']} | {r['method']} | {r['description']} | "
            f"{r['rmse']:.4f} | {ref} | {r['energy_drift_final']:.4f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# part (b): molecular rollouts
# ----------------------------------------------------------------------------------------


def default_model_factory(dt: float) -> nn.Module:
    """The dynamics model of part (b); swap in another E(3)-equivariant model here.

    Any module with ``forward(pos, vel, z, batch) -> (next_pos, next_vel)`` works.
    """
    from symgraph.models.dynamics import EquivariantDynamics

    return EquivariantDynamics(hidden=32, num_layers=2, dt=dt)


def _batch_windows(traj: Trajectory, length: int, batch: int, gen: torch.Generator) -> Trajectory:
    from symgraph.data.trajectories import stack_trajectories

    starts = torch.randint(0, len(traj) - length, (batch,), generator=gen).tolist()
    return stack_trajectories([traj[s : s + length + 1] for s in starts])


RATES_B = (1e-4, 1e-3, 1e-2, 1e-1)  # line search of test-time tailoring (clipped steps)


def part_b(
    quick: bool, seed: int, model_factory: Callable[[float], nn.Module] = default_model_factory
) -> dict:
    """Molecular rollouts: no tailoring vs known quantities vs a meta-learned invariant g."""
    from symgraph.data.md_simulation import MMFFCalculator, generate_md_trajectory

    t0 = time.perf_counter()
    save_every, dt_fs = 4, 0.5
    n_train, horizon, n_test = (150, 100, 1) if quick else (500, 100, 4)
    outer_steps, meta_steps, inner_k = (60, 10, 2) if quick else (800, 100, 10)

    def md(steps: int, md_seed: int) -> Trajectory:
        return generate_md_trajectory(
            "CH3CH2OH",
            steps=steps * save_every,
            dt_fs=dt_fs,
            temperature_K=300.0,
            seed=md_seed,
            save_every=save_every,
        )

    train = md(n_train, seed)
    tests = [md(horizon, seed + 100 + k) for k in range(n_test)]
    report = train.info["energy_drift"]
    atoms = train.info["atoms"]
    train = train.to(torch.float32)
    tests = [t.to(torch.float32) for t in tests]
    gen_s = time.perf_counter() - t0

    # known quantities, each divided by its typical size so that they weigh alike
    potential = AsePotential(atoms, MMFFCalculator())
    known = known_quantity(("energy", "momentum", "angular"), typical_scales([train]), potential)
    energy = TotalEnergy(potential)

    def task(pred: Trajectory, target: Trajectory) -> torch.Tensor:
        return trajectory_mse(pred, target, velocity_weight=100.0)  # v ~ 0.01 Å/fs

    # the predictor θ: trained on 4-step rollouts
    torch.manual_seed(seed)
    model = model_factory(train.dt)
    vanilla = MetaTailoring(model, LinearMomentum(), inner_steps=0, task_loss=task)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, outer_steps)
    gen = torch.Generator().manual_seed(seed)
    t1 = time.perf_counter()
    for _ in range(outer_steps):
        vanilla.training_step(_batch_windows(train, 4, 16, gen), opt)
        sched.step()
    train_s = time.perf_counter() - t1

    # g_φ meta-learned through the inner step (Algorithm 1's φ update) on the frozen θ
    torch.manual_seed(seed)
    frozen = copy.deepcopy(model).requires_grad_(False)
    g_phi = NeuralConservedQuantity(out_dim=8, hidden=32, num_layers=2)
    meta = MetaTailoring(
        frozen,
        g_phi,
        inner_steps=1,
        inner_lr=1e-3,
        per_sample=False,
        reduction="mean",
        max_grad_norm=1.0,
        learn_inner_lr=True,
        task_loss=task,
        clip_grad_norm=1.0,
    )
    opt_phi = torch.optim.Adam(meta.parameter_groups(lr_out=0.0, lr_emb=1e-3))
    t2 = time.perf_counter()
    for _ in range(meta_steps):
        meta.training_step(_batch_windows(train, 4, 4, gen), opt_phi)
    meta_s = time.perf_counter() - t2

    methods = {
        "no tailoring": None,
        f"known quantities (E, P, L), {inner_k} steps": known,
        f"learned g (meta-trained), {inner_k} steps": g_phi,
    }
    curves: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    drifts: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    for test in tests:
        x0 = test.frame(0)
        for name, g in methods.items():
            start = time.perf_counter()
            if g is None:
                with torch.no_grad():
                    pred = rollout(model, x0, horizon)
            else:
                net = model if g is known else frozen
                pred = tailor(
                    net,
                    x0,
                    g,
                    steps=inner_k,
                    lr=RATES_B,
                    horizon=horizon,
                    reduction="mean",
                    max_grad_norm=1.0,
                ).predictions
            seconds[name] += time.perf_counter() - start
            curves[name].append(position_rmse(pred, test)[:, 0].detach().numpy())
            drifts[name].append(quantity_drift(energy, pred, per_atom=True)[:, 0].numpy())
    result = {
        "molecule": "ethanol (CH3CH2OH), rdkit MMFF94, 300 K",
        "horizon": horizon,
        "dt_fs": train.dt,
        "train_frames": len(train),
        "test_trajectories": n_test,
        "outer_steps": outer_steps,
        "meta_steps_phi": meta_steps,
        "generation_seconds": round(gen_s, 1),
        "train_seconds": round(train_s, 1),
        "meta_seconds": round(meta_s, 1),
        "generator_energy_drift": report,
        "tailor_seconds_per_trajectory": {k: round(v / n_test, 1) for k, v in seconds.items()},
        "methods": {},
    }
    for name in methods:
        err = np.mean(curves[name], axis=0)
        drift = np.mean(drifts[name], axis=0)
        result["methods"][name] = {
            "rmse_curve": err.tolist(),
            "energy_drift_curve": drift.tolist(),
            "rmse_final": float(err[-1]),
            "rmse_mean": float(err[1:].mean()),
            "energy_drift_final": float(drift[-1]),
            "energy_drift_max": float(drift.max()),
        }
    _plot_b(result)
    return result


def _plot_b(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    t = np.arange(result["horizon"] + 1) * result["dt_fs"]
    for name, m in result["methods"].items():
        axes[0].plot(t, m["rmse_curve"], label=name)
        axes[1].plot(t, m["energy_drift_curve"], label=name)
    axes[0].set(xlabel="time (fs)", ylabel="position RMSE (Å)", title="rollout error")
    axes[1].set(
        xlabel="time (fs)", ylabel="|E(t) − E(0)| per atom (eV)", title="energy drift", yscale="log"
    )
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "noether_rollouts.png", dpi=120)
    plt.close(fig)


def table_b(result: dict) -> str:
    lines = [
        "| method | mean position RMSE (Å) | RMSE at T (Å) | energy drift at T (eV/atom) |"
        " max energy drift (eV/atom) |",
        "|---|---|---|---|---|",
    ]
    for name, m in result["methods"].items():
        lines.append(
            f"| {name} | {m['rmse_mean']:.4f} | {m['rmse_final']:.4f} | "
            f"{m['energy_drift_final']:.2e} | {m['energy_drift_max']:.2e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budget (< 60 s, part a)")
    parser.add_argument(
        "--part",
        choices=["a", "b", "all"],
        default=None,
        help="which part to run (default: a with --quick, else all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    part = args.part or ("a" if args.quick else "all")
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if part in ("a", "all"):
        start = time.perf_counter()
        rows = part_a(args.quick, args.seed)
        results["a"] = rows
        print(f"## (a) pendulum and spring ({time.perf_counter() - start:.0f} s)\n")
        print(table_a(rows) + "\n")
        write_result(result_path(OUT, "noether_a", ".json", args.quick), json.dumps(rows, indent=1))
    if part in ("b", "all"):
        start = time.perf_counter()
        res = part_b(args.quick, args.seed)
        results["b"] = res
        print(
            f"## (b) molecular rollouts, ethanol MMFF94, {res['horizon']} steps of "
            f"{res['dt_fs']} fs ({time.perf_counter() - start:.0f} s)\n"
        )
        print(table_b(res) + "\n")
        print(f"figure: {OUT / 'noether_rollouts.png'}")
        write_result(result_path(OUT, "noether_b", ".json", args.quick), json.dumps(res, indent=1))
    if not math.isfinite(sum(r["rmse"] for r in results.get("a", []))):
        raise SystemExit("non-finite RMSE")
    return results


if __name__ == "__main__":
    main()
