"""Accuracy at equal steps: tfnf's default recipe against the seed algorithm in PyTorch.

    pip install torch==2.13.0
    python benchmarks/accuracy.py               # records in RESULTS.md and results/accuracy.json
    python benchmarks/accuracy.py --steps 200 --seeds 1 --mixture-seeds 1 --robustness-seeds 1 \\
        --baseline-seeds 1 --quick              # a smoke run, print only

Both sides train on batches of 4096 with Adam for the same number of steps
(20,000, the seed scripts' budget). The baseline keeps a fixed N(0, I) base and
a constant rate 1e-2. tfnf runs `fit_flow`'s defaults: learned base, maps
starting at the identity, Adam from 1e-2 along a cosine to 1e-3, the paper's
annealing over the first half along the geometric path from N(0, I), and, for
U2..U4 (not normalisable), the target restricted to the plotted box (-4, 4)^2
with Gaussian tails outside.

Quality numbers: U1, the exact KL(q || p) = bound + ln Z (bound by Monte Carlo,
100k samples; for tfnf also by quadrature as a check); U2..U4, the KL of q
against the target, both restricted to the box (-4, 4)^2 and renormalised
(`tfnf.diagnostics.kl_2d`), with the mass q keeps in the box. The baseline's
maps are evaluated through tfnf's exact inverse for that (its own code cannot
evaluate q on a grid). Mixtures (hexagon, triangle; ln Z = 0): the KL (= the
bound) and each mode's mass under q (its Voronoi cell, 200k samples); a mode
is covered when that mass is within a factor 2 of the true one. Robustness:
U1 over 10 seeds at K = 8 and 32 (both modes: KL < 0.35).

`--ablation` refits seed 0 with one ingredient of the recipe left out at a
time, on the cells where it matters (K = 2 and 32 on U2..U4, the mixtures at
K = 32).

Time on a 2-core CPU: about 40 minutes for tfnf's runs. The baseline's runs
(about 3 minutes each at K = 32) are kept in baseline_accuracy.json and only
missing ones are run.
"""

import argparse
import datetime
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfnf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # for baselines/
from train_step import append_record, machine, record  # noqa: E402

LOG_Z_U1 = 1.8775
RIDGES = ("U2", "U3", "U4")
MIXTURES = ("hexagon", "triangle")
BASELINE_CACHE = pathlib.Path(__file__).with_name("baseline_accuracy.json")
RECORDS = pathlib.Path(__file__).with_name("results") / "accuracy.json"

# Each ingredient of fit_flow's recipe, and the recipe without it (--ablation).
ABLATIONS = {
    "default": {},
    "no box": {"box": None},
    "no annealing": {"anneal": False},
    "paper's flat annealing": {"anneal_from": None},
}


def quality(q, target: str, seed: int) -> dict:
    """The row's numbers for one fitted q (see the module docstring)."""
    log_p = tfnf.targets.get(target)
    bound, error = tfnf.diagnostics.bound(q, log_p, num_samples=100_000, seed=[seed, 7])
    row = {"bound": bound, "error": error}
    if target in MIXTURES:
        row["kl"] = bound
        spec = tfnf.targets.mixture(target)
        row["masses"] = tfnf.diagnostics.mode_masses(q, spec.locs, seed=[seed, 3]).tolist()
        row["covered"] = bool(tfnf.diagnostics.covers_modes(row["masses"], spec.weights).all())
        return row
    extent = (-6.0, 6.0) if target == "U1" else tfnf.targets.BOX
    row["kl_quadrature"], row["box_mass"] = tfnf.diagnostics.kl_2d(q, log_p, extent=extent)
    row["kl"] = bound + LOG_Z_U1 if target == "U1" else row["kl_quadrature"]
    return row


def tfnf_run(target: str, num_layers: int, steps: int, seed: int, **change) -> dict:
    """fit_flow's default recipe (or it with `change`), and its quality numbers."""
    if "anneal_from" in change:  # the paper's flat start: the same schedule, no reference
        model = _flat_annealing_run(target, num_layers, steps, seed)
    else:
        model = tfnf.models.fit_flow(
            target, num_layers=num_layers, steps=steps, seed=seed, **change
        )
    return quality(model.distribution, target, seed)


def _flat_annealing_run(target: str, num_layers: int, steps: int, seed: int):
    """fit_flow's recipe with the paper's flat start (beta ln p~) in place of the N(0, I) path."""
    import keras

    keras.utils.set_random_seed(seed)
    box = None if tfnf.targets.is_normalizable(target) else tfnf.targets.BOX
    model = tfnf.models.NormalizingFlow(
        2,
        num_layers,
        target_log_prob=target,
        beta_schedule=tfnf.models.paper_annealing(steps // 2),
        box=box,
        seed=seed,
    )
    rate = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=steps, alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(rate), steps_per_execution=10)
    model.fit(steps=steps, batch_size=4096, verbose=0)
    return model


