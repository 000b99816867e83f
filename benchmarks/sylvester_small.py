"""Sylvester flows against planar K = 32 where the answer is known: KL, and time to reach planar's.

    python benchmarks/sylvester_small.py          # into RESULTS.md, results/sylvester_small.json
    python benchmarks/sylvester_small.py --quick  # few steps, prints only

Problems, each with its KL(q || p) known up to Monte Carlo error:
- the Bayesian linear regression posterior at D = 10 of benchmarks/bayesian_regression.py
  (50 points, features correlated 0.95, data seed 0; p exact, so E_q[ln q - ln p] is the KL);
- Neal's funnel in D = 2 (`tfnf.targets.funnel`, normalised).

Every flow is `tfnf.models.fit_flow` (Adam 1e-2 with the cosine decay, batch 4,096,
float32, seed 0) for the problem's steps (5,000 and 10,000, as in bayesian_regression.py
and funnel.py). The reference is planar K = 32; against it, Sylvester K = 8 maps of
rank M (2 and D) in each variant (orthogonal, Householder; triangular at M = D only). After every
100 steps a callback estimates the KL from 20,000 draws of q; its own time is left
out of the clock. Reported: the final KL (100,000 draws) with its standard error,
the training time, and the training time (with the step) at which the 20,000-draw
estimate first reached planar K = 32's final KL, or "-" if it never did.
"""

import argparse
import datetime
import json
import pathlib
import sys
import time

import keras

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import append_record, machine, record  # noqa: E402

from tfnf import diagnostics, models, targets  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RECORDS = HERE / "results" / "sylvester_small.json"
VARIANTS = ("orthogonal", "householder", "triangular")


class KLClock(keras.callbacks.Callback):
    """Every epoch: the KL from `draws` samples, and the training time without this callback's."""

    def __init__(self, log_prob, draws: int, goal: float | None):
        super().__init__()
        self.log_prob, self.draws, self.goal = log_prob, draws, goal
        self.excluded = 0.0
        self.steps = 0
        self.reached = None  # (seconds, step)

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        began = time.perf_counter()
        self.steps += self.params["steps"]
        if self.goal is not None and self.reached is None:
            q = self.model.distribution
            kl, _ = diagnostics.bound(q, self.log_prob, self.draws, seed=epoch)
            if kl <= self.goal:
                self.reached = (began - self.start - self.excluded, self.steps)
        self.excluded += time.perf_counter() - began

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded


def problems():
    x, y, _ = targets.correlated_regression_data(50, 10, correlation=0.95, seed=0)
    regression = targets.BayesianLinearRegression(x.astype("float32"), y.astype("float32"))
    return [
        ("regression D = 10", regression, regression.posterior.log_prob, 10, 5000),
        ("funnel D = 2", targets.funnel, targets.funnel, 2, 10000),
    ]


def fit(target, log_prob, dim, steps, flow, k, options, goal):
    clock = KLClock(log_prob, 20_000, goal)
    model = models.fit_flow(
        target,
        num_layers=k,
        event_size=dim,
        flow=flow,
        steps=steps,
        batch_size=4096,
        seed=0,
        flow_options=options,
        callbacks=[clock],
    )
    seconds = clock.seconds()
    kl, se = diagnostics.bound(model.distribution, log_prob, 100_000, seed=1)
    return {"kl": kl, "se": se, "seconds": seconds, "reached": clock.reached}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200 steps, print only")
    args = parser.parse_args()
    today = str(datetime.date.today())
    lines = [
        f"\n## sylvester_small.py, {today}, {machine()}\n",
        "KL(q || p) by 100,000 draws (+- its standard error); every flow fit_flow's recipe, "
        "batch 4,096, seed 0; reached = the training time (and step) at which a 20,000-draw "
        "estimate first reached planar K = 32's final KL.\n",
        "| problem | flow | K | M | steps | KL (nats) | s/fit | reached planar K = 32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, target, log_prob, dim, steps in problems():
        steps = 200 if args.quick else steps
        reference = fit(target, log_prob, dim, steps, "planar", 32, None, None)
        rows = [("planar", 32, "-", reference)]
        for rank in sorted({2, dim}):
            for variant in VARIANTS:
                if variant == "triangular" and rank != dim:
                    continue  # Q a permutation: rank D only
                options = {"rank": rank, "variant": variant}
                result = fit(target, log_prob, dim, steps, "sylvester", 8, options, reference["kl"])
                rows.append((f"sylvester, {variant}", 8, rank, result))
        for flow, k, rank, r in rows:
            when = r["reached"] or (None, None)
            reached = "-" if when[0] is None else f"{when[0]:.1f} s (step {when[1]})"
            if flow == "planar":
                reached = "(reference)"
            lines.append(
                f"| {name} | {flow} | {k} | {rank} | {steps} | {r['kl']:.4f} +- {r['se']:.4f}"
                f" | {r['seconds']:.1f} | {reached} |"
            )
            print(lines[-1], flush=True)
            if not args.quick:
                append_record(
                    RECORDS,
                    {
                        "problem": name,
                        "flow": flow,
                        "num_layers": k,
                        "rank": rank,
                        "steps": steps,
                        "kl": r["kl"],
                        "kl_se": r["se"],
                        "train_seconds": r["seconds"],
                        "reached_reference_seconds": when[0],
                        "reached_reference_step": when[1],
                        "date": today,
                        "machine": machine(),
                    },
                )
    if args.quick:
        print(json.dumps({"lines": len(lines)}))
    else:
        record(lines)


if __name__ == "__main__":
    main()
