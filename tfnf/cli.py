"""The `tfnf` command: at the edge, using everything, used by nothing.

Every argument and output path is checked while the command line is parsed, before
TensorFlow is imported or any training starts; a bad one gets a one-line error and
exit status 2. `--help` imports no TensorFlow, so it answers at once.
"""

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tfnf import _checks, names

__all__ = ["main"]

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _heavy():
    """Prepare what the commands run (TensorFlow's log level, matplotlib's file backend)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import matplotlib

    matplotlib.use("Agg")  # the command only writes files


def _fit(args: argparse.Namespace) -> int:
    _heavy()
    from tfnf import diagnostics, models, plotting, targets

    start = time.perf_counter()
    keep = _KeepModel(args)
    try:
        model = models.fit_flow(
            args.target,
            num_layers=args.layers,
            flow=args.flow,
            **_training_options_of(args),
            seed=args.seed,
            dtype=args.dtype,
            verbose=1 if args.verbose else 2,
            callbacks=[keep.callback()],
        )
    except KeyboardInterrupt:
        print(f"tfnf fit: {keep.interrupted()}", file=sys.stderr)
        return 130
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
        kl, mass = diagnostics.kl_2d(q, log_p, extent=targets.BOX)
        print(
            f"KL(q || p): undefined, {args.target} is not normalisable over R^2; fitted "
            f"restricted to the box {_square(targets.BOX)}, where KL(q_box || p_box) = {kl:.4f} "
            f"nats, with {mass:.0%} of q's mass inside"
        )
    check = diagnostics.importance_log_normalizer(
        q,
        log_p,
        num_samples=100_000,
        seed=[args.seed, 1],  # stateless: reproducible
    )
    print(
        f"q as a proposal for p: Pareto k-hat {check.khat:.2f} "
        f"({'reliable' if check.khat < 0.7 else 'unreliable'}: < 0.7 is), "
        f"effective sample size {check.ess:.0%}"
    )
    iwae, iwae_error = diagnostics.importance_weighted_bound(
        q, log_p, 64, num_bounds=2_000, seed=[args.seed, 2]
    )
    print(
        f"importance-weighted lower bound on ln Z, k = 64: {iwae:.4f} +- {iwae_error:.4f} nats "
        f"(the ELBO, k = 1: {-value:.4f})"
    )
    figure = plotting.target_and_flow(
        log_p, q, title=f"{args.target}, {args.flow} flow, K = {args.layers}"
    )
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    if args.save:
        model.save(args.save)
        print(f"wrote {args.save}")
    return 0


def _training_options_of(args: argparse.Namespace) -> dict:
    """What the three 2-D commands pass alike to `fit_flow` (see `_training_options`)."""
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "decay": not args.no_decay,
        "anneal": False if args.no_anneal else None,  # None: fit_flow's default for the flow
    }


def _square(box) -> str:
    lo, hi = box
    return f"({lo:g}, {hi:g})^2"


def _figure3(args: argparse.Namespace) -> int:
    _heavy()
    from tfnf import diagnostics, models, plotting, targets

    start = time.perf_counter()
    flows, kls = {}, {}
    for name in args.targets:
        log_p = targets.get(name)
        # Normalisable targets: the exact KL (quadrature over (-6, 6)^2, essentially R^2);
        # the others: the KL on the plotted box, against the target restricted to it.
        extent = (-6.0, 6.0) if targets.is_normalizable(name) else targets.BOX
        for k in args.layers:
            model = models.fit_flow(
                name,
                num_layers=k,
                flow=args.flow,
                **_training_options_of(args),
                seed=args.seed,
            )
            flows[name, k] = q = model.distribution
            value, error = diagnostics.bound(q, log_p, seed=args.seed)
            kls[name, k], mass = diagnostics.kl_2d(q, log_p, extent=extent)
            where = "KL(q || p)" if extent != targets.BOX else f"KL on {_square(targets.BOX)}"
            # k-hat of q as a proposal for what it was fitted to (U2..U4: restricted to the box)
            fitted = log_p if targets.is_normalizable(name) else targets.Restricted(log_p)
            khat = diagnostics.importance_log_normalizer(q, fitted, seed=[args.seed, 1]).khat
            print(
                f"{name} K={k}: bound {value:.4f} +- {error:.4f} nats, {where} "
                f"{kls[name, k]:.4f} nats ({mass:.0%} of q inside), Pareto k-hat {khat:.2f}",
                flush=True,
            )
    caption = (
        f"Each panel shows {_square(targets.BOX)}; under it, the KL in nats: for a target not "
        f"normalisable, KL(q || p) with both restricted to that same box; otherwise the exact "
        f"KL(q || p). {args.flow} flows, {args.steps} steps of {args.batch_size}, seed {args.seed}."
    )
    plotting.figure3(flows, kls=kls, caption=caption).savefig(args.out, dpi=110)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


def _bound_vs_k(args: argparse.Namespace) -> int:
    _heavy()
    from tfnf import diagnostics, models, plotting, targets

    rows = []
    for name in args.targets:
        for flow in args.flows:
            for k in args.layers:
                for seed in range(args.seeds):
                    q = models.fit_flow(
                        name,
                        num_layers=k,
                        flow=flow,
                        **_training_options_of(args),
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
    table = _csv_beside(args.out)
    with open(table, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} and {table}")
    return 0


def _throughput(batch_size: int):
    """A callback measuring training images per second after the first step (which compiles)."""
    import keras

    class Throughput(keras.callbacks.Callback):
        # Keras calls on_train_batch_end once per execution of steps_per_execution steps, so
        # the steps are read from the optimizer's update counter, not counted here.
        def __init__(self):
            super().__init__()
            self.images, self.start, self.rate = 0, None, math.nan

        def on_train_batch_end(self, batch, logs=None):
            steps = int(self.model.optimizer.iterations.numpy())
            if self.start is None:
                self.start, self.first = time.perf_counter(), steps
            else:
                self.images = (steps - self.first) * batch_size

        def on_train_end(self, logs=None):
            seconds = time.perf_counter() - self.start if self.start is not None else 0.0
            self.rate = self.images / seconds if self.images and seconds > 0 else math.nan

    return Throughput()


class _KeepModel:
    """Holds the model being trained, so that after Ctrl-C `--save` still saves what finished."""

    def __init__(self, args: argparse.Namespace):
        self.model, self.save = None, args.save

    def callback(self):
        import keras

        keep = self

        class Watch(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                keep.model = self.model

        return Watch()

    def interrupted(self) -> str:
        steps = int(self.model.optimizer.iterations) if self.model is not None else 0
        if not steps:
            return "interrupted before any training step finished; nothing saved"
        if not self.save:
            return f"interrupted after {steps} training steps; nothing saved (no --save)"
        self.model.save(self.save)
        return f"interrupted after {steps} training steps; saved the model to {self.save}"


def _backed_up_epoch(backup: Path | None) -> int:
    """The epoch a run resumes at: BackupAndRestore's record in backup/progress, else 0."""
    record = None if backup is None else backup / "progress" / "training_metadata.json"
    if record is None or not record.exists():
        return 0
    return int(json.loads(record.read_text())["epoch"])


