"""The GPU figures of benchmarks/gpu_check.sh: step times and one DLGM epoch, on GPU:0.

    python benchmarks/gpu_check.py            # appends to RESULTS.md and results/gpu_check.json
    python benchmarks/gpu_check.py --quick    # fewer steps, prints only (also runs on a CPU)

Planar K = 32 on a fixed base at D = 2, 16, 128, 1024 (U1 at D = 2, a Gaussian above),
batch 4,096, 10 steps per execution, XLA: the median ms per step after the first
execution, and the time to the first step. Then one epoch of the DLGM (K = 10, the
recipe of `tfnf vae`) on 50,000 binary images of MNIST's density: images per second.
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_step import gaussian_target, measure  # noqa: E402


def dlgm_epoch(images: int) -> float:
    import keras

    import tfnf

    x = (np.random.default_rng(0).random((images, 784)) < 0.13).astype("float32")
    keras.utils.set_random_seed(0)
    model = tfnf.models.FlowVAE(num_layers=10, kl_warmup=25_000, seed=0)
    model.compile(optimizer=keras.optimizers.Adamax(5e-4))
    model.fit(x[:1000], batch_size=100, epochs=1, verbose=0)  # trace and compile
    start = time.perf_counter()
    model.fit(x, batch_size=100, epochs=1, verbose=0)
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps, images = (40, 2_000) if args.quick else (300, 50_000)
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    name = (
        tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get(
            "device_name", "GPU"
        )
        if device == "/GPU:0"
        else "CPU (no GPU visible)"
    )
    rows = []
    with tf.device(device):
        for d in (2, 16, 128, 1024):
            target = "U1" if d == 2 else gaussian_target(d)
            first, ms = measure(
                32, event_size=d, steps=steps, steps_per_execution=10, target=target
            )
            rows.append({"D": d, "ms_per_step": ms, "first_step_s": first})
            print(f"K = 32, D = {d}: {ms:.3f} ms/step, first step {first:.2f} s", flush=True)
        rate = dlgm_epoch(images)
    print(f"DLGM K = 10, one epoch of {images:,} images: {rate:,.0f} images/s")
    if args.quick:
        return
    lines = [
        f"\n## gpu_check.py, {datetime.date.today()}, {name}, TF {tf.__version__}\n",
        "Planar K = 32, fixed base, batch 4,096, 10 steps per execution, XLA:\n",
        "| D | ms/step | first step (s) |",
        "|---|---|---|",
        *[f"| {r['D']} | {r['ms_per_step']:.3f} | {r['first_step_s']:.2f} |" for r in rows],
        f"\nDLGM K = 10 (the recipe), one epoch of {images:,} images: {rate:,.0f} images/s.",
    ]
    with (HERE / "RESULTS.md").open("a") as out:
        out.write("\n".join(lines) + "\n")
    path = HERE / "results" / "gpu_check.json"
    records = json.loads(path.read_text()) if path.exists() else []
    records.append(
        {
            "date": str(datetime.date.today()),
            "device": name,
            "tf": tf.__version__,
            "steps": rows,
            "dlgm_images_per_s": rate,
        }
    )
    path.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