def torch_run(target: str, num_layers: int, steps: int, seed: int) -> dict:
    """The baseline's bound, its maps' u, w, b (and for mixtures its modes' masses), from
    BASELINE_CACHE when this (target, K, steps, seed) ran before.

    The baseline is fixed code and its runs are the slow half of this script, so
    they are kept, with the date and machine that made them.
    """
    key = f"{target} K={num_layers} steps={steps} seed={seed}"
    cache = json.loads(BASELINE_CACHE.read_text()) if BASELINE_CACHE.exists() else {}
    needs_masses = target in MIXTURES and "masses" not in cache.get(key, {})
    if key not in cache or needs_masses or (target != "U1" and "params" not in cache[key]):
        import torch
        from baselines import planar_torch

        model, _ = planar_torch.train(num_layers, target, steps=steps, seed=seed)
        bound, error = planar_torch.bound(model, target)
        entry = {
            "bound": bound,
            "error": error,
            "date": str(datetime.date.today()),
            "machine": f"{machine()}, PyTorch {torch.__version__}",
            "params": {n: getattr(model, n).detach().double().tolist() for n in ("u", "w", "b")},
        }
        if target in MIXTURES:
            with torch.no_grad():
                z, _ = model.sample_and_log_prob(200_000)
            locs = tfnf.targets.mixture(target).locs
            nearest = np.argmin(((z.numpy()[:, None, :] - locs[None]) ** 2).sum(-1), axis=1)
            entry["masses"] = (np.bincount(nearest, minlength=len(locs)) / len(z)).tolist()
        cache = json.loads(BASELINE_CACHE.read_text()) if BASELINE_CACHE.exists() else {}
        cache[key] = entry
        BASELINE_CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cache[key]


def baseline_kl(target: str, run: dict) -> tuple:
    """The baseline's quality number and box mass: U1 exact KL, U2..U4 box KL by quadrature
    (its maps through tfnf's exact inverse, the same u_hat), mixtures KL = bound."""
    if target == "U1":
        return run["bound"] + LOG_Z_U1, 1.0
    if target in MIXTURES:
        return run["bound"], 1.0
    import tensorflow as tf
    import tensorflow_probability as tfp

    u, w, b = (tf.constant(run["params"][name], tf.float64) for name in ("u", "w", "b"))
    base = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(2, tf.float64))
    q = tfp.distributions.TransformedDistribution(
        base, tfnf.bijectors.Stack(tfnf.bijectors.PlanarFlow(u, w, b))
    )
    return tfnf.diagnostics.kl_2d(q, tfnf.targets.get(target), extent=tfnf.targets.BOX)


def summary(values) -> str:
    values = np.asarray(values)
    return f"{values.mean():.4f} ({values.min():.4f} to {values.max():.4f})"


def main_table(args) -> tuple[list, list]:
    lines = [
        f"\n## accuracy.py, {datetime.date.today()}, {machine()}\n",
        f"{args.steps} steps of batch 4096 for both, {args.seeds} seeds per cell; mean (min to "
        "max) over seeds. Baseline: the seed algorithm (fixed N(0, I) base, Adam at a constant "
        "1e-2). tfnf: `fit_flow`'s defaults (learned base, identity start, Adam 1e-2 cosine to "
        "1e-3, the paper's annealing over the first half along the geometric path from N(0, I), "
        "U2..U4 restricted to the box (-4, 4)^2 with Gaussian tails outside). Quality: U1 the "
        "exact KL(q || p) = bound + ln Z; U2..U4 the KL against the target restricted to the box "
        "(-4, 4)^2, by quadrature (`kl_2d`), with the mass q keeps in the box in brackets.\n",
        "| target | K | tfnf KL (box mass) | baseline KL (box mass) | tfnf lower | "
        "tfnf / baseline |",
        "|---|---|---|---|---|---|",
    ]
    records = []
    for target in args.targets:
        for k in (2, 8, 32):
            ours = [tfnf_run(target, k, args.steps, s) for s in range(args.seeds)]
            theirs = [
                baseline_kl(target, torch_run(target, k, args.steps, s)) for s in range(args.seeds)
            ]
            a = [r["kl"] for r in ours]
            b = [kl for kl, _ in theirs]
            ratio = np.mean(a) / np.mean(b)
            lines.append(
                f"| {target} | {k} | {summary(a)} ({np.mean([r['box_mass'] for r in ours]):.2f}) "
                f"| {summary(b)} ({np.mean([m for _, m in theirs]):.2f}) "
                f"| {'yes' if np.mean(a) < np.mean(b) else 'no'} | {ratio:.2f} |"
            )
            print(lines[-1], flush=True)
            records += [
                {"target": target, "K": k, "seed": s, "tfnf": r, "baseline_kl": kl}
                for s, (r, (kl, _)) in enumerate(zip(ours, theirs, strict=True))
            ]
    return lines, records


