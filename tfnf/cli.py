"""The `tfnf` command: at the edge, using everything, used by nothing."""

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # the command only writes files
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfnf import datasets, diagnostics, layers, models, plotting, targets  # noqa: E402

__all__ = ["main"]


def _fit(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    model = models.fit_flow(
        args.target,
        num_layers=args.layers,
        flow=args.flow,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        decay=not args.no_decay,
        anneal=args.anneal,
        seed=args.seed,
        dtype=args.dtype,
        verbose=1 if args.verbose else 2,
    )
    seconds = time.perf_counter() - start
    q, log_p = model.distribution, targets.get(args.target)
    value, error = diagnostics.bound(q, log_p, num_samples=100_000, seed=args.seed)
    print(
        f"{args.target}, {args.flow} K={args.layers}: {args.steps} steps of batch "
        f"{args.batch_size} "
        f"in {seconds:.1f} s"
    )
    print(f"bound E_q[log q - log p~] = {value:.4f} +- {error:.4f} nats")
    if targets.is_normalizable(args.target):
        log_z = diagnostics.log_normalizer_2d(log_p)
        print(
            f"KL(q || p) = bound + ln Z = {value + log_z:.4f} +- {error:.4f} nats (ln Z = "
            f"{log_z:.4f})"
        )
    else:
        print(f"KL(q || p): undefined, {args.target} is not normalisable over R^2")
    figure = plotting.target_and_flow(
        log_p, q, title=f"{args.target}, {args.flow} flow, K = {args.layers}"
    )
    figure.savefig(args.out or f"{args.target}.png", dpi=100)
    print(f"wrote {args.out or args.target + '.png'}")
    if args.save:
        model.save(args.save)
        print(f"wrote {args.save}")
    return 0


def _figure3(args: argparse.Namespace) -> int:
    flows = {}
    for name in args.targets:
        for k in args.layers:
            model = models.fit_flow(
                name,
                num_layers=k,
                flow=args.flow,
                steps=args.steps,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                decay=not args.no_decay,
                anneal=args.anneal,
                seed=args.seed,
            )
            flows[name, k] = model.distribution
            value, error = diagnostics.bound(flows[name, k], targets.get(name), seed=args.seed)
            kl, _ = diagnostics.kl_2d(flows[name, k], targets.get(name), extent=(-4.0, 4.0))
            print(
                f"{name} K={k}: bound {value:.4f} +- {error:.4f} nats, KL on (-4, 4)^2 {kl:.4f} "
                "nats",
                flush=True,
            )
    plotting.figure3(flows).savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


def _bound_vs_k(args: argparse.Namespace) -> int:
    rows = []
    for name in args.targets:
        for flow in args.flows:
            for k in args.layers:
                for seed in range(args.seeds):
                    q = models.fit_flow(
                        name,
                        num_layers=k,
                        flow=flow,
                        steps=args.steps,
                        batch_size=args.batch_size,
                        learning_rate=args.learning_rate,
                        decay=not args.no_decay,
                        anneal=args.anneal,
                        seed=seed,
                    ).distribution
                    value, error = diagnostics.bound(q, targets.get(name), seed=seed)
                    rows.append(
                        {
                            "target": name,
                            "flow": flow,
                            "K": k,
                            "seed": seed,
                            "bound": value,
                            "standard_error": error,
                        }
                    )
                    print(",".join(str(v) for v in rows[-1].values()), flush=True)
    plotting.bound_vs_flow_length(rows).savefig(args.out, dpi=110)
    table = os.path.splitext(args.out)[0] + ".csv"
    with open(table, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} and {table}")
    return 0


class _Throughput(keras.callbacks.Callback):
    """Training images per second after the first step, which also traces and compiles."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.images, self.start = batch_size, 0, None

    def on_train_batch_end(self, batch, logs=None):
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.images += self.batch_size

    def on_train_end(self, logs=None):
        seconds = time.perf_counter() - self.start if self.start is not None else 0.0
        self.rate = self.images / seconds if self.images and seconds > 0 else math.nan


def _vae_model_name(flow: str, num_layers: int) -> str:
    return "DLGM diagonal" if num_layers == 0 else f"DLGM + {flow} NF"


def _append_row(table: str, row: dict) -> None:
    """Append a row to a CSV (by extension) or markdown table; a new or empty one gets a header."""
    path = Path(table)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as out:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(out, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        else:
            if new:
                out.write(
                    "| model | K | epochs | ELBO | -ln p(x) | images/s "
                    "|\n|---|---|---|---|---|---|\n"
                )
            out.write(
                f"| {row['model']} | {row['K']} | {row['epochs']} | {row['elbo']} | "
                f"{row['nll']} +- {row['nll_se']} | {row['images_per_s']} |\n"
            )


def _vae(args: argparse.Namespace) -> int:
    keras.utils.set_random_seed(args.seed)
    train = datasets.binarized_mnist("train", args.data)
    num_train = int(train.cardinality())
    test = datasets.load_binarized_mnist("test", args.data)
    if args.eval_images and args.eval_images < len(test):
        # Evenly spaced: the test split is ordered by digit (its first thousand images are 0s).
        test = test[np.arange(args.eval_images) * len(test) // args.eval_images]
    batches = train.shuffle(num_train, seed=args.seed).batch(args.batch_size).prefetch(2)
    model = models.FlowVAE(
        latent_size=args.latent,
        hidden_units=args.hidden,
        num_layers=args.layers,
        flow=args.flow,
        anneal=args.anneal,
        seed=args.seed,
    )
    clip = {"clipnorm": args.clip_norm} if args.clip_norm else {}
    optimizer = (
        keras.optimizers.RMSprop(args.learning_rate, momentum=args.momentum, **clip)
        if args.optimizer == "rmsprop"
        else keras.optimizers.Adam(args.learning_rate, **clip)
    )
    model.compile(optimizer=optimizer)
    name = _vae_model_name(args.flow, args.layers)
    settings = [
        f"{args.epochs} epoch{'s' * (args.epochs != 1)} of {num_train} images",
        f"batch {args.batch_size}",
        f"{args.optimizer} lr {args.learning_rate:g}",
    ]
    settings += [f"gradient norm clipped at {args.clip_norm:g}"] if args.clip_norm else []
    settings += ["annealed"] if args.anneal else []
    print(f"{name}, K={args.layers}: {', '.join(settings)}", flush=True)
    throughput = _Throughput(args.batch_size)
    start = time.perf_counter()
    model.fit(batches, epochs=args.epochs, callbacks=[throughput], verbose=1)
    print(
        f"trained in {time.perf_counter() - start:.1f} s, {throughput.rate:.0f} images/s after the "
        "first step"
    )
    elbo = model.evaluate(test, batch_size=args.batch_size, return_dict=True, verbose=0)["elbo"]
    print(
        f"estimating -ln p(x) on {len(test)} test images with {args.samples} importance samples "
        "each",
        flush=True,
    )
    start = time.perf_counter()
    nll = models.negative_log_likelihood(
        model,
        test,
        num_samples=args.samples,
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=True,
    )
    print(f"test ELBO = {elbo:.2f} nats (one sample per image)")
    print(
        f"test -ln p(x) = {nll.mean:.2f} +- {nll.standard_error:.2f} nats "
        f"({args.samples} importance samples, {len(test)} images, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    row = {
        "model": name,
        "K": args.layers,
        "epochs": args.epochs,
        "elbo": f"{elbo:.2f}",
        "nll": f"{nll.mean:.2f}",
        "nll_se": f"{nll.standard_error:.2f}",
        "images_per_s": f"{throughput.rate:.0f}",
    }
    if args.table:
        _append_row(args.table, row)
        print(f"appended to {args.table}")
    out = args.out or f"vae_{args.flow}_k{args.layers}.png"
    plotting.samples_and_reconstructions(model, test, args.seed).savefig(out, dpi=100)
    print(f"wrote {out}")
    if args.save:
        model.save(args.save)
        print(f"wrote {args.save}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfnf", description="Variational inference with normalizing flows."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit a flow to a built-in 2-D target and plot it")
    fit.add_argument("target", choices=targets.names(), help="built-in target (paper's Table 1)")
    fit.add_argument("--flow", choices=sorted(layers.FLOWS), default="planar")
    fit.add_argument("--layers", type=int, default=32, help="flow length K (default 32)")
    fit.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default=None, help="PNG to write (default <target>.png)")
    fit.add_argument("--save", default=None, help="also save the model to this .keras file")
    fit.add_argument("--verbose", action="store_true", help="a progress bar per epoch")
    fit.set_defaults(run=_fit)

    figure3 = commands.add_parser(
        "figure3", help="the paper's Figure 3: U1..U4 fitted with K = 2, 8, 32"
    )
    figure3.add_argument("--out", default="figure3.png")
    figure3.add_argument("--targets", nargs="+", choices=targets.names(), default=targets.names())
    figure3.add_argument("--layers", nargs="+", type=int, default=[2, 8, 32])
    figure3.add_argument("--flow", choices=sorted(layers.FLOWS), default="planar")
    figure3.add_argument("--seed", type=int, default=0)
    figure3.set_defaults(run=_figure3)

    bound_vs_k = commands.add_parser(
        "bound-vs-k", help="the paper's Figure 3(d): bound against K, per flow"
    )
    bound_vs_k.add_argument(
        "--out", default="fig3d.png", help="PNG; the numbers go to the same name .csv"
    )
    bound_vs_k.add_argument("--targets", nargs="+", choices=targets.names(), default=["U1"])
    bound_vs_k.add_argument(
        "--flows", nargs="+", choices=sorted(layers.FLOWS), default=["planar", "radial", "nice"]
    )
    bound_vs_k.add_argument("--layers", nargs="+", type=int, default=[2, 8, 32])
    bound_vs_k.add_argument(
        "--seeds", type=int, default=3, help="seeds per point, for the error bars"
    )
    bound_vs_k.set_defaults(run=_bound_vs_k)

    flow_vae = commands.add_parser(
        "vae",
        help="train the paper's DLGM with a flow posterior on binarised MNIST, "
        "estimate -ln p(x) (Table 2)",
    )
    flow_vae.add_argument("--flow", choices=["planar", "radial"], default="planar")
    flow_vae.add_argument(
        "--layers", type=int, required=True, help="flow length K (0: the diagonal Gaussian)"
    )
    flow_vae.add_argument(
        "--epochs", type=int, required=True, help="passes over the 50,000 training images"
    )
    flow_vae.add_argument(
        "--batch-size", type=int, default=100, help="images per update (default 100)"
    )
    flow_vae.add_argument(
        "--hidden", type=int, default=400, help="units of each maxout layer (default 400)"
    )
    flow_vae.add_argument("--latent", type=int, default=40, help="latent variables (default 40)")
    flow_vae.add_argument("--optimizer", choices=["adam", "rmsprop"], default="adam")
    # At Adam 1e-3, K = 40 diverged within the first epoch; 3e-4 did not (benchmarks/RESULTS.md).
    flow_vae.add_argument("--learning-rate", type=float, default=3e-4, help="default 3e-4")
    flow_vae.add_argument(
        "--momentum", type=float, default=0.0, help="RMSprop's momentum (the paper: 0.9)"
    )
    flow_vae.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="clip each update's gradient to this global norm (default: no clipping)",
    )
    flow_vae.add_argument(
        "--anneal",
        action="store_true",
        help="the paper's schedule beta_t = min(1, 0.01 + t / 10000) on ln p(x, z)",
    )
    flow_vae.add_argument(
        "--data",
        default=None,
        help="binarized_mnist.npz, or a directory (default: $TFNF_DATA_DIR, the cache, a download)",
    )
    flow_vae.add_argument(
        "--samples", type=int, default=200, help="importance samples per test image (default 200)"
    )
    flow_vae.add_argument(
        "--eval-images",
        type=int,
        default=None,
        help="estimate on N test images spread evenly over the split (default all 10,000)",
    )
    flow_vae.add_argument(
        "--out",
        default=None,
        help="PNG of samples and reconstructions (default vae_<flow>_k<K>.png)",
    )
    flow_vae.add_argument(
        "--table", default=None, help="append the result row to this .csv or .md table"
    )
    flow_vae.add_argument("--save", default=None, help="also save the model to this .keras file")
    flow_vae.add_argument("--seed", type=int, default=0)
    flow_vae.set_defaults(run=_vae)

    for command, steps, batch, rate in (
        (fit, 2000, 4096, 1e-2),
        (figure3, 1000, 4096, 5e-3),
        (bound_vs_k, 500, 1024, 1e-2),
    ):
        command.add_argument(
            "--steps", type=int, default=steps, help=f"training steps (default {steps})"
        )
        command.add_argument(
            "--batch-size", type=int, default=batch, help=f"samples per step (default {batch})"
        )
        command.add_argument(
            "--learning-rate",
            type=float,
            default=rate,
            help=f"Adam's initial learning rate (default {rate:g})",
        )
        command.add_argument(
            "--no-decay",
            action="store_true",
            help="keep the learning rate constant (default: cosine decay to a tenth of it)",
        )
        command.add_argument(
            "--anneal",
            action="store_true",
            help="the paper's schedule beta_t = min(1, 0.01 + t / 10000)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
