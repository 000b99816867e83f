"""tfnf against the fastest idiomatic planar-flow step in each framework, side by side.

    pip install -e ".[peers]"                 # JAX, optax, flowjax, PyTorch, normflows, Pyro
    python benchmarks/peers/run.py            # every size, 3 alternating rounds; records
    python benchmarks/peers/run.py --quick    # K = 32, D = 2 only, one round, few steps; prints

Every measurement is a fresh process running one script of this folder (the
task: `common.py`), so each pays its own import and compilation, as a user's
first run does. Within a round the peers run in turn, the order reversed every
other round, so all see the same machine load; the table gives the median over
rounds (min - max) of ms per step and of the time from building the model to the
end of its first step. A peer that is not installed is left out, and said to be.

Records: a section in benchmarks/RESULTS.md and a JSON object appended to
benchmarks/results/peers.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE.parent / "RESULTS.md"
RECORDS = HERE.parent / "results" / "peers.json"

# name: (script, extra arguments, module it needs, steps per call it takes)
PEERS = {
    "tfnf, 10 steps/execution": ("tfnf_planar.py", ["--per-call", "10"], "tfnf"),
    "JAX [D, B], 10 steps/call": ("jax_planar.py", ["--layout", "DB", "--per-call", "10"], "jax"),
    "JAX [D, B], 1 step/call": ("jax_planar.py", ["--layout", "DB"], "jax"),
    "JAX [B, D], 10 steps/call": ("jax_planar.py", ["--layout", "BD", "--per-call", "10"], "jax"),
    "PyTorch compiled [D, B]": ("torch_planar.py", ["--layout", "DB", "--compile"], "torch"),
    "PyTorch compiled [B, D]": ("torch_planar.py", ["--layout", "BD", "--compile"], "torch"),
    "PyTorch eager [D, B]": ("torch_planar.py", ["--layout", "DB"], "torch"),
    "flowjax planar_flow, 10 steps/call": ("flowjax_planar.py", ["--per-call", "10"], "flowjax"),
    "normflows reverse_kld": ("normflows_planar.py", [], "normflows"),
    "Pyro Planar": ("pyro_planar.py", [], "pyro"),
}
SLOW = {"PyTorch eager [D, B]", "normflows reverse_kld", "Pyro Planar"}  # fewer timed steps
# (K, D, batch): the sizes
SIZES = [
    (32, 2, 4096),
    (8, 16, 4096),
    (8, 128, 4096),
    (8, 1024, 4096),
    (32, 40, 100),
    (32, 40, 4096),
]


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def measure(peer: str, size: tuple, steps: int) -> dict:
    script, extra, _ = PEERS[peer]
    k, d, batch = size
    steps = max(20, steps // 5) if peer in SLOW else steps
    command = [sys.executable, str(HERE / script), "--layers", str(k), "--dim", str(d)]
    command += ["--batch", str(batch), "--steps", str(steps), *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(HERE)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{peer} at {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    from tfnf._machine import machine as described

    return described(tensorflow=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), help="a subset of PEERS")
    args = parser.parse_args()
    sizes = SIZES
    if args.quick:
        sizes, args.rounds, args.steps = SIZES[:1], 1, 40
    peers = [p for p in args.peers if installed(PEERS[p][2])]
    missing = [p for p in args.peers if p not in peers]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    runs = {(p, s): [] for p in peers for s in sizes}
    for r in range(args.rounds):
        order = peers if r % 2 == 0 else peers[::-1]
        for size in sizes:
            for peer in order:
                result = measure(peer, size, args.steps)
                runs[peer, size].append(result)
                print(
                    f"round {r + 1}, K = {size[0]}, D = {size[1]}, batch {size[2]}: {peer}: "
                    f"{result['ms_per_step']:.3f} ms/step, "
                    f"first step {result['first_step_s']:.2f} s",
                    flush=True,
                )
    lines = [
        f"\n## peers/run.py, {datetime.date.today()}, {machine()}\n",
        "Planar flow on a fixed N(0, I) base, Adam 1e-2, reverse KL (U1 at D = 2, a Gaussian "
        f"above); each run a fresh process, median of {args.rounds} alternating rounds "
        f"(min - max); {args.steps} timed steps ({max(20, args.steps // 5)} for eager PyTorch, "
        "normflows, Pyro). First step: from building the model to the end of its first step.\n",
    ]
    summary = {}
    for size in sizes:
        k, d, batch = size
        lines += [
            f"K = {k}, D = {d}, batch {batch}:\n",
            "| peer | ms/step | first step (s) |",
            "|---|---|---|",
        ]
        medians = {}
        for peer in peers:
            ms = [x["ms_per_step"] for x in runs[peer, size]]
            first = [x["first_step_s"] for x in runs[peer, size]]
            medians[peer] = statistics.median(ms)
            lines.append(
                f"| {peer} | {statistics.median(ms):.3f} ({min(ms):.3f} - {max(ms):.3f}) | "
                f"{statistics.median(first):.2f} |"
            )
        ours = [p for p in medians if p.startswith("tfnf")]
        others = {p: v for p, v in medians.items() if not p.startswith("tfnf")}
        if ours and others:
            best = min(others, key=others.get)
            ratio = others[best] / medians[ours[0]]
            summary[f"K={k},D={d},B={batch}"] = {"best_peer": best, "speedup": ratio}
            lines.append(f"\ntfnf is {ratio:.2f}x the best peer ({best}).\n")
    print("\n".join(lines))
    if args.quick:
        return
    with RESULTS.open("a") as out:
        out.write("\n".join(lines) + "\n")
    RECORDS.parent.mkdir(exist_ok=True)
    records = json.loads(RECORDS.read_text()) if RECORDS.exists() else []
    records.append(
        {
            "date": str(datetime.date.today()),
            "machine": machine(),
            "rounds": args.rounds,
            "steps": args.steps,
            "runs": {f"{peer} | K={s[0]},D={s[1]},B={s[2]}": v for (peer, s), v in runs.items()},
            "summary": summary,
        }
    )
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