def _epoch_orders(train, batch_size: int, seed: int, first: int, epochs: int):
    """The batches of epochs first, first + 1, ..., each epoch's order drawn from (seed, epoch)
    alone (stateless), so a run resumed at epoch `first` sees what an uninterrupted one would.

    train: [N, P] images (numpy); the batches are float32.
    """
    import tensorflow as tf

    images = tf.constant(train, tf.float32)

    def epoch(e):
        key = tf.stack([tf.constant(seed, tf.int64), e])
        order = tf.argsort(tf.random.stateless_uniform([len(train)], seed=key))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    return (
        tf.data.Dataset.range(first, max(epochs, first + 1))
        .flat_map(epoch)
        .map(lambda rows: tf.gather(images, rows))
        .prefetch(2)
    )


def _kept_after_divergence(args: argparse.Namespace, model, best_kept) -> str:
    """Load the best epoch's weights (if any) after a non-finite step, save with --save; what
    was kept, in words."""
    weights = None if best_kept is None else best_kept.directory / "best.weights.h5"
    if weights is not None and best_kept.best_epoch is not None and weights.exists():
        model.load_weights(str(weights))
        kept = f"kept the weights of the best validation ELBO (epoch {best_kept.best_epoch + 1})"
        kept += f" in {weights}" if args.backup is not None else ""
    else:
        kept = "no validated epoch finished; kept the weights of the last finite step"
    if args.save:
        model.save(args.save)
        kept += f"; saved the model to {args.save}"
    return kept


