"""What a figure was measured on: architecture, CPU model and vector width, cores, TensorFlow.

Benchmark records carry this string. "x86_64, 2 cores" alone, as they said before
2026-12-06, hid that this project's 2-core machines differ from session to session: an
AMD EPYC of family 25 (Zen 3, AVX2, about 157 GFLOP/s of float32 at 2.45 GHz on two
cores) trained the DLGM at half the images/s of the AVX-512 machine behind the earlier
Table 2 runs.
"""

import contextlib
import os
import pathlib
import platform

CPUINFO = pathlib.Path("/proc/cpuinfo")


def cpu(cpuinfo: str | None = None) -> str:
    """The CPU as /proc/cpuinfo names it, e.g. "AMD EPYC (family 25, model 1; AVX2)".

    Arguments:
        cpuinfo: the text of /proc/cpuinfo (default: this machine's); where there is
            none, the platform's processor string.
    """
    if cpuinfo is None:
        cpuinfo = ""
        with contextlib.suppress(OSError):
            cpuinfo = CPUINFO.read_text()
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vector = next(
        (
            label
            for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
            + (("sve", "SVE"), ("asimd", "NEON"))
            if flag in flags
        ),
        None,
    )
    model = [
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"))
        if fields.get(key)
    ]
    detail = "; ".join(part for part in (", ".join(model), vector) if part)
    return f"{name} ({detail})" if detail else name


def machine(tensorflow: bool = True) -> str:
    """e.g. "x86_64, AMD EPYC (family 25, model 1; AVX2), 2 cores, TF 2.21.0"."""
    text = f"{platform.machine()}, {cpu()}, {os.cpu_count()} cores"
    if tensorflow:
        import tensorflow as tf

        text += f", TF {tf.__version__}"
    return text
