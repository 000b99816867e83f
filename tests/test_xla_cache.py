"""tfnf's XLA settings: the persistent cache (tfnf/_xla_cache.py), the same weights as without
it and no partial entry; the small-while-loop threshold (tfnf/_xla_loops.py), each flow sweep
one kernel and the same weights to round-off.

Each case runs fresh Python processes, the only place TensorFlow reads its flags.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfnf import _xla_cache, _xla_loops

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Ten steps of a small planar flow; prints the weights (exactly, as hex) and the cache directory.
FIT = """
import hashlib, json, os
import keras, numpy as np
import tfnf
keras.utils.set_random_seed(0)
model = tfnf.models.NormalizingFlow(event_size=2, num_layers=2, target_log_prob="U1", seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=5)
model.fit(steps=10, batch_size=64, verbose=0)
weights = b"".join(np.asarray(v.numpy(), np.float64).tobytes() for v in model.trainable_variables)
print(json.dumps({"weights": hashlib.sha256(weights).hexdigest(),
                  "private": os.environ.get("TFNF_XLA_CACHE_PRIVATE")}))
"""


def run(code: str, **env) -> dict:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TF_XLA_FLAGS", _xla_cache.MARKER, "TFNF_XLA_CACHE")
    }
    environment.update({"TF_CPP_MIN_LOG_LEVEL": "3", **env})
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference():
    """The weights after ten steps with no cache at all."""
    return run(FIT, TFNF_XLA_CACHE="0")


def entries(root: pathlib.Path) -> list:
    return sorted(root.glob("*/*.pb"))


@pytest.mark.xdist_group("xla_cache")
def test_a_second_process_loads_the_program_and_trains_to_the_same_weights(tmp_path, reference):
    first = run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path))
    stored = entries(tmp_path)
    assert stored, "the first process published no entry"
    assert all(_xla_cache.is_complete(entry) for entry in stored)
    modified = {entry: entry.stat().st_mtime_ns for entry in stored}
    second = run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path))
    assert first["weights"] == second["weights"] == reference["weights"]
    assert entries(tmp_path) == stored  # loaded, not compiled and written again
    assert all(entry.stat().st_size > 0 for entry in modified)
    # The processes' private directories are gone with them.
    assert not list(tmp_path.glob("*/.process-*"))
    assert first["private"] != second["private"]


@pytest.mark.xdist_group("xla_cache")
def test_a_partial_entry_is_never_loaded(tmp_path, reference):
    run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path))
    (entry,) = entries(tmp_path)[:1]
    whole = entry.read_bytes()
    # Every cut of the record fails the check; the whole record passes.
    cuts = [0, 1, len(whole) // 3, len(whole) // 2, len(whole) - 1]
    for cut in cuts:
        entry.write_bytes(whole[:cut])
        assert not _xla_cache.is_complete(entry), cut
    entry.write_bytes(whole)
    assert _xla_cache.is_complete(entry)
    # As TensorFlow leaves it when a writer stops halfway: measured, TensorFlow loads
    # such an entry and trains to other weights without an error. tfnf drops it.
    entry.write_bytes(whole[: len(whole) // 2])
    again = run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path))
    assert again["weights"] == reference["weights"]
    assert _xla_cache.is_complete(entry)  # compiled again and published whole


@pytest.mark.xdist_group("xla_cache")
def test_a_dead_processs_entries_never_reach_the_store(tmp_path, reference):
    store = _xla_cache.store_directory(tmp_path)
    dead = store / ".process-999999999-x"  # no such pid
    dead.mkdir(parents=True)
    (dead / "xla_compile_cache__1__2__XLA_CPU_JIT.pb").write_bytes(b"\x0a\x05")
    result = run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path))
    assert result["weights"] == reference["weights"]
    assert not dead.exists()
    assert not (store / "xla_compile_cache__1__2__XLA_CPU_JIT.pb").exists()


PROBE = """
import json, os
import tfnf
print(json.dumps({"flags": os.environ.get("TF_XLA_FLAGS", ""),
                  "private": os.environ.get("TFNF_XLA_CACHE_PRIVATE")}))
