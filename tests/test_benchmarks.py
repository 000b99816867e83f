"""The benchmark scripts run: their quick modes, end to end, print tables whose numbers hold."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_vae_mnist_quick_prints_the_table_and_importance_sampling_beats_the_elbo(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "vae_mnist.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "", "HOME": str(tmp_path)},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(
        r"^\| DLGM [^|]+\| (\d+) \| 0 \| 1 \| (-?[\d.]+) \| ([\d.]+) \+- ([\d.]+) \|",
        done.stdout,
        flags=re.M,
    )
    assert [int(k) for k, *_ in rows] == [0, 10, 40]
    for _, elbo, nll, error in rows:
        # -ln p(x) by importance sampling is a tighter bound than -ELBO (1 sample): below it,
        # up to the two estimates' noise.
        assert float(nll) <= -float(elbo) + 3 * float(error) + 0.5
