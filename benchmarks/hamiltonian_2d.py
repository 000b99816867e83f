"""Hamiltonian flows against planar flows on the 2-D targets at the same wall-clock time.

    python benchmarks/hamiltonian_2d.py                 # U1..U4 and the funnel, 60 s a model
    python benchmarks/hamiltonian_2d.py --seconds 120   # a longer budget
    python benchmarks/hamiltonian_2d.py --quick         # 2 s a model, U1 and the funnel, prints

Each model is `tfnf.models.fit_flow` (Adam 1e-2, cosine decay, batch 4096; the
planar maps annealed as in Figure 3, the dynamics not), given as many steps as
fit in `--seconds` at its own measured step time (a leapfrog step costs a
gradient of the target, and its training a second derivative): a 100-step probe
times the step, then a fresh model trains for that many steps.

The figure of merit is the gap between the bound and ln Z: E_q[ln q - ln p~] + ln Z.
For a planar flow it is KL(q || p), exact; for the Hamiltonian flow it is the KL of
the extended space, KL(q(z, rho) || p(z) N(rho; 0, M)), which is at least the KL of
its marginal q(z): the flow is judged by what it optimises and no better. ln Z is
the funnel's, 0; U1's by quadrature; for U2..U4, fitted restricted to the plotted
box (`targets.Restricted`), the restricted target's by quadrature. k-hat is PSIS's
diagnostic of q as a proposal for p (on the extended space for the dynamics).

Records: a section in RESULTS.md and one JSON object per run appended to
results/hamiltonian_2d.json.
"""

import argparse
import datetime
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfnf  # noqa: E402
from tfnf import diagnostics, targets  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import append_record, machine, record  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RECORDS = HERE / "results" / "hamiltonian_2d.json"
# (flow, K or L, flow_options): planar maps, the dynamics from the Gaussian base, and the
# dynamics after 8 planar maps (the composition the paper and the HVAE use).
MODELS = (
    [("planar", 8, {}), ("planar", 32, {})]
    + [("hamiltonian", n, {}) for n in (1, 4, 8, 16)]
    + [("hamiltonian", 4, {"planar_layers": 8})]
)
TARGETS = ["U1", "U2", "U3", "U4", "funnel"]
BATCH = 4096


def target_and_log_z(name: str):
    """(what fit_flow takes, the fitted target's log-density, its ln Z)."""
    if name == "funnel":
        return targets.funnel, targets.funnel, 0.0
    log_prob = targets.get(name)
    if targets.is_normalizable(name):
        return name, log_prob, diagnostics.log_normalizer_2d(log_prob, (-8.0, 8.0), 1600)
    restricted = targets.Restricted(log_prob, targets.BOX)
    return name, restricted, diagnostics.log_normalizer_2d(restricted, (-12.0, 12.0), 2400)


def fit(target, flow: str, num_layers: int, options: dict, steps: int, seed: int):
    return tfnf.models.fit_flow(
        target,
        num_layers=num_layers,
        flow=flow,
        flow_options=options or None,
        steps=steps,
        batch_size=BATCH,
        seed=seed,
    )


def label(row: dict) -> str:
    """planar K = 8, hamiltonian L = 4, hamiltonian L = 4 after planar K = 8."""
    name = f"{row['flow']} {'L' if row['extended'] else 'K'} = {row['num_layers']}"
    if row.get("planar_layers"):
        name += f" after planar K = {row['planar_layers']}"
    return name


def step_seconds(target, flow: str, num_layers: int, options: dict, seed: int) -> float:
    model = fit(target, flow, num_layers, options, 100, seed)  # traces and compiles
    start = time.perf_counter()
    model.fit(steps=100, batch_size=BATCH, verbose=0)
    return (time.perf_counter() - start) / 100


def measure(
    name: str, flow: str, num_layers: int, options: dict, seconds: float, seed: int
) -> dict:
    target, fitted, log_z = target_and_log_z(name)
    per_step = step_seconds(target, flow, num_layers, options, seed)
    steps = max(100, int(seconds / per_step) // 100 * 100)
    row = {
        "target": name,
        "flow": flow,
        "num_layers": num_layers,
        **options,
        "steps": steps,
        "ms_per_step": round(1e3 * per_step, 3),
        "extended": flow == "hamiltonian",
        "seed": seed,
    }
    start = time.perf_counter()
    try:
        model = fit(target, flow, num_layers, options, steps, seed)
    except tfnf.NonFiniteLossError as error:  # recorded as a result, not a crash of the run
        return {**row, "diverged": str(error).split(":")[0]}
    wall = time.perf_counter() - start
    q, log_p = model.distribution, fitted
    if model.extended:
        log_p = model.extended_target_log_prob
    bound, error = diagnostics.bound(q, log_p, 100_000, seed=[seed, 1])
    estimate = diagnostics.importance_log_normalizer(q, log_p, 100_000, seed=[seed, 2])
    return {
        **row,
        "train_seconds": round(wall, 1),
        "bound": bound,
        "bound_se": error,
        "log_z": log_z,
        "gap": bound + log_z,
        "khat": estimate.khat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per model")
    parser.add_argument("--targets", nargs="+", default=TARGETS, choices=TARGETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 s a model, U1 and funnel, prints")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.targets = 2.0, ["U1", "funnel"]
    rows = []
    for name in args.targets:
        for flow, num_layers, options in MODELS:
            row = measure(name, flow, num_layers, options, args.seconds, args.seed)
            rows.append(row)
            if "diverged" in row:
                print(f"{name:6s} {label(row):34s} {row['steps']:6d} steps: {row['diverged']}")
                continue
            print(
                f"{name:6s} {label(row):34s} {row['steps']:6d} steps "
                f"({row['ms_per_step']:.2f} ms): "
                f"bound {row['bound']:.3f} +- {row['bound_se']:.3f}, gap {row['gap']:.3f} nats, "
                f"k-hat {row['khat']:.2f}",
                flush=True,
            )
    if args.quick:
        return
    stamp = {"date": datetime.date.today().isoformat(), "machine": machine()}
    for row in rows:
        append_record(RECORDS, {**row, "seconds_budget": args.seconds, **stamp})
    lines = [
        "",
        f"## Hamiltonian flows against planar flows in 2-D, {args.seconds:g} s a model "
        f"({stamp['date']}, {stamp['machine']})",
        "",
        "`python benchmarks/hamiltonian_2d.py`. gap = bound + ln Z: KL(q || p) for planar maps; "
        "for the dynamics the extended space's KL, an upper bound on their marginal's.",
        "",
        "| target | flow | steps | ms/step | gap (nats) | k-hat |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "diverged" in row:
            lines.append(
                f"| {row['target']} | {label(row)} | {row['steps']} | "
                f"{row['ms_per_step']:.2f} | {row['diverged']} | - |"
            )
            continue
        lines.append(
            f"| {row['target']} | {label(row)} | {row['steps']} | {row['ms_per_step']:.2f} | "
            f"{row['gap']:.3f} +- {row['bound_se']:.3f} | {row['khat']:.2f} |"
        )
    record(lines)


if __name__ == "__main__":
    main()
