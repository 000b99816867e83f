"""The benchmark scripts run: their quick modes, end to end, print tables whose numbers hold."""

import pathlib
import re
import subprocess
import sys

import pytest

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
        r"^\| (\d+) \| 0 \| 1 \| 1 \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \+- ([\d.]+) \|",
        done.stdout,
        flags=re.M,
    )
    assert [int(k) for k, *_ in rows] == [0, 2]
    for _, minus_elbo, nll, error in rows:
        elbo = -float(minus_elbo)
        # -ln p(x) by importance sampling is a tighter bound than -ELBO (1 sample): below it,
        # up to the two estimates' noise.
        assert float(nll) <= -elbo + 3 * float(error) + 0.5


def test_vae_mnist_summary_averages_the_seeds_and_gains_on_k0():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import vae_mnist

    def run(k, seed, nll, se, elbo):
        return {
            "num_layers": k,
            "seed": seed,
            "nll": nll,
            "nll_se": se,
            "elbo": elbo,
            "epochs_run": 500,
            "best_epoch": 400,
            "train_seconds": 3500.0,
        }

    runs = {
        (0, 0): run(0, 0, 91.0, 0.3, -97.0),
        (0, 1): run(0, 1, 90.0, 0.4, -96.0),
        (10, 0): run(10, 0, 88.0, 0.3, -93.0),
    }
    lines = vae_mnist.summary(runs)
    k0, k10 = lines[2].split("|"), lines[3].split("|")
    # mean 90.5, SE of the mean of two: sqrt((0.3^2 + 0.4^2) / 2 / 2) = 0.25
    assert k0[3].strip() == "90.50 +- 0.25" and k0[4].strip() == "90.00 - 91.00"
    assert k0[6].strip() == "96.50" and k0[9].strip() == "<= 91.0"
    assert k10[3].strip() == "88.00 +- 0.30" and k10[5].strip() == "2.50"


def test_vae_mnist_models_name_their_flow_and_options_and_pass_them_to_the_command():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import vae_mnist

    from tfnf import cli

    planar = vae_mnist.Model.parse("10:1")
    assert planar.name == "planar_k10_seed1"  # the table's backups keep their names
    hvae = vae_mnist.Model.parse("hamiltonian:4:0:planar-layers=10,step-size=0.02")
    assert hvae.name == "hamiltonian_k4_seed0_planarlayers10_stepsize0.02"
    args = cli._parse(["vae", *hvae.argv(), "--epochs", "1"])
    assert (args.flow, args.layers, args.planar_layers, args.step_size) == (
        "hamiltonian",
        4,
        10,
        0.02,
    )
    with pytest.raises(SystemExit, match="is not K:seed"):
        vae_mnist.Model.parse("10")


def test_vae_mnist_table_takes_the_recipes_latest_runs_and_leaves_ablations_apart(
    tmp_path, monkeypatch
):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import json

    import vae_mnist

    def record(k, seed, nll, model=None, **arguments):
        arguments = {"budget_minutes": 60.0, "optimizer": "adamax", **arguments}
        return {"flow": "planar", "num_layers": k, "seed": seed, "nll": nll, "model": model,
                "arguments": arguments}  # fmt: skip

    records = [
        record(10, 0, 88.5),  # an early record, before records named their model
        record(10, 0, 88.1, "planar_k10_seed0"),
        record(10, 0, 86.0, "planar_k10_seed0_warmupepochs0", warmup_epochs=0),
        record(80, 0, 87.0, "planar_k80_seed0_headunits64", head_units=64),
        record(0, 0, 90.4, "planar_k0_seed0", optimizer="rmsprop"),
        record(0, 1, 91.1, "planar_k0_seed1", budget_minutes=30.0),
    ]
    path = tmp_path / "vae_mnist.json"
    path.write_text(json.dumps(records))
    monkeypatch.setattr(vae_mnist, "RECORDS", path)
    assert {key: r["nll"] for key, r in vae_mnist.latest(60.0).items()} == {(10, 0): 88.1}
