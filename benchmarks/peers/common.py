"""What every peer script shares: the task, its arguments and how a run is reported.

The task (issue 17's protocol): K planar maps on a fixed N(0, I) base in D
dimensions, Adam 1e-2, the reverse KL on a batch of B samples per step; the
target is U1 at D = 2 and N(0, diag(linspace(0.5, 2, D)^2)) above. A script
times `--steps` steps after the first call (which traces and compiles) and
prints one JSON line: ms per step (the median over calls of the time per call,
divided by the steps each call makes), seconds from building the model to the
end of the first step, and seconds to import the framework.
"""

import argparse
import json
import math
import statistics
import time

IMPORT_START = time.perf_counter()
LOG_2PI = math.log(2 * math.pi)
SOFTPLUS_INVERSE_OF_1 = math.log(math.e - 1)


def arguments(layouts=("BD",), per_call=True, flags=()) -> argparse.Namespace:
    """The task's arguments; `flags` names extra on/off switches of a peer (e.g. "compile")."""
    parser = argparse.ArgumentParser()
    for flag in flags:
        parser.add_argument(f"--{flag}", action="store_true")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--layout", choices=layouts, default=layouts[0])
    if per_call:
        parser.add_argument("--per-call", type=int, default=1, help="steps per compiled call")
    parser.add_argument("--check", action="store_true", help="print the loss after the steps")
    args = parser.parse_args()
    if not per_call:
        args.per_call = 1
    return args


def gaussian_scales(dim: int) -> list:
    """The target's standard deviations at D > 2: linspace(0.5, 2, D)."""
    return [0.5 + 1.5 * i / (dim - 1) for i in range(dim)] if dim > 1 else [1.0]


def timed(make, call, args, imported: float, block=lambda x: x) -> None:
    """Build with make(), run call() until `args.steps` steps are done; print the JSON record.

    call() makes `args.per_call` steps and returns something `block` waits on.
    """
    start = time.perf_counter()
    make()
    block(call())
    first = time.perf_counter() - start
    calls = max(1, args.steps // args.per_call)
    ends = [time.perf_counter()]
    for _ in range(calls):
        out = call()
        block(out)
        ends.append(time.perf_counter())
    per_call = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    record = {
        "ms_per_step": 1000 * statistics.median(per_call) / args.per_call,
        "first_step_s": first,
        "import_s": imported - IMPORT_START,
    }
    if args.check:
        record["loss"] = float(out if not isinstance(out, tuple) else out[-1])
    print(json.dumps(record))
