"""A persistent cache of XLA's compiled programs, on by default and safe to share.

TensorFlow can keep the programs XLA compiles in a directory
(`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR`) and load them in later
processes instead of compiling again: the first step of a K = 32 planar flow falls
from about 2 s to about 0.7 s (benchmarks/RESULTS.md). TensorFlow writes each entry
in place, so an entry cut short (a process stopped while writing, two processes
writing the same program) stays behind, and measured here a truncated entry was
loaded and trained to different weights without an error. So tfnf never lets
TensorFlow write into the shared directory:

- the store, `<cache>/tfnf/xla/<TensorFlow version, machine, CPU features, flags>/`, holds
  only entries that were checked whole; another TensorFlow, another CPU or other XLA flags
  (XLA_FLAGS, TF_XLA_FLAGS) get another store: TensorFlow's own key leaves the flags out, so
  measured here a process with `XLA_FLAGS=--xla_dump_to=DIR` loaded the program a process
  without flags had compiled (a flag such as --xla_cpu_enable_fast_math would be ignored
  the same way);
- each process gets a private directory beside it, with links to the store's entries
  that pass the check (a complete protocol-buffer record with a key, the program and a
  non-empty executable), and TensorFlow reads and writes there;
- at exit, the entries the process wrote that pass the check move into the store, each
  by one atomic rename; the private directory goes, as do those of processes that
  died (their entries never reach the store).

Off with `TFNF_XLA_CACHE=0`; elsewhere with `TFNF_XLA_CACHE_DIR=DIR` (default
`$XDG_CACHE_HOME`, else `~/.cache`). A user's own `--tf_xla_persistent_cache_directory`
in TF_XLA_FLAGS is left alone. TensorFlow reads TF_XLA_FLAGS when it first compiles,
so this takes effect when tfnf is imported before anything has been compiled.
"""

import atexit
import contextlib
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import shutil
import tempfile

FLAG = "--tf_xla_persistent_cache_directory"
#: Names the private directory that tfnf set, so that a child process makes its own.
MARKER = "TFNF_XLA_CACHE_PRIVATE"
#: Entries past this total size leave the store, least recently used first.
STORE_LIMIT_BYTES = 512 * 2**20


def _varint(read, position: int) -> tuple[int, int]:
    """The varint at `position` of a record read through `read(position, n)`, and the position
    after it."""
    data = read(position, 10)  # a 64-bit varint takes at most 10 bytes
    value = shift = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position + i + 1
    raise ValueError("truncated varint")


def is_complete(path: pathlib.Path) -> bool:
    """Whether the file is a whole XlaSerializedCacheEntry: key (1), program (2), executable (3).

    Walks the record's top-level wire format: every field must end inside the file,
    the last exactly at its end, and the executable must be there and non-empty. Only
    the fields' headers are read (a few bytes each, by seeking past their contents), so
    checking the whole store at import costs milliseconds, not a read of every program.
    """
    try:
        with open(path, "rb") as file:
            end = os.fstat(file.fileno()).st_size

            def read(position: int, n: int) -> bytes:
                file.seek(position)
                return file.read(n)

            lengths, i = {}, 0
            while i < end:
                tag, i = _varint(read, i)
                field, wire = tag >> 3, tag & 7
                if wire == 2:
                    size, i = _varint(read, i)
                    i += size
                    lengths[field] = size
                elif wire == 0:
                    _, i = _varint(read, i)
                else:
                    return False
    except (OSError, ValueError):
        return False
    return i == end and all(lengths.get(field, 0) > 0 for field in (1, 2, 3))


def _cpu_features() -> str:
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _compiler_flags() -> str:
    """XLA_FLAGS and TF_XLA_FLAGS, less the cache's own directory, in a canonical order."""
    tokens = f"{os.environ.get('XLA_FLAGS', '')} {os.environ.get('TF_XLA_FLAGS', '')}".split()
    return " ".join(sorted(t for t in tokens if not t.startswith(f"{FLAG}=")))


def store_directory(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The store for this TensorFlow on this machine's CPU, with these compiler flags."""
    if root is None:
        root = os.environ.get("TFNF_XLA_CACHE_DIR") or pathlib.Path(
            os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache", "tfnf", "xla"
        )
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    features = hashlib.sha256(
        f"{platform.machine()} {_cpu_features()}\n{_compiler_flags()}".encode()
    ).hexdigest()
    return pathlib.Path(root) / f"tf-{version}-{platform.machine()}-{features[:16]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_private_directories(store: pathlib.Path) -> None:
    for private in store.glob(".process-*"):
        try:
            pid = int(private.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(private, ignore_errors=True)


def _link_entries(store: pathlib.Path, private: pathlib.Path) -> None:
    for entry in store.glob("*.pb"):
        if not is_complete(entry):
            entry.unlink(missing_ok=True)  # not ours to keep: it would be loaded as it is
            continue
        with contextlib.suppress(OSError):
            os.utime(entry)  # recently used
            try:
                os.link(entry, private / entry.name)
            except OSError:
                shutil.copyfile(entry, private / entry.name)


def publish(store: pathlib.Path, private: pathlib.Path) -> None:
    """Move the whole entries the process wrote into the store, then remove its directory."""
    with contextlib.suppress(OSError):
        for entry in private.glob("*.pb"):
            target = store / entry.name
            if not target.exists() and entry.stat().st_nlink == 1 and is_complete(entry):
                os.replace(entry, target)  # atomic within the file system
        _evict(store)
    shutil.rmtree(private, ignore_errors=True)


def _evict(store: pathlib.Path) -> None:
    entries = sorted(store.glob("*.pb"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for entry in entries:
        total += entry.stat().st_size
        if total > STORE_LIMIT_BYTES:
            entry.unlink(missing_ok=True)


def enable() -> pathlib.Path | None:
    """Point TensorFlow's XLA cache at this process's private directory; its path, or None."""
    if os.environ.get("TFNF_XLA_CACHE", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    flags = os.environ.get("TF_XLA_FLAGS", "")
    inherited = os.environ.get(MARKER)
    if inherited:  # a parent's private directory, which is not this process's to write
        flags = flags.replace(f"{FLAG}={inherited}", "").strip()
    if FLAG in flags:
        return None  # the user's own cache
    try:
        store = store_directory()
        store.mkdir(parents=True, exist_ok=True)
        _remove_dead_private_directories(store)
        private = pathlib.Path(tempfile.mkdtemp(prefix=f".process-{os.getpid()}-", dir=store))
        _link_entries(store, private)
    except OSError:
        return None  # no writable cache: compile as before
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={private}".strip()
    os.environ[MARKER] = str(private)
    atexit.register(publish, store, private)
    return private
