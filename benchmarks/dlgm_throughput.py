"""Training throughput of the DLGM: tfnf against the same model in PyTorch, in one run.

    python benchmarks/dlgm_throughput.py            # K = 0, 10, 40, 80, 3 rounds; records
    python benchmarks/dlgm_throughput.py --quick    # K = 0, 10, one round, 2,000 images; prints
    python benchmarks/dlgm_throughput.py --layers 80 --head-units 64   # also the cheaper heads

Each measurement runs in a fresh process: one epoch of `--images` images of
batch 100 to warm up (tracing, compiling), then the images/s of a second
epoch. tfnf trains `FlowVAE` through `fit` with the optimizer of `tfnf vae`
(Adamax 5e-4, the KL warm-up, 10 steps per execution), as the command does; PyTorch trains
`baselines/dlgm_torch.py` (the same network, Adamax 5e-4) eagerly and under
`torch.compile`, with as many threads as this CPU has. The implementations and
the values of K alternate within each round, and the median of the rounds is
reported. Before timing, the PyTorch model is given the tfnf model's weights
and noise and must give the same per-image negative ELBO (float32 round-off):
the two compute the same model.

The physical limit of the K = 0 step is its matrix products: the encoder,
heads, decoder and logits layers forward, and their weight and input gradients
backward (the images need none), timed alone at the same shapes, in float32,
under XLA and in NumPy, the faster of the two. The K = 0 step's FLOP rate is
reported against that rate.

Records: a section in RESULTS.md and one JSON object per run appended to
results/dlgm_throughput.json. torch is an optional dependency
(`pip install torch==2.13.0`).
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RECORDS = HERE / "results" / "dlgm_throughput.json"
IMPLEMENTATIONS = ("tfnf", "torch", "torch-compile")
BATCH = 100


def images(n: int, seed: int = 0) -> np.ndarray:
    """Binary images at MNIST's pixel density; the step's speed does not depend on the values."""
    return (np.random.default_rng(seed).random((n, 784)) < 0.13).astype("float32")


def tfnf_model(num_layers: int, num_train: int, head_units: int | None = None):
    import keras

    from tfnf import models

    keras.utils.set_random_seed(0)
    model = models.FlowVAE(
        num_layers=num_layers,
        kl_warmup=50 * math.ceil(num_train / BATCH),
        flow_options={"head_units": head_units} if head_units else None,
        seed=0,
    )
    # as `tfnf vae` compiles it: 10 steps per execution (the same updates, fewer calls)
    model.compile(optimizer=keras.optimizers.Adamax(5e-4), steps_per_execution=10)
    return model


def time_tfnf(num_layers: int, n: int, head_units: int | None = None) -> float:
    """Images per second of `FlowVAE.fit`'s second epoch, fed as `tfnf vae` feeds it: one
    dataset of every epoch's batches, each epoch's order drawn from (seed, epoch), rows gathered
    batch by batch."""
    import keras

    from tfnf import cli

    model = tfnf_model(num_layers, n, head_units)
    batches = cli._epoch_orders(images(n), BATCH, seed=0, first=0, epochs=2)

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    times = EpochTimes()
    model.fit(batches, epochs=2, steps_per_epoch=math.ceil(n / BATCH), callbacks=[times], verbose=0)
    return n / times.seconds


def _torch_threads():
    import torch

    torch.set_num_threads(os.cpu_count())
    return torch


def time_torch(num_layers: int, n: int, compile_step: bool) -> float:
    """Images per second of the PyTorch DLGM's second epoch (shuffled batches of 100)."""
    torch = _torch_threads()
    sys.path.insert(0, str(HERE))
    from baselines import dlgm_torch

    torch.manual_seed(0)
    x = torch.from_numpy(images(n))
    _, step = dlgm_torch.trainer(num_layers, compile_step=compile_step)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        for batch in torch.randperm(n).split(BATCH):
            step(x[batch])
        seconds.append(time.perf_counter() - start)
    return n / seconds[-1]


