"""Training-step speed: ms per step and time to the first step (trace + compile).

    pip install torch==2.13.0                    # the CPU build, for the baseline
    python benchmarks/train_step.py              # all tables, appends to RESULTS.md
    python benchmarks/train_step.py --quick      # fewer steps, prints only
    python benchmarks/train_step.py --against ../old-tree   # K = 32 here and in another checkout

Each tfnf figure is the median over timed steps after warm-up, measured through
`model.fit` (so Keras' own per-step cost is included), XLA on. The PyTorch
baseline (benchmarks/baselines/planar_torch.py, the seed algorithm) runs in the
same process, alternating with tfnf in rounds, so both see the same machine load.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfnf  # noqa: E402

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")
RECORDS = pathlib.Path(__file__).with_name("results") / "train_step_against.json"
sys.path.insert(0, str(pathlib.Path(__file__).parent))  # for baselines/


class _Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start, self.ends = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def measure(
    num_layers: int,
    event_size: int = 2,
    batch_size: int = 4096,
    steps: int = 300,
    steps_per_execution: int = 1,
    flow: str = "planar",
    target="U1",
) -> tuple:
    """(seconds to the first step, median ms per step) of a fresh model."""
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=event_size, num_layers=num_layers, flow=flow, target_log_prob=target, seed=0
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=steps_per_execution)
    clock = _Clock()
    model.fit(
        steps=steps, steps_per_epoch=steps, batch_size=batch_size, verbose=0, callbacks=[clock]
    )
    ends = np.array(clock.ends)
    per_call = np.diff(ends[len(ends) // 5 :])
    return ends[0] - clock.start, 1000 * np.median(per_call) / steps_per_execution


def side_by_side(num_layers: int, rounds: int, steps: int, steps_per_execution: int) -> tuple:
    """Median ms/step of tfnf and of the PyTorch seed algorithm, alternating in rounds."""
    import torch
    from baselines import planar_torch

    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=num_layers, target_log_prob="U1", seed=0, trainable_base=False
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=steps_per_execution)
    model.fit(steps=steps, steps_per_epoch=steps, batch_size=4096, verbose=0)  # trace and compile
    torch_model, optimizer = planar_torch.train(num_layers, "U1", steps=3)
    ours, theirs = [], []
    for _ in range(rounds):
        clock = _Clock()
        model.fit(steps=steps, steps_per_epoch=steps, batch_size=4096, verbose=0, callbacks=[clock])
        ours.append(1000 * np.median(np.diff(clock.ends)) / steps_per_execution)
        start = time.perf_counter()
        for _ in range(steps // 4):
            planar_torch.step(torch_model, optimizer, planar_torch.u1, 4096)
        theirs.append(1000 * (time.perf_counter() - start) / (steps // 4))
    return float(np.median(ours)), float(np.median(theirs)), torch.get_num_threads()


_COLD = """
import os, sys, time
start = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, tfnf
imported = time.perf_counter()
sys.path.insert(0, {path!r})
from train_step import measure
first, _ = measure({num_layers}, steps=10, steps_per_execution=10)
print(imported - start, first, time.perf_counter() - start)
"""


def cold_start(num_layers: int) -> tuple:
    """(import s, first step s, process start to first step s) in a fresh Python process.

    `measure` in this process runs after other models have warmed TF and XLA up;
    a user's first model in a new process also pays for that once.
    """
    code = _COLD.format(path=str(pathlib.Path(__file__).parent), num_layers=num_layers)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    imported, first, total = (float(x) for x in out.split()[-3:])
    return imported, first, total


_ONE_TREE = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [{tree!r}, {benchmarks!r}]
import tfnf
assert tfnf.__file__.startswith({tree!r}), tfnf.__file__
from train_step import measure
print(measure({num_layers}, steps={steps}, steps_per_execution=10)[1])
"""


def against(tree: str, num_layers: int = 32, rounds: int = 5, steps: int = 400) -> tuple:
    """Median ms/step of this checkout's tfnf and of the one at `tree`, K maps, in fresh processes.

    The two alternate round by round, so both see the same machine load; `tree` is
    e.g. a `git worktree` of an earlier commit, whose own benchmarks/train_step.py
    provides the same `measure`.
    """
    here = str(pathlib.Path(__file__).resolve().parents[1])
    times = {here: [], str(pathlib.Path(tree).resolve()): []}
    for _ in range(rounds):
        for root, ms in times.items():
            code = _ONE_TREE.format(
                tree=root,
                benchmarks=os.path.join(root, "benchmarks"),
                num_layers=num_layers,
                steps=steps,
            )
            out = subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=root
            ).stdout
            ms.append(float(out.split()[-1]))
            print(f"{root}: {ms[-1]:.3f} ms/step", flush=True)
    (_, ours), (_, theirs) = times.items()
    return ours, theirs


