"""Table 2 at a CPU budget: the DLGM on binarised MNIST with K = 0, 10, 40 planar maps in its \
posterior.

    python benchmarks/vae_mnist.py                # 10 epochs per model, records in RESULTS.md
    python benchmarks/vae_mnist.py --seeds 0 1 2  # the same for 3 seeds, with each K's gain
                                                  # over K = 0
    python benchmarks/vae_mnist.py --quick        # tiny models on the test subset, prints only

Every model trains for the same budget, `--epochs` passes over the 50,000
training images (default 10: 5,000 updates of batch 100), with Adam at 3e-4, no
annealing, through `tfnf vae` (one in-process call per K, so the figures are
those of the command). At Adam 1e-3, K = 40 diverged within the first epoch
(float32; the running KL term went from 16 nats at update 350 to 179 at update
450, and the test KL after the epoch was 3,285 nats); at 3e-4 it trained for
10 epochs to a test -ELBO of 104.8 and -ln p(x) of 98.8 nats (500 test images),
and at 1e-3 with `--clip-norm 100` to 107.5 and 97.9. Reported per model: the
test ELBO (one sample of q per image), -ln p(x) by importance sampling with 200
samples of q per image on the full 10,000-image test split (`--test-images N`: N
images spread evenly over it; the split is ordered by digit), and training
images per second after the first step (which traces and compiles). The paper's
figures (Rezende & Mohamed 2015, Table 2) come from 500,000 updates; at 1% of
that budget expect higher -ln p(x) for every K.

Time on the project's 2-core CPU, measured while it was busy with other jobs:
an epoch took 14 s at K = 0, 18 s at K = 10 and 21 s at K = 40 (5,400, 4,900
and 3,200 images/s), and -ln p(x) 4 to 6 s per 500 test images; so about
15 minutes for the default run.

The paper's protocol (RMSprop 1e-5 with momentum 0.9, batch 100, 500,000
updates = 1,000 epochs, annealing beta_t = min(1, 0.01 + t/10000)), for a GPU
machine:

    python benchmarks/vae_mnist.py --layers 0 10 20 40 80 --epochs 1000 --batch-size 100 \\
        --optimizer rmsprop --learning-rate 1e-5 --momentum 0.9 --anneal \\
        --data PATH/binarized_mnist.npz

(1,000 epochs: at the 18 s per epoch measured here for K = 10, five hours of
training per model on this CPU, which is why it is not the default).

The paper's deterministic layers are maxout over windows of 4, 400 units, 40
latent variables: `FlowVAE`'s defaults, used here.
"""

import argparse
import csv
import datetime
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfnf import cli  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import machine, record  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = (
    ROOT.parent / "shared" / "data" / "binarized_mnist.npz"
)  # beside the checkout, when there
SUBSET = ROOT / "tests" / "data" / "binarized_mnist_small.npz"
RECORDS = pathlib.Path(__file__).with_name("results") / "vae_mnist.json"
# Table 2 of Rezende & Mohamed (2015), -ln p(x) upper bounds after 500,000 updates; planar flows.
PAPER = {0: 89.9, 10: 87.5, 20: 86.5, 40: 85.7, 80: 85.1}