def same_model_check(num_layers: int) -> float:
    """The largest |difference| of the per-image negative ELBO of tfnf and PyTorch, same weights
    and noise (nats); raises if it is beyond float32 round-off."""
    import tensorflow as tf

    from tfnf import sampling

    torch = _torch_threads()
    sys.path.insert(0, str(HERE))
    from baselines import dlgm_torch

    model = tfnf_model(num_layers, 1000)
    rng = np.random.default_rng(1)
    for weight in model.posterior_layer.weights:  # the flow away from the identity
        weight.assign(0.05 * rng.normal(size=weight.shape).astype("float32"))
    theirs = dlgm_torch.DLGM(num_layers)
    layer = model.posterior_layer
    pairs = [
        (theirs.encoder.linear, model.encoder.layers[0].dense),
        (theirs.loc, layer.loc_head),
        (theirs.scale, layer.scale_head),
        (theirs.decoder[0].linear, model.decoder.layers[0].dense),
        (theirs.decoder[1], model.decoder.layers[1]),
    ]
    if num_layers:
        pairs += [(getattr(theirs, name), layer.flow_heads[name]) for name in ("u", "w", "b")]
    with torch.no_grad():
        for linear, dense in pairs:
            linear.weight.copy_(torch.from_numpy(dense.kernel.numpy().T.copy()))
            linear.bias.copy_(torch.from_numpy(dense.bias.numpy()))
    x = images(BATCH, seed=2)
    seed = tf.constant([7, 3])
    log_px_z, log_pz, log_q = model.log_weight_terms(x, seed)
    ours = -(log_px_z + log_pz - log_q).numpy()
    eps = sampling.standard_normal([BATCH, 40], seed).numpy()  # the draw FlowVAE makes
    with torch.no_grad():
        other = theirs(torch.from_numpy(x), torch.from_numpy(eps)).numpy()
    gap = float(np.max(np.abs(ours - other)))
    if not gap <= 1e-4 * float(np.max(np.abs(ours))):
        raise AssertionError(f"K = {num_layers}: tfnf and PyTorch differ by {gap} nats")
    return gap


def matmul_shapes(num_layers: int = 0, latent: int = 40, hidden: int = 400, pieces: int = 4):
    """The (m, k, n) products of the step, forward and backward; the images get no gradient."""
    layers = [  # (inputs, outputs) of each dense layer
        (784, hidden * pieces),
        (hidden, latent),
        (hidden, latent),
        (latent, hidden * pieces),
        (hidden, 784),
    ]
    if num_layers:
        layers += [(hidden, num_layers * latent)] * 2 + [(hidden, num_layers)]
    shapes = []
    for index, (inputs, outputs) in enumerate(layers):
        shapes.append((BATCH, inputs, outputs))  # forward
        shapes.append((inputs, BATCH, outputs))  # kernel gradient x^T dy
        if index:
            shapes.append((BATCH, outputs, inputs))  # input gradient dy W^T
    return shapes


def time_matmuls(repeats: int = 200) -> dict:
    """Seconds per pass over the K = 0 step's products alone, float32: XLA and NumPy."""
    import tensorflow as tf

    shapes = matmul_shapes()
    rng = np.random.default_rng(0)
    pairs = [
        (rng.random((m, k), dtype="float32"), rng.random((k, n), dtype="float32"))
        for m, k, n in shapes
    ]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    tensors = [(tf.constant(a), tf.constant(b)) for a, b in pairs]

    @tf.function(jit_compile=True)
    def passes(scale):
        def one(i, total):
            # scale * total feeds each pass into the next, so none can be skipped or hoisted
            return i + 1, total + sum(
                tf.reduce_sum(tf.matmul(a * (1 + scale * total), b)) for a, b in tensors
            )

        return tf.while_loop(lambda i, _: i < repeats, one, (0, tf.constant(0.0)))[1]

    passes(tf.constant(0.0))  # compile
    start = time.perf_counter()
    passes(tf.constant(0.0)).numpy()
    xla = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            a @ b
    numpy_seconds = (time.perf_counter() - start) / repeats
    return {"flops": flops, "xla_s": xla, "numpy_s": numpy_seconds}


def one(args) -> dict:
    if args.one == "tfnf":
        return {"images_per_s": time_tfnf(args.layers, args.images, args.head_units)}
    if args.one in ("torch", "torch-compile"):
        return {"images_per_s": time_torch(args.layers, args.images, args.one == "torch-compile")}
    if args.one == "check":
        return {"max_gap_nats": same_model_check(args.layers)}
    return time_matmuls()