"""


def test_off_switch_the_users_own_cache_and_a_childs_own_directory(tmp_path):
    off = run(PROBE, TFNF_XLA_CACHE="0", TFNF_XLA_CACHE_DIR=str(tmp_path))
    assert off == {"flags": "", "private": None}
    own = f"{_xla_cache.FLAG}=/somewhere/else"
    users = run(PROBE, TF_XLA_FLAGS=own, TFNF_XLA_CACHE_DIR=str(tmp_path))
    assert users["flags"] == own and users["private"] is None
    parent = run(PROBE, TFNF_XLA_CACHE_DIR=str(tmp_path))
    assert parent["flags"] == f"{_xla_cache.FLAG}={parent['private']}"
    assert pathlib.Path(parent["private"]).parent == _xla_cache.store_directory(tmp_path)
    # A child started with the parent's environment makes its own private directory.
    child = run(
        PROBE,
        TF_XLA_FLAGS=f"--xla_other_flag=1 {parent['flags']}",
        TFNF_XLA_CACHE_PRIVATE=parent["private"],
        TFNF_XLA_CACHE_DIR=str(tmp_path),
    )
    assert child["private"] != parent["private"]
    assert child["flags"] == f"--xla_other_flag=1 {_xla_cache.FLAG}={child['private']}"


def test_the_store_is_named_by_tensorflows_version_the_cpu_and_the_flags(tmp_path, monkeypatch):
    import importlib.metadata

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("TF_XLA_FLAGS", f"{_xla_cache.FLAG}=/a/private/directory")
    one = _xla_cache.store_directory(tmp_path)
    assert one.name.startswith(f"tf-{importlib.metadata.version('tensorflow')}-")
    monkeypatch.setenv("TF_XLA_FLAGS", f"{_xla_cache.FLAG}=/another/one")  # not a flag of XLA's
    assert _xla_cache.store_directory(tmp_path) == one
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    fast = _xla_cache.store_directory(tmp_path)
    assert fast != one
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("TF_XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert _xla_cache.store_directory(tmp_path) == fast  # the same flag, either variable
    monkeypatch.delenv("TF_XLA_FLAGS")
    monkeypatch.setattr(_xla_cache, "_cpu_features", lambda: "another cpu")
    assert _xla_cache.store_directory(tmp_path) != one


@pytest.mark.xdist_group("xla_cache")
def test_a_process_with_other_xla_flags_compiles_its_own_program(tmp_path, reference):
    # TensorFlow's cache key leaves XLA_FLAGS out: sharing one store, the second process would
    # load the first one's program and dump nothing.
    run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path))
    dump = tmp_path / "dump"
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}".strip()  # and the suite's
    flagged = run(FIT, TFNF_XLA_CACHE_DIR=str(tmp_path), XLA_FLAGS=flags)
    assert flagged["weights"] == reference["weights"]
    assert list(dump.glob("*inference_execution*")), "the program was loaded, not compiled"
    assert len({entry.parent for entry in entries(tmp_path)}) == 2  # one store each


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protocol-buffer field (wire type 2), its tag and length as varints."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_the_check_reads_only_the_records_headers(tmp_path, monkeypatch):
    # The store is checked at every import of tfnf: reading each entry whole cost about two
    # seconds with the 512 MB store cold. A record of 4 MB is judged from under 100 bytes.
    record = _field(1, b"key") + _field(2, bytes(2**21)) + _field(3, b"\x01" * 2**21)
    path = tmp_path / "entry.pb"
    read = []

    class Counting:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def read(self, n=-1):
            data = self.file.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(_xla_cache, "open", lambda p, mode: Counting(open(p, mode)), raising=False)
    for payload, whole in [
        (record, True),
        (record[:-1], False),  # the executable cut short
        (record + b"\x00", False),  # a byte past the last field
        (record[: len(record) // 2], False),  # the program cut short
        (_field(1, b"key") + _field(2, b"hlo"), False),  # no executable
        (_field(1, b"key") + _field(2, b"hlo") + _field(3, b""), False),  # an empty one
    ]:
        path.write_bytes(payload)
        read.clear()
        assert _xla_cache.is_complete(path) is whole
        assert 0 < sum(read) < 100, sum(read)


# -- the small-while-loop threshold ------------------------------------------------------------

# Ten steps of a planar K = 4 flow, as FIT, with the weights printed in full.
FIT_WEIGHTS = FIT.replace(
    'print(json.dumps({"weights": hashlib.sha256(weights).hexdigest(),',
    'print(json.dumps({"weights": [v.numpy().ravel().tolist() for v in model.trainable_variables],',
).replace("num_layers=2", "num_layers=4")
HOISTED = "xla_cpu_small_call"  # XLA's CPU compiler's call of a loop it made one kernel


def test_small_loop_threshold_makes_each_sweep_one_kernel_and_keeps_the_weights(tmp_path):
    assert FIT_WEIGHTS != FIT
    if _xla_loops.THRESHOLD not in os.environ.get("XLA_FLAGS", "").split():
        pytest.skip("XLA_FLAGS holds the user's own --xla_backend_extra_options")
    trained, programs = {}, {}
    for arm, switch in (("on", "1"), ("off", "0")):
        dump = tmp_path / arm
        # The suite's flags as this process's import of tfnf left them (the threshold in them):
        # the child keeps it, or drops it when switched off.
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"
        trained[arm] = run(
            FIT_WEIGHTS, TFNF_XLA_CACHE="0", TFNF_XLA_SMALL_LOOPS=switch, XLA_FLAGS=flags
        )["weights"]
        programs[arm] = "".join(p.read_text() for p in dump.glob("*after_optimizations.txt"))
        assert programs[arm], f"{arm}: XLA compiled nothing"
    assert programs["on"].count(HOISTED) >= 2, "the forward and backward sweeps were not hoisted"
    assert HOISTED not in programs["off"]
    for on, off in zip(trained["on"], trained["off"], strict=True):
        np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-6)  # float32 round-off


def test_small_loop_threshold_off_switch_and_the_users_own_options(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    monkeypatch.delenv("TFNF_XLA_SMALL_LOOPS", raising=False)
    assert _xla_loops.enable()
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_backend_optimization_level=0",
        "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576",
    ]
    assert _xla_loops.enable() and os.environ["XLA_FLAGS"].count("threshold") == 1  # once
    monkeypatch.setenv("TFNF_XLA_SMALL_LOOPS", "0")
    assert not _xla_loops.enable()
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0"
    monkeypatch.delenv("TFNF_XLA_SMALL_LOOPS")
    own = "--xla_backend_extra_options=xla_cpu_use_thunk_runtime=true"
    monkeypatch.setenv("XLA_FLAGS", own)
    assert not _xla_loops.enable() and os.environ["XLA_FLAGS"] == own


def test_small_loops_with_matrix_products_compile_and_match_eager_under_the_threshold():
    # The threshold is process-wide: a user's own small loops get it too. At 16 MB XLA could
    # not compile the K = 8, D = 16 step ("Fusion kind not implemented on CPU",
    # benchmarks/RESULTS.md); at tfnf's 1 MB, loops of products and convolutions compile and
    # give what the same loop gives without XLA.
    import tensorflow as tf

    assert _xla_loops.THRESHOLD in os.environ.get("XLA_FLAGS", "").split()
    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(16, 16)) / 4, tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 8, 8)) / 8, tf.float32)

    def loop(x):
        def body(i, x):
            y = tf.nn.conv1d(tf.tanh(tf.matmul(a, x))[None], kernel, 1, "SAME")[0]
            return i + 1, x + 0.1 * y

        return tf.while_loop(lambda i, x: i < 6, body, (0, x))[1]

    x = tf.constant(rng.normal(size=(16, 8)), tf.float32)
    compiled = tf.function(loop, jit_compile=True)(x)
    np.testing.assert_allclose(compiled.numpy(), loop(x).numpy(), rtol=1e-5, atol=1e-5)