def run(num_layers: int, seed: int, args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    """One `tfnf vae` run; the row it appended to its table (strings, as printed)."""
    table = workdir / "rows.csv"
    argv = [
        "vae",
        "--flow",
        "planar",
        "--layers",
        str(num_layers),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        str(args.hidden),
        "--latent",
        str(args.latent),
        "--optimizer",
        args.optimizer,
        "--learning-rate",
        str(args.learning_rate),
        "--momentum",
        str(args.momentum),
        "--samples",
        str(args.samples),
        "--seed",
        str(seed),
        "--table",
        str(table),
        "--out",
        str(workdir / f"samples_k{num_layers}_seed{seed}.png"),
    ]
    argv += ["--anneal"] if args.anneal else []
    argv += ["--clip-norm", str(args.clip_norm)] if args.clip_norm else []
    argv += [] if args.quick else ["--json", str(RECORDS)]  # each model's record as it finishes
    argv += ["--data", str(args.data)] if args.data else []
    argv += ["--eval-images", str(args.test_images)] if args.test_images else []
    assert cli.main(argv) == 0
    with table.open() as f:
        return list(csv.DictReader(f))[-1]


def gains(rows: dict, seeds: list, layers: list) -> list:
    """Table lines: each K's -ln p(x) gain over K = 0 (nats, positive = better), per seed and on
    average."""
    if 0 not in layers or len(layers) < 2:
        return []
    flows = [k for k in layers if k != 0]
    lines = [
        "",
        "Gain in -ln p(x) over K = 0 with the same seed (nats; positive: the flow is better).\n",
        "| K | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---" * (len(seeds) + 2) + "|",
    ]
    for k in flows:
        gain = [float(rows[s, 0]["nll"]) - float(rows[s, k]["nll"]) for s in seeds]
        lines.append(
            f"| {k} | " + " | ".join(f"{g:.2f}" for g in gain) + f" | {sum(gain) / len(gain):.2f} |"
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layers", type=int, nargs="+", default=[0, 10, 40], help="flow lengths K (planar)"
    )
    parser.add_argument(
        "--epochs", type=int, default=10, help="the equal budget: passes over the training split"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent", type=int, default=40)
    parser.add_argument("--optimizer", choices=["adam", "rmsprop"], default="adam")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--clip-norm", type=float, default=None)
    parser.add_argument("--anneal", action="store_true")
    parser.add_argument(
        "--samples", type=int, default=200, help="importance samples per test image"
    )
    parser.add_argument(
        "--test-images", type=int, default=None, help="N test images spread over the split"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="binarized_mnist.npz (default: ../shared/data beside the "
        "checkout if there, else tfnf's search; --quick: the test subset)",
    )
    parser.add_argument(
        "--seeds", "--seed", type=int, nargs="+", default=[0], help="one run of every K per seed"
    )
    parser.add_argument(
        "--figures", default=None, help="keep each model's samples PNG in this directory"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 epoch of tiny models (hidden 32, latent 4) on the 1,000-image test subset, "
        "10 samples on 100 test images; prints only",
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.hidden, args.latent, args.samples, args.test_images = 1, 32, 4, 10, 100
    if args.data is None:
        args.data = SUBSET if args.quick else SHARED_MNIST if SHARED_MNIST.is_file() else None
    with tempfile.TemporaryDirectory() as scratch:
        workdir = pathlib.Path(args.figures or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = {(seed, k): run(k, seed, args, workdir) for seed in args.seeds for k in args.layers}
    schedule = (
        f"{args.optimizer} lr {args.learning_rate:g}"
        + (f" momentum {args.momentum:g}" if args.momentum else "")
        + (f", gradient norm clipped at {args.clip_norm:g}" if args.clip_norm else "")
        + (", annealed" if args.anneal else "")
    )
    lines = [
        f"\n## vae_mnist.py, {datetime.date.today()}, {machine()}\n",
        f"DLGM on binarised MNIST (maxout {args.hidden} units, {args.latent} latents), "
        "planar flow posteriors, "
        f"{args.epochs} epochs of batch {args.batch_size} for every K ({schedule}); "
        f"-ln p(x) by importance sampling, {args.samples} samples per image, on "
        f"{args.test_images or 'all 10,000'} test images, +- its standard error; "
        "ELBO with one sample per image; "
        "images/s of training after the first step. Paper: Table 2, 500,000 updates.\n",
        "| model | K | seed | epochs | ELBO | -ln p(x) | images/s | paper -ln p(x) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (seed, k), row in rows.items():
        paper = f"<= {PAPER[k]}" if k in PAPER else "-"
        lines.append(
            f"| {row['model']} | {k} | {seed} | {row['epochs']} | {row['elbo']} "
            f"| {row['nll']} +- {row['nll_se']} | {row['images_per_s']} | {paper} |"
        )
    lines += gains(rows, args.seeds, args.layers)
    print("\n".join(lines))
    if not args.quick:
        record(lines)


if __name__ == "__main__":
    main()