def _vae_model_name(flow: str, num_layers: int, planar_layers: int = 0) -> str:
    if flow == "hamiltonian":
        warp = f"planar K={planar_layers} + " if planar_layers else ""
        return f"DLGM + {warp}Hamiltonian flow (HVAE), L={num_layers}"
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
    _heavy()
    import keras
    import numpy as np

    from tfnf import datasets, models, plotting

    keras.utils.set_random_seed(args.seed)
    train = datasets.load_binarized_mnist("train", args.data)
    num_train = len(train)
    test = datasets.load_binarized_mnist("test", args.data)
    if args.eval_images < len(test):
        # Evenly spaced: the test split is ordered by digit (its first thousand images are 0s).
        test = test[np.arange(args.eval_images) * len(test) // args.eval_images]
    validation = None
    if args.validation_images:
        valid = datasets.load_binarized_mnist("valid", args.data)
        if args.validation_images < len(valid):
            valid = valid[np.arange(args.validation_images) * len(valid) // args.validation_images]
        validation = valid
    flow_options = None
    if args.flow == "hamiltonian":
        flow_options = {"planar_layers": args.planar_layers}
        if args.step_size is not None:
            flow_options["step_size"] = args.step_size
    elif args.flow == "sylvester":
        flow_options = {"rank": args.rank, "variant": args.variant or "orthogonal"}
    if args.head_units is not None:
        flow_options = {**(flow_options or {}), "head_units": args.head_units}
    model = models.FlowVAE(
        latent_size=args.latent,
        hidden_units=args.hidden,
        num_layers=args.layers,
        flow=args.flow,
        flow_options=flow_options,
        anneal=args.anneal,
        kl_warmup=args.warmup_epochs * math.ceil(num_train / args.batch_size),
        encoder_noise=args.encoder_noise,
        seed=args.seed,
    )
    clip = {"clipnorm": args.clip_norm} if args.clip_norm else {}
    if args.weight_decay:
        clip["weight_decay"] = args.weight_decay
    if args.ema:
        clip.update(use_ema=True, ema_momentum=args.ema)
    optimizer = {
        "adamax": lambda: keras.optimizers.Adamax(args.learning_rate, **clip),
        "adam": lambda: keras.optimizers.Adam(args.learning_rate, **clip),
        "rmsprop": lambda: keras.optimizers.RMSprop(
            args.learning_rate, momentum=args.momentum, **clip
        ),
    }[args.optimizer]()
    # Several steps per call of the compiled function: the same updates, less of Keras' per-step
    # Python (about 15% more images/s at K = 40 here; benchmarks/RESULTS.md).
    model.compile(optimizer=optimizer, steps_per_execution=args.steps_per_execution)
    name = _vae_model_name(args.flow, args.layers, args.planar_layers)
    settings = [
        f"{args.epochs} epoch{'s' * (args.epochs != 1)} of {num_train} images",
        f"batch {args.batch_size}",
        f"{args.optimizer} lr {args.learning_rate:g}",
    ]
    settings += [f"gradient norm clipped at {args.clip_norm:g}"] if args.clip_norm else []
    settings += ["annealed"] if args.anneal else []
    settings += [f"weight decay {args.weight_decay:g}"] if args.weight_decay else []
    settings += [f"weights averaged with momentum {args.ema:g}"] if args.ema else []
    settings += [f"encoder input noise {args.encoder_noise:g}"] if args.encoder_noise else []
    settings += [f"KL warm-up over {args.warmup_epochs} epochs"] if args.warmup_epochs else []
    settings += [f"rate halved after {args.lr_patience} flat epochs"] if args.lr_patience else []
    settings += [f"budget {args.budget_minutes:g} min"] if args.budget_minutes else []
    settings += [f"flow heads through {args.head_units} units"] if args.head_units else []
    if validation is not None:
        settings += [
            f"validated on {len(validation)} images, best kept"
            + (f", patience {args.patience}" if args.patience else "")
        ]
    print(f"{name}, K={args.layers}: {', '.join(settings)}", flush=True)
    throughput, keep = _throughput(args.batch_size), _KeepModel(args)
    clock = models.TimeBudget(
        None if args.budget_minutes is None else 60 * args.budget_minutes,
        None if args.backup is None else args.backup / "progress",
    )
    callbacks = [throughput, keep.callback(), clock]
    if args.ema:
        # The averaged weights are in the model from each epoch's validation to the next
        # epoch's start, so KeepBest and the backup keep them; swapping back resumes training.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=validation is not None))
    if args.lr_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_elbo", mode="max", factor=0.5, patience=args.lr_patience, verbose=1
            )
        )
    epochs = args.epochs
    with contextlib.ExitStack() as stack:
        if args.backup is not None:
            args.backup.mkdir(exist_ok=True)
            (args.backup / "arguments.json").write_text(
                json.dumps(_run_arguments(args), indent=1) + "\n"
            )
            # The learning curve, one row per epoch, continued by a resumed run.
            callbacks.append(
                keras.callbacks.CSVLogger(str(args.backup / "history.csv"), append=True)
            )
            # Kept after the last epoch too: a rerun then trains no further and evaluates.
            callbacks.append(
                keras.callbacks.BackupAndRestore(
                    str(args.backup / "progress"), delete_checkpoint=False
                )
            )
            best = args.backup / "best"
        else:
            best = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tfnf-vae-")))
        best_kept = None
        if validation is not None:
            best_kept = models.KeepBest(
                best, monitor="val_elbo", mode="max", patience=args.patience
            )
            callbacks.append(best_kept)
            if args.patience is not None and best_kept.stopped_before():
                epochs = clock.epochs_done  # it stopped early: a rerun trains no further
        if clock.exhausted():
            epochs = clock.epochs_done  # its budget is spent: a rerun trains no further
            print(f"the backup's budget is spent after {epochs} epochs; evaluating", flush=True)
        first = _backed_up_epoch(args.backup)
        try:
            history = model.fit(
                _epoch_orders(train, args.batch_size, args.seed, first, epochs),
                epochs=epochs,
                steps_per_epoch=math.ceil(num_train / args.batch_size),
                validation_data=None if validation is None else (validation,),
                validation_batch_size=args.batch_size,
                callbacks=callbacks,
                verbose=1,
            )
        except KeyboardInterrupt:
            print(f"tfnf vae: {keep.interrupted()}", file=sys.stderr)
            return 130
        except models.NonFiniteLossError as error:
            print(f"tfnf vae: {error}", file=sys.stderr)
            print(f"tfnf vae: {_kept_after_divergence(args, model, best_kept)}", file=sys.stderr)
            return 1
    epochs_run, train_seconds = clock.epochs_done, clock.seconds_spent
    resumed = epochs_run - len(history.history.get("loss", []))
    print(
        f"trained {epochs_run} epoch{'s' * (epochs_run != 1)} in {train_seconds:.1f} s"
        + (f" ({resumed} of them before this run resumed)" if resumed else "")
        + (f", {throughput.rate:.0f} images/s after the first step" if throughput.images else "")
        + ("; the time budget is spent" if clock.spent else "")
    )
    if validation is not None and best_kept.best_epoch is not None:
        stopped = (
            f"; stopped early after epoch {best_kept.stopped_epoch + 1}"
            if best_kept.stopped_epoch is not None
            else ""
        )
        print(
            f"best validation ELBO {best_kept.best:.2f} nats at epoch {best_kept.best_epoch + 1}, "
            f"its weights restored{stopped}"
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
    if args.json:
        best_epoch = None if validation is None else best_kept.best_epoch
        _append_json(
            args.json,
            {
                "flow": args.flow,
                "num_layers": args.layers,
                "seed": args.seed,
                "epochs": args.epochs,
                "epochs_run": epochs_run,
                "best_epoch": None if best_epoch is None else best_epoch + 1,
                "train_seconds": round(train_seconds, 1),
                "nll": nll.mean,
                "nll_se": nll.standard_error,
                "elbo": elbo,
                # A rerun that only evaluates has no steps of its own: the whole run's average.
                "images_per_s": throughput.rate
                if math.isfinite(throughput.rate)
                else (epochs_run * num_train / train_seconds if train_seconds > 0 else None),
                "importance_samples": args.samples,
                "test_images": len(test),
                "arguments": _run_arguments(args),
                "date": time.strftime("%Y-%m-%d"),
                "machine": _machine(),
            },
        )
        print(f"appended to {args.json}")
    plotting.samples_and_reconstructions(model, test, args.seed).savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    if args.save:
        model.save(args.save)
        print(f"wrote {args.save}")
    return 0


def _append_json(path: Path, record: dict) -> None:
    """Append a record to a JSON list file (made if missing)."""
    records = json.loads(path.read_text()) if path.exists() and path.stat().st_size else []
    path.write_text(json.dumps([*records, record], indent=1) + "\n")


def _machine() -> str:
    from tfnf._machine import machine

    return machine()


def _csv_beside(out) -> Path:
    return Path(out).with_suffix(".csv")


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line (no usage block) and every default in the help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(minimum: int):
    def parse(text: str) -> int:
        try:
            return _checks.positive_int(int(text), "value", minimum=minimum)
        except ValueError:
            kind = _checks.integer_kind(minimum)
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None

    return parse


def _number(text: str) -> float:
    """The float `text` spells, NaN if it spells none (so every range check below refuses it)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _rate(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        return _checks.seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [0, 2**31 - 1], got {text!r}"
        ) from None


def _output(suffixes: tuple):
    """A path the command can write: a known suffix, in a directory that exists and is writable."""

    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a directory; name a file in it")
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{text!r} must end in {' or '.join(suffixes)}: the file is written as named"
            )
        folder = path.parent
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"the directory of {text!r} does not exist")
        if not os.access(folder, os.W_OK):
            raise argparse.ArgumentTypeError(f"the directory of {text!r} is not writable")
        return path

    return parse


def _directory(text: str) -> Path:
    """A directory the command may make or reuse: in a writable directory, not a file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; name a directory")
    folder = path if path.exists() else path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the directory holding {text!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{str(folder)!r} is not writable")
    return path


def _existing(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return path


def _training_options(command, steps: int, batch: int, rate: float) -> None:
    command.add_argument("--steps", type=_integer(1), default=steps, help="training steps")
    command.add_argument("--batch-size", type=_integer(1), default=batch, help="samples per step")
    command.add_argument(
        "--learning-rate", type=_rate, default=rate, help="Adam's initial learning rate"
    )
    command.add_argument(
        "--no-decay",
        action="store_true",
        help="keep the learning rate constant (otherwise: a cosine decay to a tenth of it)",
    )
    command.add_argument(
        "--no-anneal",
        action="store_true",
        help="leave out the annealing (otherwise, for planar and radial flows: beta_t = "
        "min(1, 0.01 + t / (steps / 2)) along the path from N(0, I) to the target)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tfnf", description="Variational inference with normalizing flows.")
    commands = parser.add_subparsers(dest="command", required=True)
    figure, keras_file = _output(FIGURE_SUFFIXES), _output((".keras",))

    fit = commands.add_parser("fit", help="fit a flow to a built-in 2-D target and plot it")
    fit.add_argument("target", choices=names.TARGETS, help="built-in target (paper's Table 1)")
    fit.add_argument("--flow", choices=names.FLOWS, default="planar", help="flow family")
    fit.add_argument("--layers", type=_integer(0), default=32, help="flow length K")
    fit.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision")
    fit.add_argument("--seed", type=_seed, default=0, help="seed of the weights and the sampler")
    fit.add_argument("--out", type=figure, default="<target>.png", help="picture to write")
    fit.add_argument(
        "--save", type=keras_file, default=None, help="also save the model to this .keras file"
    )
    fit.add_argument("--verbose", action="store_true", help="a progress bar per epoch")
    _training_options(fit, steps=20000, batch=4096, rate=1e-2)
    fit.set_defaults(run=_fit)

    figure3 = commands.add_parser(
        "figure3", help="the paper's Figure 3: U1..U4 fitted with K = 2, 8, 32"
    )
    figure3.add_argument("--out", type=figure, default=Path("figure3.png"), help="picture to write")
    figure3.add_argument(
        "--targets", nargs="+", choices=names.TARGETS, default=list(names.TABLE_1), help="rows"
    )
    figure3.add_argument(
        "--layers", nargs="+", type=_integer(0), default=[2, 8, 32], help="flow lengths K"
    )
    figure3.add_argument("--flow", choices=names.FLOWS, default="planar", help="flow family")
    figure3.add_argument("--seed", type=_seed, default=0, help="seed of every fit")
    _training_options(figure3, steps=20000, batch=4096, rate=1e-2)
    figure3.set_defaults(run=_figure3)

    bound_vs_k = commands.add_parser(
        "bound-vs-k", help="the paper's Figure 3(d): bound against K, per flow"
    )
    bound_vs_k.add_argument(
        "--out",
        type=figure,
        default=Path("fig3d.png"),
        help="picture; the numbers go to the same name .csv",
    )
    bound_vs_k.add_argument(
        "--targets", nargs="+", choices=names.TARGETS, default=["U1"], help="targets"
    )
    bound_vs_k.add_argument(
        "--flows", nargs="+", choices=names.FLOWS, default=list(names.FLOWS), help="flows"
    )
    bound_vs_k.add_argument(
        "--layers", nargs="+", type=_integer(0), default=[2, 8, 32], help="flow lengths K"
    )
    bound_vs_k.add_argument(
        "--seeds", type=_integer(1), default=3, help="seeds per point, for the error bars"
    )
    _training_options(bound_vs_k, steps=500, batch=1024, rate=1e-2)
    bound_vs_k.set_defaults(run=_bound_vs_k)

    flow_vae = commands.add_parser(
        "vae",
        help="train the paper's DLGM with a flow posterior on binarised MNIST, estimate -ln p(x)",
    )
    flow_vae.add_argument(
        "--flow",
        choices=names.AMORTIZED_FLOWS + names.TARGET_INFORMED_FLOWS,
        default="planar",
        help="flow family (hamiltonian: --layers leapfrog steps on ln p(x, z), the HVAE)",
    )
    flow_vae.add_argument(
        "--layers",
        type=_integer(0),
        required=True,
        default=argparse.SUPPRESS,  # required: no default to show
        help="flow length K (0: the diagonal Gaussian); leapfrog steps L for hamiltonian",
    )
    flow_vae.add_argument(
        "--rank",
        type=_integer(1),
        default=None,
        help="sylvester only: the rank M of each map (default: --latent)",
    )
    flow_vae.add_argument(
        "--variant",
        choices=("orthogonal", "householder", "triangular"),
        default=None,
        help="sylvester only: how Q is made (default orthogonal)",
    )
    flow_vae.add_argument(
        "--head-units",
        type=_integer(1),
        default=None,
        help="the amortised maps' heads read the encoder's features through R shared units "
        "(a rank-R bottleneck; default: none, each head reads them)",
    )
    flow_vae.add_argument(
        "--planar-layers",
        type=_integer(0),
        default=0,
        help="hamiltonian only: amortised planar maps before the dynamics",
    )
    flow_vae.add_argument(
        "--step-size",
        type=_rate,
        default=None,
        help="hamiltonian only: the leapfrog step sizes' starting value (default 0.01)",
    )
    flow_vae.add_argument(
        "--epochs",
        type=_integer(1),
        required=True,
        default=argparse.SUPPRESS,  # required: no default to show
        help="passes over the training images",
    )
    flow_vae.add_argument("--batch-size", type=_integer(1), default=100, help="images per update")
    flow_vae.add_argument(
        "--hidden", type=_integer(1), default=400, help="units of each maxout layer"
    )
    flow_vae.add_argument("--latent", type=_integer(1), default=40, help="latent variables")
    flow_vae.add_argument(
        "--optimizer",
        choices=["adamax", "adam", "rmsprop"],
        default="adamax",
        help="optimizer (the recipe: Adamax, as the Sylvester-flow authors train)",
    )
    flow_vae.add_argument("--learning-rate", type=_rate, default=5e-4, help="the optimizer's rate")
    flow_vae.add_argument(
        "--warmup-epochs",
        type=_integer(0),
        default=None,
        help="epochs of linear KL warm-up, beta from 0 to 1 on ln q - ln p(z) (0: none; "
        "default 50, none with --anneal)",
    )
    flow_vae.add_argument(
        "--steps-per-execution",
        type=_integer(1),
        default=10,
        help="training steps per call of the compiled step (the same updates; fewer calls)",
    )
    flow_vae.add_argument(
        "--lr-patience",
        type=_integer(0),
        default=None,
        help="halve the learning rate after this many epochs without a better validation ELBO "
        "(0: never; default 20 when validating)",
    )
    flow_vae.add_argument(
        "--budget-minutes",
        type=_rate,
        default=None,
        help="stop training before its wall-clock time passes this, counted across resumed runs",
    )
    flow_vae.add_argument(
        "--momentum", type=_fraction, default=0.0, help="RMSprop's momentum (the paper: 0.9)"
    )
    flow_vae.add_argument(
        "--clip-norm",
        type=_rate,
        default=None,
        help="clip each gradient to this global norm",
    )
    flow_vae.add_argument(
        "--weight-decay",
        type=_rate,
        default=None,
        help="the optimizer's decoupled weight decay (None: none)",
    )
    flow_vae.add_argument(
        "--encoder-noise",
        type=_non_negative,
        default=0.0,
        help="in training, the encoder sees each image plus N(0, sigma^2) noise (0: none)",
    )
    flow_vae.add_argument(
        "--ema",
        type=_fraction,
        default=None,
        help="validate, keep and evaluate an exponential moving average of the weights with "
        "this momentum (Polyak averaging; None: the weights as trained)",
    )
    flow_vae.add_argument(
        "--anneal",
        action="store_true",
        help="the paper's beta_t = min(1, 0.01 + t / 10000) on ln p(x, z), instead of the KL "
        "warm-up",
    )
    flow_vae.add_argument(
        "--data",
        type=_existing,
        default=None,
        help="binarized_mnist.npz, or a directory (None: $TFNF_DATA_DIR, the cache, a download)",
    )
    flow_vae.add_argument(
        "--samples", type=_integer(1), default=200, help="importance samples per test image"
    )
    flow_vae.add_argument(
        "--validation-images",
        type=_integer(0),
        default=10_000,
        help="validate each epoch on N images of the valid split (0: none); the weights of the "
        "best validation ELBO are kept and restored at the end",
    )
    flow_vae.add_argument(
        "--patience",
        type=_integer(1),
        default=None,
        help="stop after this many epochs without a better validation ELBO (None: never)",
    )
    flow_vae.add_argument(
        "--backup",
        type=_directory,
        default=None,
        help="keep the run's progress here each epoch; rerun with the same arguments to resume",
    )
    flow_vae.add_argument(
        "--eval-images",
        type=_integer(1),
        default=10_000,
        help="estimate -ln p(x) on N test images spread evenly over the split",
    )
    flow_vae.add_argument(
        "--out",
        type=figure,
        default="vae_<flow>_k<K>.png",
        help="picture of samples and reconstructions",
    )
    flow_vae.add_argument(
        "--table",
        type=_output((".csv", ".md")),
        default=None,
        help="append the result row to this .csv or .md table",
    )
    flow_vae.add_argument(
        "--json",
        type=_output((".json",)),
        default=None,
        help="append the run's record (settings, epochs, best epoch, times, -ln p(x), ELBO) to "
        "this JSON list",
    )
    flow_vae.add_argument(
        "--save", type=keras_file, default=None, help="also save the model to this .keras file"
    )
    flow_vae.add_argument(
        "--seed", type=_seed, default=0, help="seed of the weights, the data order and the sampler"
    )
    flow_vae.set_defaults(run=_vae)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with the default output paths filled in and checked like given ones."""
    parser = _parser()
    args = parser.parse_args(argv)
    defaults = {  # the placeholders the help shows, and what they stand for
        "<target>.png": lambda: f"{args.target}.png",
        "vae_<flow>_k<K>.png": lambda: f"vae_{args.flow}_k{args.layers}.png",
    }
    if str(args.out) in defaults:
        try:
            args.out = _output(FIGURE_SUFFIXES)(defaults[str(args.out)]())
        except argparse.ArgumentTypeError as error:
            parser.exit(2, f"tfnf {args.command}: error: argument --out: {error}\n")
    if args.command == "bound-vs-k":
        try:
            _output((".csv",))(str(_csv_beside(args.out)))
        except argparse.ArgumentTypeError as error:
            parser.exit(2, f"tfnf {args.command}: error: argument --out: {error}\n")
    if args.command == "vae":
        if args.patience is not None and not args.validation_images:
            parser.exit(
                2,
                "tfnf vae: error: argument --patience: needs validation "
                "(--validation-images > 0)\n",
            )
        if args.lr_patience is None:
            args.lr_patience = 20 if args.validation_images else 0
        if args.lr_patience and not args.validation_images:
            parser.exit(
                2,
                "tfnf vae: error: argument --lr-patience: needs validation "
                "(--validation-images > 0); 0 keeps the rate\n",
            )
        if args.anneal and args.warmup_epochs:
            parser.exit(
                2,
                "tfnf vae: error: argument --warmup-epochs: --anneal is the paper's schedule of "
                "the same beta; choose one\n",
            )
        if args.warmup_epochs is None:
            args.warmup_epochs = 0 if args.anneal else 50
        for flow, options in FLOW_RUN_ARGUMENTS.items():
            for option in options if args.flow != flow else ():
                if getattr(args, option) not in (0, None):
                    parser.exit(
                        2,
                        f"tfnf vae: error: argument --{option.replace('_', '-')}: an option of "
                        f"--flow {flow}, not {args.flow}\n",
                    )
        if args.rank is not None and args.rank > args.latent:
            parser.exit(
                2,
                f"tfnf vae: error: argument --rank: at most --latent ({args.latent}), "
                f"got {args.rank}\n",
            )
        amortized_maps = args.planar_layers if args.flow == "hamiltonian" else args.layers
        if args.head_units is not None and not amortized_maps:
            parser.exit(
                2,
                "tfnf vae: error: argument --head-units: shapes the heads of amortised maps, and "
                "this model has none (--layers 0, or hamiltonian without --planar-layers)\n",
            )
        if args.flow == "hamiltonian" and args.layers == 0:
            parser.exit(
                2,
                "tfnf vae: error: argument --layers: the Hamiltonian flow needs at least one "
                "leapfrog step\n",
            )
        if args.backup is not None:
            mismatch = _backup_mismatch(args)
            if mismatch:
                parser.exit(2, f"tfnf vae: error: argument --backup: {mismatch}\n")
    return args


# What defines a `tfnf vae` run: a backup resumes only a run with the same ones. --epochs may
# grow (to train on), and what is done after training (evaluation, outputs) may change.
RUN_ARGUMENTS = (
    "flow",
    "layers",
    "batch_size",
    "hidden",
    "latent",
    "optimizer",
    "learning_rate",
    "momentum",
    "clip_norm",
    "weight_decay",
    "ema",
    "encoder_noise",
    "anneal",
    "warmup_epochs",
    "lr_patience",
    "budget_minutes",
    "validation_images",
    "seed",
)


# ... and each flow's own options (kept out of other runs' records, which predate them).
FLOW_RUN_ARGUMENTS = {
    "hamiltonian": ("planar_layers", "step_size"),
    "sylvester": ("rank", "variant"),
}


# ... and options newer than the records, kept in a run's arguments only where they are set.
OPTIONAL_RUN_ARGUMENTS = ("head_units",)


def _run_arguments(args: argparse.Namespace) -> dict:
    names_ = RUN_ARGUMENTS + FLOW_RUN_ARGUMENTS.get(args.flow, ())
    names_ += tuple(name for name in OPTIONAL_RUN_ARGUMENTS if getattr(args, name) is not None)
    return {name: getattr(args, name) for name in names_}


def _backup_mismatch(args: argparse.Namespace) -> str | None:
    """Why the backup at args.backup belongs to another run, or None (also when there is none)."""
    record = Path(args.backup) / "arguments.json"
    if not record.exists():
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        return f"{str(record)!r} is unreadable ({error}); remove the directory to start afresh"
    here = _run_arguments(args)
    here.update({name: getattr(args, name) for name in OPTIONAL_RUN_ARGUMENTS})
    differ = [
        f"--{name.replace('_', '-')} {saved.get(name)!r} there, {value!r} here"
        for name, value in here.items()
        if saved.get(name) != value
    ]
    if not differ:
        return None
    return (
        f"{str(args.backup)!r} holds a run with other arguments ({'; '.join(differ)}); "
        "rerun with those, or name another directory"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"tfnf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
