"""The physical limit of the planar step at each of run.py's sizes, and tfnf's distance from it.

    python benchmarks/peers/limits.py            # measures this CPU, records
    python benchmarks/peers/limits.py --quick    # smaller probes; prints only

The step (common.py's task) is element-wise work over a [D, B] batch for each of
the K maps, forward and backward, plus the base noise and the target. This script
measures what this CPU does per second under XLA, alone and on quiet cores:

- float32 arithmetic: a [1024, 1024] x [1024, 1024] matrix product (the machine's
  best case: every number reused from cache);
- memory, at each size's working set: passes x <- a x + b over an array of D x B
  numbers in one compiled loop (read and write; from the caches where it fits them; for
  small arrays the rate includes XLA's cost of a kernel, as a map-by-map step pays it);
- transcendental functions: XLA's tanh, log and erfinv over 4M numbers, numbers per
  second (XLA's own approximations: a hand-written loop with cheaper ones goes lower, as
  the fused C loop that runs K = 32, D = 2 in 0.10 ms a step shows);

and counts, per step, what the step cannot avoid:

- arithmetic: per map and sample, 4 D multiply-adds forward (w.z, z + u t) and 10 D
  backward (recovering z, u.g, the update of g, the two parameter gradients), as
  floating-point operations 2 x 14 K D B; the target's log-density and its gradient
  (3 D B at D > 2); per map and sample one tanh and one log; per draw one erfinv;
- memory, two ways: fused (all K maps in one pass over each sample, as a hand-written
  C loop does: only the noise [D, B] is written and read, and t [K, B] kept) and map by
  map (as XLA, JAX and PyTorch run it: each map reads and writes its [D, B] arrays, 2
  forward and 5 backward, 4 bytes a number).

The floor is the larger of the arithmetic's and the traffic's time, each at the measured
rate (traffic at the rate measured for that working set). tfnf's ms/step is the latest
peers/run.py record.

Records: a section in benchmarks/RESULTS.md, a JSON object appended to
benchmarks/results/limits.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE.parent / "RESULTS.md"
RECORDS = HERE.parent / "results" / "limits.json"
PEERS = HERE.parent / "results" / "peers.json"
SIZES = [(32, 2, 4096), (8, 16, 4096), (8, 128, 4096), (8, 1024, 4096), (32, 40, 100)]
SIZES += [(32, 40, 4096)]


def best_seconds(run, repeats: int) -> float:
    """The fastest of `repeats` calls of run() (each waits for its result), after a warm-up."""
    run().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run().numpy()
        times.append(time.perf_counter() - start)
    return min(times)


def rates(quick: bool = False) -> dict:
    """This CPU under XLA: float32 GFLOP/s, GB/s streamed, G numbers/s of each function."""
    rng = np.random.default_rng(0)
    n, repeats = (512, 3) if quick else (1024, 10)
    a, b = (tf.constant(rng.standard_normal((n, n)), tf.float32) for _ in range(2))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)[:1]), jit_compile=True)
    flops = 2 * n**3 / best_seconds(matmul, repeats)

    bandwidth = {}
    for numbers in sorted({d * batch for _, d, batch in SIZES}):
        passes = max(4, min(200, 2**26 // numbers // (4 if quick else 1)))
        x = tf.constant(rng.standard_normal(numbers), tf.float32)

        def stream(x=x, passes=passes):
            return tf.while_loop(
                lambda i, x: i < passes, lambda i, x: (i + 1, 0.5 * x + 1e-4), (0, x)
            )[1][:1]

        seconds = best_seconds(tf.function(stream, jit_compile=True), repeats)
        bandwidth[numbers] = 2 * 4 * numbers * passes / seconds / 1e9

    u = tf.constant(rng.uniform(-0.99, 0.99, 2**22), tf.float32)
    functions = {
        "tanh": tf.math.tanh,
        "log": lambda v: tf.math.log(2.0 + v),
        "erfinv": tf.math.erfinv,
    }
    per_second = {}
    for name, f in functions.items():
        run = tf.function(lambda f=f: tf.reduce_sum(f(u)), jit_compile=True)
        per_second[name] = u.shape[0] / best_seconds(run, repeats)
    return {"gflops": flops / 1e9, "gbytes_per_s": bandwidth} | {
        f"g{name}_per_s": v / 1e9 for name, v in per_second.items()
    }


def floors(k: int, d: int, batch: int, rate: dict) -> dict:
    """The step's unavoidable work at (K, D, B) and its time at the measured rates, in ms."""
    flops = 2 * 14 * k * d * batch + (3 * d * batch if d > 2 else 40 * batch)
    functions = (
        k * batch / rate["gtanh_per_s"]
        + k * batch / rate["glog_per_s"]
        + d * batch / rate["gerfinv_per_s"]
    ) / 1e9
    compute = flops / (rate["gflops"] * 1e9) + functions
    fused_bytes = 4 * (2 * d * batch + 2 * k * batch)
    mapwise_bytes = 4 * (7 * k * d * batch + 2 * d * batch)
    bandwidth = rate["gbytes_per_s"][d * batch] * 1e9
    return {
        "mflop": flops / 1e6,
        "fused_mb": fused_bytes / 1e6,
        "map_by_map_mb": mapwise_bytes / 1e6,
        "fused_floor_ms": 1e3 * max(compute, fused_bytes / bandwidth),
        "map_by_map_floor_ms": 1e3 * max(compute, mapwise_bytes / bandwidth),
    }