def measure(what: str, num_layers: int, n: int, head_units: int | None = None) -> dict:
    command = [sys.executable, __file__, "--one", what, "--layers", str(num_layers)]
    command += ["--head-units", str(head_units)] if head_units else []
    out = subprocess.run(
        [*command, "--images", str(n)], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"{what} K = {num_layers} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    from tfnf._machine import machine as described

    return described()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 0, 10, one round, prints only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=20_000, help="images per epoch")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 10, 40, 80])
    parser.add_argument(
        "--head-units",
        type=int,
        default=None,
        help="also time tfnf with the flow heads through R shared units (K > 0)",
    )
    parser.add_argument(
        "--one", choices=[*IMPLEMENTATIONS, "check", "matmul"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        if args.one != "matmul":
            args.layers = args.layers[0]
        print(json.dumps(one(args)))
        return
    if args.quick:
        args.layers, args.rounds, args.images = [0, 10], 1, 2_000
    for k in args.layers:
        gap = measure("check", k, 0)["max_gap_nats"]
        print(f"K = {k}: tfnf and PyTorch agree to {gap:.1e} nats per image", flush=True)
    shared = [k for k in args.layers if k] if args.head_units else []
    rates = {(what, k): [] for what in IMPLEMENTATIONS for k in args.layers}
    rates.update({("tfnf-heads", k): [] for k in shared})
    for r in range(args.rounds):
        for k in args.layers:
            order = IMPLEMENTATIONS + (("tfnf-heads",) if k in shared else ())
            for what in order if r % 2 == 0 else reversed(order):
                units = args.head_units if what == "tfnf-heads" else None
                rate = measure(what.removesuffix("-heads"), k, args.images, units)["images_per_s"]
                rates[what, k].append(rate)
                print(f"round {r + 1}: {what} K = {k}: {rate:.0f} images/s", flush=True)
    matmuls = measure("matmul", 0, 0)
    limit = matmuls["flops"] / min(matmuls["xla_s"], matmuls["numpy_s"])
    median = {key: float(np.median(value)) for key, value in rates.items()}
    k0_step = matmuls["flops"] / (BATCH / median["tfnf", 0]) if 0 in args.layers else math.nan
    lines = [
        f"\n## dlgm_throughput.py, {datetime.date.today()}, {machine()}\n",
        f"DLGM training images/s (maxout 400, 40 latents, planar K maps, batch {BATCH}, Adamax), "
        f"the second epoch of {args.images:,} images, each run in a fresh process, median of "
        f"{args.rounds} alternating rounds (min - max). PyTorch {_torch_version()}, "
        f"{os.cpu_count()} threads.\n",
        "| K | tfnf | PyTorch eager | PyTorch compiled | tfnf / best PyTorch |",
        "|---|---|---|---|---|",
    ]
    for k in args.layers:
        best = max(median["torch", k], median["torch-compile", k])
        cells = [
            f"{median[what, k]:,.0f} ({min(rates[what, k]):,.0f} - {max(rates[what, k]):,.0f})"
            for what in IMPLEMENTATIONS
        ]
        lines.append(f"| {k} | {' | '.join(cells)} | {median['tfnf', k] / best:.2f} |")
    for k in shared:
        lines.append(
            f"\nWith the flow heads through {args.head_units} shared units (`head_units`), "
            f"K = {k}: tfnf {median['tfnf-heads', k]:,.0f} images/s "
            f"({min(rates['tfnf-heads', k]):,.0f} - {max(rates['tfnf-heads', k]):,.0f}), "
            f"{median['tfnf-heads', k] / median['tfnf', k]:.2f}x its full heads."
        )
    xla, numpy_rate = (matmuls["flops"] / matmuls[key] / 1e9 for key in ("xla_s", "numpy_s"))
    lines.append(
        f"\nThe K = 0 step's matrix products ({matmuls['flops'] / 1e6:.0f} MFLOP per step of "
        f"{BATCH}) alone: {limit / 1e9:.0f} GFLOP/s (XLA {xla:.0f}, NumPy {numpy_rate:.0f}); "
        + (
            f"the tfnf K = 0 step runs them at {k0_step / 1e9:.0f} GFLOP/s, "
            f"{k0_step / limit:.0%} of that."
            if 0 in args.layers
            else "K = 0 was not in this run."
        )
    )
    print("\n".join(lines))
    if args.quick:
        return
    with open(HERE / "RESULTS.md", "a") as out:
        out.write("\n".join(lines) + "\n")
    RECORDS.parent.mkdir(exist_ok=True)
    records = json.loads(RECORDS.read_text()) if RECORDS.exists() else []
    records.append(
        {
            "date": str(datetime.date.today()),
            "machine": machine(),
            "images_per_epoch": args.images,
            "rounds": args.rounds,
            "images_per_s": {
                what: {str(k): rates[what, k] for k in args.layers if (what, k) in rates}
                for what in (*IMPLEMENTATIONS, *(("tfnf-heads",) if shared else ()))
            },
            **({"head_units": args.head_units} if shared else {}),
            "k0_matmul_flops": matmuls["flops"],
            "matmul_seconds": {"xla": matmuls["xla_s"], "numpy": matmuls["numpy_s"]},
        }
    )
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
