"""XLA's CPU compiler emits a small while loop as one kernel: on by default, for the flow sweeps.

A planar or radial `Stack` runs its K maps as one `tf.while_loop`. XLA's CPU runtime
runs such a loop's body kernel by kernel, each iteration dispatched from the runtime,
unless the loop is small: with the backend option
`xla_cpu_small_while_loop_byte_threshold=N` it compiles a loop whose buffers sum to under
N bytes into one kernel. tfnf sets N to 1 MB (benchmarks/RESULTS.md, "XLA's small-while-loop
threshold"): the K = 32, D = 40, batch-100 step ran 1.5x faster, every other size of
`benchmarks/peers/run.py` and the DLGM step the same as without, first steps included, and
the weights after training agree to float round-off (tests/test_xla_cache.py).

XLA reads XLA_FLAGS once, when the process first compiles, so this takes effect when tfnf
is imported before anything has been compiled; it holds for every XLA program of the
process (on a CPU; other backends ignore the option). Off with `TFNF_XLA_SMALL_LOOPS=0`. A
user's own `--xla_backend_extra_options` in XLA_FLAGS is left alone (XLA takes one).
"""

import os

OPTION = "--xla_backend_extra_options"
THRESHOLD_BYTES = 2**20
THRESHOLD = f"{OPTION}=xla_cpu_small_while_loop_byte_threshold={THRESHOLD_BYTES}"


def enable() -> bool:
    """Add the threshold to XLA_FLAGS; whether XLA_FLAGS holds it now.

    Off, tfnf's own threshold also leaves XLA_FLAGS, so that a child process started
    with `TFNF_XLA_SMALL_LOOPS=0` drops what its parent's import of tfnf added.
    """
    tokens = os.environ.get("XLA_FLAGS", "").split()
    if os.environ.get("TFNF_XLA_SMALL_LOOPS", "1").strip().lower() in ("0", "false", "off", "no"):
        if THRESHOLD in tokens:
            os.environ["XLA_FLAGS"] = " ".join(t for t in tokens if t != THRESHOLD)
        return False
    if any(t.startswith(OPTION) for t in tokens):
        return THRESHOLD in tokens  # the user's own backend options, or a parent's threshold
    os.environ["XLA_FLAGS"] = " ".join([*tokens, THRESHOLD])
    return True