def latest_tfnf() -> tuple:
    """(date of the latest peers/run.py record, {size key: tfnf's median ms/step})."""
    if not PEERS.exists():
        return None, {}
    record = json.loads(PEERS.read_text())[-1]
    ours = {}
    for key, runs in record["runs"].items():
        peer, size = key.split(" | ")
        if peer.startswith("tfnf"):
            ours[size] = float(np.median([r["ms_per_step"] for r in runs]))
    return record["date"], ours


def machine() -> str:
    from tfnf._machine import machine as described

    return described(tensorflow=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rate = rates(args.quick)
    measured, ours = latest_tfnf()
    lines = [
        f"\n## peers/limits.py, {datetime.date.today()}, {machine()}\n",
        "The planar step's physical limit (method: the script's docstring). This CPU under "
        f"XLA, alone: {rate['gflops']:.0f} GFLOP/s (float32 matrix product), "
        "memory (read and write) at the working sets D x B: "
        + ", ".join(f"{n * 4 / 1e6:.3g} MB {v:.0f} GB/s" for n, v in rate["gbytes_per_s"].items())
        + f"; tanh {rate['gtanh_per_s']:.2f}, "
        f"log {rate['glog_per_s']:.2f}, erfinv {rate['gerfinv_per_s']:.2f} G numbers/s. "
        f"tfnf: the median of peers/run.py's record of {measured}.\n",
        "| K, D, batch | arithmetic (MFLOP) | traffic fused / map by map (MB) "
        "| floor fused (ms) | floor map by map (ms) | tfnf (ms) | tfnf / fused floor |",
        "|---|---|---|---|---|---|---|",
    ]
    record = {"date": str(datetime.date.today()), "machine": machine()}
    record["rates"] = rate | {"gbytes_per_s": {str(n): v for n, v in rate["gbytes_per_s"].items()}}
    record["sizes"] = {}
    for k, d, batch in SIZES:
        key = f"K={k},D={d},B={batch}"
        f = floors(k, d, batch, rate)
        tfnf_ms = ours.get(key)
        record["sizes"][key] = f | {"tfnf_ms": tfnf_ms}
        distance = f"{tfnf_ms / f['fused_floor_ms']:.0f}x" if tfnf_ms else "-"
        lines.append(
            f"| {k}, {d}, {batch} | {f['mflop']:.1f} | {f['fused_mb']:.2f} / "
            f"{f['map_by_map_mb']:.1f} | {f['fused_floor_ms']:.3f} | "
            f"{f['map_by_map_floor_ms']:.3f} | "
            f"{f'{tfnf_ms:.3f}' if tfnf_ms else '-'} | {distance} |"
        )
    print("\n".join(lines))
    if args.quick:
        return
    with RESULTS.open("a") as out:
        out.write("\n".join(lines) + "\n")
    records = json.loads(RECORDS.read_text()) if RECORDS.exists() else []
    RECORDS.write_text(json.dumps([*records, record], indent=1) + "\n")


if __name__ == "__main__":
    main()
