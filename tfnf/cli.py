"""The `tfnf` command: at the edge, using everything, used by nothing."""

import argparse
import os
import sys
import time
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # the command only writes files
from tfnf import diagnostics, models, plotting, targets  # noqa: E402


def _fit(args: argparse.Namespace) -> int:
    keras.utils.set_random_seed(args.seed)
    model = models.NormalizingFlow(
        event_size=2, num_layers=args.layers, flow=args.flow, target_log_prob=args.target,
        beta_schedule=models.paper_annealing() if args.anneal else 1.0, seed=args.seed, dtype=args.dtype)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    start = time.perf_counter()
    model.fit(steps=args.steps, batch_size=args.batch_size, verbose=1 if args.verbose else 2)
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
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    if args.save:
        model.save(args.save)
        print(f"wrote {args.save}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfnf", description="Variational inference with normalizing flows.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a flow to a built-in 2-D target and plot it")
    fit.add_argument("target", choices=targets.names(), help="built-in target (paper's Table 1)")
    fit.add_argument("--flow", choices=["planar", "radial"], default="planar")
    fit.add_argument("--layers", type=int, default=32, help="flow length K (default 32)")
    fit.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    fit.add_argument("--batch-size", type=int, default=4096, help="samples per step (default 4096)")
    fit.add_argument("--learning-rate", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    fit.add_argument("--anneal", action="store_true", help="the paper's schedule beta_t = min(1, 0.01 + t/1e4)")
    fit.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default=None, help="PNG to write (default <target>.png)")
    fit.add_argument("--save", default=None, help="also save the model to this .keras file")
    fit.add_argument("--verbose", action="store_true", help="a progress bar per epoch")
    fit.set_defaults(run=_fit)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "out", "") is None:
        args.out = f"{args.target}.png"
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