def mixture_table(args) -> tuple[list, list]:
    lines = [
        "",
        f"Mixtures at K = 32, {args.steps} steps: KL(q || p) (ln Z = 0) and each mode's mass "
        "under q (true masses: the weights), per seed; covered = every mode's mass within a "
        f"factor 2 of the true one. tfnf: {args.mixture_seeds} seeds; baseline: "
        f"{args.baseline_seeds} seeds (3 minutes each).\n",
        "| target | who | seed | KL | masses | covered |",
        "|---|---|---|---|---|---|",
    ]
    records = []
    for target in MIXTURES:
        spec = tfnf.targets.mixture(target)
        count = {}
        runs = [("tfnf", s, tfnf_run(target, 32, args.steps, s)) for s in range(args.mixture_seeds)]
        runs += [
            ("baseline", s, torch_run(target, 32, args.steps, s))
            for s in range(args.baseline_seeds)
        ]
        for who, s, run in runs:
            covered = bool(tfnf.diagnostics.covers_modes(run["masses"], spec.weights).all())
            count.setdefault(who, []).append(covered)
            lines.append(
                f"| {target} | {who} | {s} | {run['bound']:.4f} "
                f"| {', '.join(f'{m:.3f}' for m in run['masses'])} | {'yes' if covered else 'no'} |"
            )
            print(lines[-1], flush=True)
            records.append(
                {
                    "target": target,
                    "K": 32,
                    "seed": s,
                    "who": who,
                    "kl": run["bound"],
                    "masses": run["masses"],
                    "covered": covered,
                }
            )
        for who, flags in count.items():
            lines.append(f"| {target} | {who} | all | | | {sum(flags)} of {len(flags)} |")
    return lines, records


def robustness_table(args) -> tuple[list, list]:
    lines = [
        "",
        f"Robustness: tfnf on U1, {args.robustness_seeds} seeds, {args.steps} steps; "
        "KL = bound + ln Z per seed.\n",
        "| K | KL per seed | both modes (KL < 0.35) |",
        "|---|---|---|",
    ]
    records = []
    for k in (8, 32):
        kls = [tfnf_run("U1", k, args.steps, s)["kl"] for s in range(args.robustness_seeds)]
        lines.append(
            f"| {k} | {', '.join(f'{kl:.4f}' for kl in kls)} "
            f"| {sum(kl < 0.35 for kl in kls)} of {len(kls)} |"
        )
        print(lines[-1], flush=True)
        records.append({"target": "U1", "K": k, "kls": kls})
    return lines, records


def ablation_table(args) -> tuple[list, list]:
    lines = [
        "",
        f"What each ingredient buys: seed 0, {args.steps} steps, the default recipe and it with "
        "one ingredient left out. U2..U4: box KL (box mass); mixtures: KL, modes covered.\n",
        "| variant | "
        + " | ".join(f"{t} K={k}" for t in RIDGES for k in (2, 32))
        + " | "
        + " | ".join(f"{t} K=32" for t in MIXTURES)
        + " |",
        "|---|" + "---|" * (len(RIDGES) * 2 + len(MIXTURES)),
    ]
    records = []
    for name, change in ABLATIONS.items():
        cells = []
        for target in RIDGES:
            for k in (2, 32):
                r = tfnf_run(target, k, args.steps, 0, **change)
                cells.append(f"{r['kl']:.4f} ({r['box_mass']:.2f})")
                records.append({"variant": name, "target": target, "K": k, **r})
        for target in MIXTURES:
            r = tfnf_run(
                target, 32, args.steps, 0, **{k: v for k, v in change.items() if k != "box"}
            )
            cells.append(f"{r['kl']:.4f} ({'all' if r['covered'] else 'not all'})")
            records.append({"variant": name, "target": target, "K": 32, **r})
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines, records


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell of the comparison")
    parser.add_argument("--mixture-seeds", type=int, default=10)
    parser.add_argument("--baseline-seeds", type=int, default=5, help="the baseline's, mixtures")
    parser.add_argument("--robustness-seeds", type=int, default=10)
    parser.add_argument("--targets", nargs="+", default=["U1", *RIDGES], choices=["U1", *RIDGES])
    parser.add_argument("--only", choices=["main", "mixtures", "robustness", "ablation"])
    parser.add_argument("--ablation", action="store_true", help="also the ablation table")
    parser.add_argument("--quick", action="store_true", help="print only")
    args = parser.parse_args()
    tables = {
        "main": main_table,
        "mixtures": mixture_table,
        "robustness": robustness_table,
        "ablation": ablation_table,
    }
    chosen = (
        [args.only]
        if args.only
        else ["main", "mixtures", "robustness"] + (["ablation"] if args.ablation else [])
    )
    lines, records = [], {}
    for name in chosen:
        more, records[name] = tables[name](args)
        if not lines and name != "main":
            more = [f"\n## accuracy.py --only {name}, {datetime.date.today()}, {machine()}", *more]
        lines += more
    if not args.quick:
        record(lines)
        append_record(
            RECORDS,
            {
                "date": str(datetime.date.today()),
                "machine": machine(),
                "steps": args.steps,
                **records,
            },
        )


if __name__ == "__main__":
    main()
