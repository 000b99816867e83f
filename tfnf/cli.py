"""The `tfnf` command: at the edge, using everything, used by nothing."""

import argparse
import csv
import os
import sys
import time
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # the command only writes files
from tfnf import diagnostics, layers, models, plotting, targets  # noqa: E402


def _fit(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    model = models.fit_flow(args.target, num_layers=args.layers, flow=args.flow, steps=args.steps,
                            batch_size=args.batch_size, learning_rate=args.learning_rate, decay=not args.no_decay,
                            anneal=args.anneal,
                            seed=args.seed, dtype=args.dtype, verbose=1 if args.verbose else 2)
    seconds = time.perf_counter() - start
    q, log_p = model.distribution, targets.get(args.target)
    value, error = diagnostics.bound(q, log_p, num_samples=100_000, seed=args.seed)
    print(f"{args.target}, {args.flow} K={args.layers}: {args.steps} steps of batch {args.batch_size} "
          f"in {seconds:.1f} s")
    print(f"bound E_q[log q - log p~] = {value:.4f} +- {error:.4f} nats")
    if targets.is_normalizable(args.target):
        log_z = diagnostics.log_normalizer_2d(log_p)
        print(f"KL(q || p) = bound + ln Z = {value + log_z:.4f} +- {error:.4f} nats (ln Z = {log_z:.4f})")
    else:
        print(f"KL(q || p): undefined, {args.target} is not normalisable over R^2")
    figure = plotting.target_and_flow(log_p, q, title=f"{args.target}, {args.flow} flow, K = {args.layers}")
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
            model = models.fit_flow(name, num_layers=k, flow=args.flow, steps=args.steps, batch_size=args.batch_size,
                                    learning_rate=args.learning_rate, decay=not args.no_decay, anneal=args.anneal,
                                    seed=args.seed)
            flows[name, k] = model.distribution
            value, error = diagnostics.bound(flows[name, k], targets.get(name), seed=args.seed)
            kl, _ = diagnostics.kl_2d(flows[name, k], targets.get(name), extent=(-4.0, 4.0))
            print(f"{name} K={k}: bound {value:.4f} +- {error:.4f} nats, KL on (-4, 4)^2 {kl:.4f} nats", flush=True)
    plotting.figure3(flows).savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


def _bound_vs_k(args: argparse.Namespace) -> int:
    rows = []
    for name in args.targets:
        for flow in args.flows:
            for k in args.layers:
                for seed in range(args.seeds):
                    q = models.fit_flow(name, num_layers=k, flow=flow, steps=args.steps, batch_size=args.batch_size,
                                        learning_rate=args.learning_rate, decay=not args.no_decay, anneal=args.anneal,
                                        seed=seed).distribution
                    value, error = diagnostics.bound(q, targets.get(name), seed=seed)
                    rows.append({"target": name, "flow": flow, "K": k, "seed": seed, "bound": value,
                                 "standard_error": error})
                    print(",".join(str(v) for v in rows[-1].values()), flush=True)
    plotting.bound_vs_flow_length(rows).savefig(args.out, dpi=110)
    table = os.path.splitext(args.out)[0] + ".csv"
    with open(table, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} and {table}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfnf", description="Variational inference with normalizing flows.")
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

    figure3 = commands.add_parser("figure3", help="the paper's Figure 3: U1..U4 fitted with K = 2, 8, 32")
    figure3.add_argument("--out", default="figure3.png")
    figure3.add_argument("--targets", nargs="+", choices=targets.names(), default=targets.names())
    figure3.add_argument("--layers", nargs="+", type=int, default=[2, 8, 32])
    figure3.add_argument("--flow", choices=sorted(layers.FLOWS), default="planar")
    figure3.add_argument("--seed", type=int, default=0)
    figure3.set_defaults(run=_figure3)

    bound_vs_k = commands.add_parser("bound-vs-k", help="the paper's Figure 3(d): bound against K, per flow")
    bound_vs_k.add_argument("--out", default="fig3d.png", help="PNG; the numbers go to the same name .csv")
    bound_vs_k.add_argument("--targets", nargs="+", choices=targets.names(), default=["U1"])
    bound_vs_k.add_argument("--flows", nargs="+", choices=sorted(layers.FLOWS), default=["planar", "radial", "nice"])
    bound_vs_k.add_argument("--layers", nargs="+", type=int, default=[2, 8, 32])
    bound_vs_k.add_argument("--seeds", type=int, default=3, help="seeds per point, for the error bars")
    bound_vs_k.set_defaults(run=_bound_vs_k)

    for command, steps, batch, rate in ((fit, 2000, 4096, 1e-2), (figure3, 1000, 4096, 5e-3),
                                        (bound_vs_k, 500, 1024, 1e-2)):
        command.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
        command.add_argument("--batch-size", type=int, default=batch, help=f"samples per step (default {batch})")
        command.add_argument("--learning-rate", type=float, default=rate,
                             help=f"Adam's initial learning rate (default {rate:g})")
        command.add_argument("--no-decay", action="store_true",
                             help="keep the learning rate constant (default: cosine decay to a tenth of it)")
        command.add_argument("--anneal", action="store_true",
                             help="the paper's schedule beta_t = min(1, 0.01 + t / 10000)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