def against_record(commits: list, ours: list, theirs: list, rounds: int) -> dict:
    """The JSON record of one --against run: both checkouts' ms/step round by round."""
    return {
        "benchmark": "train_step.py --against",
        "date": str(datetime.date.today()),
        "machine": machine(),
        "num_layers": 32,
        "event_size": 2,
        "batch_size": 4096,
        "steps_per_execution": 10,
        "rounds": rounds,
        "this": {"commit": commits[0], "ms_per_step": ours, "median": float(np.median(ours))},
        "other": {"commit": commits[1], "ms_per_step": theirs, "median": float(np.median(theirs))},
    }


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def append_record(path: pathlib.Path, record: dict) -> None:
    """Append a record to a JSON list file under benchmarks/results/ (made if missing)."""
    path.parent.mkdir(exist_ok=True)
    records = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*records, record], indent=1) + "\n")


def gaussian_target(event_size: int):
    scale = tf.linspace(0.5, 2.0, event_size)
    return tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(event_size), scale_diag=scale)


def record(lines) -> None:
    """Append a table's lines to RESULTS.md."""
    with RESULTS.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}")


def machine() -> str:
    from tfnf._machine import machine as described

    return described()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer steps, print only")
    parser.add_argument(
        "--against",
        metavar="TREE",
        default=None,
        help="only the K = 32 step, here and in the checkout at TREE, alternating "
        "in fresh processes; appends both to RESULTS.md",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=5, help="rounds for --against (default 5)"
    )
    args = parser.parse_args()
    if args.against:
        ours, theirs = against(args.against, rounds=args.rounds)
        commits = [
            subprocess.run(
                ["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            for tree in (str(pathlib.Path(__file__).resolve().parents[1]), args.against)
        ]
        record(
            [
                f"\n## train_step.py --against, {datetime.date.today()}, {machine()}\n",
                "Planar K = 32, U1, batch 4096, D = 2, 10 steps/execution, 400 steps a run, each "
                f"run in a fresh process, the two checkouts alternating ({args.rounds} rounds).\n",
                "| checkout | ms/step, median (min - max) |",
                "|---|---|",
                *[
                    f"| {name} ({commit}) | {np.median(ms):.3f} ({min(ms):.3f} - {max(ms):.3f}) |"
                    for name, commit, ms in (
                        ("this", commits[0], ours),
                        (args.against, commits[1], theirs),
                    )
                ],
            ]
        )
        append_record(RECORDS, against_record(commits, ours, theirs, args.rounds))
        return
    steps = 100 if args.quick else 400
    lines = [
        f"\n## train_step.py, {datetime.date.today()}, {machine()}\n",
        "Planar flow on U1, batch 4096, D = 2, Adam, XLA, through `model.fit`.\n",
        "| K | steps/execution | first step (s) | ms/step |",
        "|---|---|---|---|",
    ]
    for num_layers in (2, 8, 32):
        for per_execution in (1, 10):
            first, ms = measure(num_layers, steps=steps, steps_per_execution=per_execution)
            lines.append(f"| {num_layers} | {per_execution} | {first:.2f} | {ms:.2f} |")
            print(lines[-1], flush=True)
    imported, first, total = cold_start(32)
    lines += [
        "",
        "The first model in a fresh process (K = 32, 10 steps/execution): "
        f"`import tfnf` {imported:.2f} s, then {first:.2f} s from `fit` to the end of the first "
        f"step ({total:.2f} s from process start).",
    ]
    print(lines[-1], flush=True)
    lines += [
        "",
        "Cost against K (D = 2) and against D (K = 8, diagonal Gaussian target), "
        "batch 4096, 10 steps/execution.\n",
        "| K | D | ms/step |",
        "|---|---|---|",
    ]
    for num_layers in (4, 8, 16, 32, 64):
        _, ms = measure(num_layers, steps=steps, steps_per_execution=10)
        lines.append(f"| {num_layers} | 2 | {ms:.2f} |")
        print(lines[-1], flush=True)
    for event_size in (2, 16, 128, 1024):
        _, ms = measure(
            8,
            event_size=event_size,
            steps=steps,
            steps_per_execution=10,
            target=gaussian_target(event_size),
        )
        lines.append(f"| 8 | {event_size} | {ms:.2f} |")
        print(lines[-1], flush=True)
    try:
        import torch  # noqa: F401
    except ImportError:
        lines.append("\nPyTorch baseline skipped: torch is not installed.")
    else:
        lines += [
            "",
            "Against the seed algorithm in PyTorch (benchmarks/baselines/planar_torch.py), planar, "
            "U1, batch 4096, D = 2, fixed N(0, I) base for both, alternating in rounds in one "
            "process.\n",
            "| K | tfnf steps/execution | tfnf ms/step | PyTorch ms/step | speed-up |",
            "|---|---|---|---|---|",
        ]
        for num_layers in (2, 8, 32):
            for per_execution in (1, 10):
                ours, theirs, threads = side_by_side(
                    num_layers,
                    rounds=3 if args.quick else 5,
                    steps=steps,
                    steps_per_execution=per_execution,
                )
                lines.append(
                    f"| {num_layers} | {per_execution} | {ours:.2f} | {theirs:.2f} "
                    f"| {theirs / ours:.1f}x |"
                )
                print(lines[-1], flush=True)
        lines.append(f"\nPyTorch {torch.__version__}, {threads} threads.")
    if not args.quick:
        record(lines)


if __name__ == "__main__":
    main()
