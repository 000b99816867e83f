"""`tfnf vae`: the printed ELBO and -ln p(x) are those of the trained model, the table holds them,
the PNG is drawn.
"""

import csv
import json
import re

import keras
import matplotlib.image
import numpy as np
import pytest

from tfnf import cli, datasets
from tfnf.models import FlowVAE, negative_log_likelihood

# One epoch of the subset's 10 steps in 2 executions, so that 5 steps are timed for images/s.
TINY = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--batch-size", "100"]
TINY += ["--steps-per-execution", "5"]


def printed(text):
    """(ELBO, -ln p(x), standard error, images/s) as the command printed them."""
    elbo = re.search(r"test ELBO = (-?[\d.]+) nats", text).group(1)
    nll, error = re.search(r"test -ln p\(x\) = ([\d.]+) \+- ([\d.]+) nats", text).groups()
    rate = re.search(r"(\d+) images/s after the first step", text).group(1)
    return elbo, nll, error, rate


def test_vae_prints_the_models_likelihood_appends_the_row_and_draws(
    tmp_path, capsys, mnist_subset_path
):
    table, png, saved = tmp_path / "table2.md", tmp_path / "vae.png", tmp_path / "vae.keras"
    table.write_text(
        "| model | K | epochs | ELBO | -ln p(x) | images/s |\n|---|---|---|---|---|---|\n"
        "| an earlier run | 0 | 1 | -1.00 | 1.00 +- 0.10 | 1 |\n"
    )
    assert (
        cli.main(
            [
                "vae",
                "--flow",
                "planar",
                "--layers",
                "2",
                *TINY,
                "--samples",
                "20",
                "--eval-images",
                "50",
                "--data",
                str(mnist_subset_path),
                "--out",
                str(png),
                "--table",
                str(table),
                "--save",
                str(saved),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    elbo, nll, error, rate = printed(text)

    # The same numbers, recomputed from the saved model on the same 50 test images and seeds.
    model = keras.models.load_model(saved)
    assert isinstance(model, FlowVAE) and (
        model.num_layers,
        model.latent_size,
        model.hidden_units,
    ) == (2, 2, 16)
    assert int(model.optimizer.iterations) == 10  # 1000 training images in batches of 100
    images = datasets.load_binarized_mnist("test", mnist_subset_path)[
        ::4
    ]  # 50 of the 200, evenly spaced
    expected = negative_log_likelihood(model, images, num_samples=20, batch_size=100, seed=0)
    assert float(nll) == pytest.approx(expected.mean, abs=0.006)  # printed to 2 decimals
    assert float(error) == pytest.approx(expected.standard_error, abs=0.006)
    assert float(elbo) == pytest.approx(
        model.evaluate(images, batch_size=100, return_dict=True, verbose=0)["elbo"], abs=0.006
    )
    assert (
        300 < float(nll) < 784 * 0.6932
    )  # trained for 10 steps: below the uniform model's 784 ln 2 nats

    lines = table.read_text().splitlines()
    assert (
        len(lines) == 4 and lines[2] == "| an earlier run | 0 | 1 | -1.00 | 1.00 +- 0.10 | 1 |"
    )  # no second header
    assert lines[3] == f"| DLGM + planar NF | 2 | 1 | {elbo} | {nll} +- {error} | {rate} |"

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (
        480,
        900,
    )  # 9 x 4.8 inches at 100 dpi: samples beside test images and reconstructions
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_vae_writes_a_csv_row_with_the_printed_numbers(tmp_path, capsys, mnist_subset_path):
    table = tmp_path / "runs.csv"
    assert (
        cli.main(
            [
                "vae",
                "--flow",
                "radial",
                "--layers",
                "1",
                "--anneal",
                *TINY,
                "--samples",
                "5",
                "--eval-images",
                "20",
                "--data",
                str(mnist_subset_path),
                "--out",
                str(tmp_path / "r.png"),
                "--table",
                str(table),
                "--optimizer",
                "rmsprop",
                "--momentum",
                "0.9",
                "--learning-rate",
                "2e-4",
                "--clip-norm",
                "50",
                "--save",
                str(tmp_path / "r.keras"),
            ]
        )
        == 0
    )
    elbo, nll, error, rate = printed(capsys.readouterr().out)
    model = keras.models.load_model(tmp_path / "r.keras")
    config = model.optimizer.get_config()
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert (config["momentum"], config["clipnorm"]) == (0.9, 50)
    assert config["learning_rate"] == pytest.approx(2e-4, rel=1e-6)
    assert model.anneal and model.flow == "radial"
    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {
            "model": "DLGM + radial NF",
            "K": "1",
            "epochs": "1",
            "elbo": elbo,
            "nll": nll,
            "nll_se": error,
            "images_per_s": rate,
        }
    ]


def test_vae_needs_the_flow_length_and_the_epochs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["vae", "--epochs", "1"])
    assert "the following arguments are required: --layers" in capsys.readouterr().err


# -- validation, early stopping and resuming from --backup ---------------------------------------


def vae_argv(tmp_path, mnist_subset_path, *extra, epochs="3"):
    return [
        "vae",
        "--layers",
        "1",
        "--epochs",
        epochs,
        "--hidden",
        "8",
        "--latent",
        "2",
        "--samples",
        "2",
        "--eval-images",
        "20",
        "--validation-images",
        "50",
        "--data",
        str(mnist_subset_path),
        "--out",
        str(tmp_path / "vae.png"),
        *extra,
    ]


def test_vae_keeps_the_weights_of_the_best_validation_elbo(tmp_path, capsys, mnist_subset_path):
    backup, saved = tmp_path / "run", tmp_path / "vae.keras"
    argv = vae_argv(tmp_path, mnist_subset_path, "--backup", str(backup), "--save", str(saved))
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    best, epoch = re.search(r"best validation ELBO (-?[\d.]+) nats at epoch (\d)", text).groups()
    # The saved model is the best epoch's: its validation ELBO, recomputed, is the best printed.
    model = keras.models.load_model(saved)
    valid = datasets.load_binarized_mnist("valid", mnist_subset_path)[np.arange(50) * 200 // 50]
    elbo = model.evaluate(valid, batch_size=100, return_dict=True, verbose=0)["elbo"]
    record = json.loads((backup / "best" / "best.json").read_text())
    assert record["epoch"] + 1 == int(epoch) and float(best) == pytest.approx(
        record["best"], abs=0.006
    )
    # The evaluation draws with the step seed, which moves on after the best epoch: within noise.
    assert elbo == pytest.approx(record["best"], abs=3.0)
    assert "validated on 50 images, best kept" in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--patience", "2"], "--patience: needs validation"),
        (["--lr-patience", "2"], "--lr-patience: needs validation"),
    ],
)
def test_vae_patience_needs_validation(tmp_path, capsys, mnist_subset_path, extra, message):
    argv = vae_argv(tmp_path, mnist_subset_path, *extra)
    argv[argv.index("--validation-images") + 1] = "0"
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_vae_warm_up_and_the_papers_annealing_are_one_or_the_other(
    tmp_path, capsys, mnist_subset_path
):
    argv = vae_argv(tmp_path, mnist_subset_path, "--anneal", "--warmup-epochs", "5")
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert "--warmup-epochs: --anneal is the paper's schedule" in capsys.readouterr().err


def test_vae_recipe_defaults_and_the_time_budget(tmp_path, capsys, mnist_subset_path):
    backup, saved = tmp_path / "run", tmp_path / "vae.keras"
    argv = vae_argv(
        tmp_path,
        mnist_subset_path,
        "--backup",
        str(backup),
        "--save",
        str(saved),
        "--budget-minutes",
        "0.001",  # 0.06 s: less than any epoch, so it stops after the first
        epochs="5",
    )
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "adamax lr 0.0005, KL warm-up over 50 epochs, rate halved after 20 flat epochs" in text
    assert "trained 1 epoch in" in text and "the time budget is spent" in text
    model = keras.models.load_model(saved)
    # 50 epochs of the subset's 1,000 training images in batches of 100
    assert model.kl_warmup == 50 * 10 and not model.anneal
    assert isinstance(model.optimizer, keras.optimizers.Adamax)
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    records = tmp_path / "runs.json"
    assert cli.main([*argv, "--json", str(records)]) == 0  # rerun: budget spent, only evaluates
    text = capsys.readouterr().out
    assert "the backup's budget is spent after 1 epochs; evaluating" in text
    assert "(1 of them before this run resumed)" in text
    # no step of its own: the record's images/s is the whole run's, 1,000 images over its time
    (record,) = json.loads(records.read_text())
    clock = json.loads((backup / "progress" / "clock.json").read_text())
    assert record["images_per_s"] == pytest.approx(1000 / clock["seconds"])
    assert record["train_seconds"] == round(clock["seconds"], 1) and record["epochs_run"] == 1


def test_vae_divergence_names_the_step_and_keeps_the_best_weights(
    tmp_path, capsys, mnist_subset_path, monkeypatch
):
    # After epoch 1 (10 steps of the subset's 1,000 images) the rate turns infinite: step 11 is
    # the first non-finite one.
    from tfnf import models

    validated = models.KeepBest.on_epoch_end

    def then_diverge(self, epoch, logs=None):
        validated(self, epoch, logs)
        self.model.optimizer.learning_rate.assign(float("inf"))

    monkeypatch.setattr(models.KeepBest, "on_epoch_end", then_diverge)
    backup, saved = tmp_path / "run", tmp_path / "vae.keras"
    argv = vae_argv(tmp_path, mnist_subset_path, "--backup", str(backup), "--save", str(saved))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "learning rate at training step 11" in err
    assert "kept the weights of the best validation ELBO (epoch 1)" in err
    assert f"saved the model to {saved}" in err and "Traceback" not in err
    best = FlowVAE(latent_size=2, hidden_units=8, num_layers=1)
    best.load_weights(str(backup / "best" / "best.weights.h5"))
    for ours, kept in zip(keras.models.load_model(saved).weights, best.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), kept.numpy())


def test_vae_regularisers_reach_the_model_and_optimizer(tmp_path, capsys, mnist_subset_path):
    saved = tmp_path / "vae.keras"
    argv = vae_argv(
        tmp_path,
        mnist_subset_path,
        "--encoder-noise",
        "0.2",
        "--weight-decay",
        "0.01",
        "--ema",
        "0.99",
        "--save",
        str(saved),
        epochs="1",
    )
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "weight decay 0.01, weights averaged with momentum 0.99, encoder input noise 0.2" in text
    model = keras.models.load_model(saved)
    assert model.encoder_noise == pytest.approx(0.2)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.99)
    assert model.optimizer.weight_decay == pytest.approx(0.01)
    # the model kept is the averaged one of the best epoch: its validation ELBO is the best printed
    best = float(re.search(r"best validation ELBO (-?[\d.]+) nats", text).group(1))
    valid = datasets.load_binarized_mnist("valid", mnist_subset_path)[np.arange(50) * 200 // 50]
    elbo = model.evaluate(valid, batch_size=100, return_dict=True, verbose=0)["elbo"]
    assert elbo == pytest.approx(best, abs=3.0)  # another draw of z: within noise


def test_vae_resumed_after_an_epoch_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path, capsys, mnist_subset_path
):
    # Each epoch's order comes from (seed, epoch), the sampler's seed from the step counter:
    # two epochs in one run and one epoch, then a resumed second, train on the same batches.
    # The same runs check the JSON record, the clock and the learning curve kept across them.
    straight, resumed = tmp_path / "straight.keras", tmp_path / "resumed.keras"
    records = tmp_path / "runs.json"
    records.write_text('[{"earlier": true}]\n')
    argv = vae_argv(tmp_path, mnist_subset_path, "--save", str(straight), epochs="2")
    assert cli.main([*argv, "--backup", str(tmp_path / "a"), "--json", str(records)]) == 0
    text = capsys.readouterr().out
    nll, error = re.search(r"test -ln p\(x\) = ([\d.]+) \+- ([\d.]+) nats", text).groups()
    best = re.search(r"at epoch (\d)", text).group(1)
    earlier, record = json.loads(records.read_text())
    assert earlier == {"earlier": True}
    assert (record["flow"], record["num_layers"], record["seed"]) == ("planar", 1, 0)
    assert (record["epochs"], record["epochs_run"], record["best_epoch"]) == (2, 2, int(best))
    assert f"{record['nll']:.2f}" == nll and f"{record['nll_se']:.2f}" == error
    assert record["test_images"] == 20 and record["importance_samples"] == 2
    assert record["train_seconds"] > 0 and record["machine"] and record["date"]

    backup = tmp_path / "b"
    again = ["--backup", str(backup), "--save", str(resumed)]
    assert cli.main(vae_argv(tmp_path, mnist_subset_path, *again, epochs="1")) == 0
    assert "trained 1 epoch in" in capsys.readouterr().out
    seconds = json.loads((backup / "progress" / "clock.json").read_text())["seconds"]
    longer = vae_argv(tmp_path, mnist_subset_path, *again, epochs="2")
    assert cli.main(longer) == 0
    text = capsys.readouterr().out
    # epoch 2 only: epoch 1 came from the backup, and so did its time
    assert "trained 2 epochs in" in text and "(1 of them before this run resumed)" in text
    total = json.loads((backup / "progress" / "clock.json").read_text())["seconds"]
    assert seconds < total and f"in {total:.1f} s" in text
    ours, theirs = keras.models.load_model(resumed), keras.models.load_model(straight)
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    assert cli.main(longer) == 0  # all epochs done: nothing more to train, evaluated again
    assert "(2 of them before this run resumed)" in capsys.readouterr().out
    # the learning curve: one row per epoch, continued across the runs
    with (backup / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(
        float(r["val_elbo"]) < 0 and float(r["learning_rate"]) == pytest.approx(5e-4) for r in rows
    )
    other = vae_argv(tmp_path, mnist_subset_path, "--backup", str(backup), "--seed", "1")
    with pytest.raises(SystemExit) as stop:
        cli.main(other)
    assert stop.value.code == 2
    assert "--seed 0 there, 1 here" in capsys.readouterr().err
    shared = vae_argv(tmp_path, mnist_subset_path, "--backup", str(backup), "--head-units", "2")
    with pytest.raises(SystemExit) as stop:
        cli.main(shared)
    assert stop.value.code == 2
    assert "--head-units None there, 2 here" in capsys.readouterr().err


def test_vae_trains_the_hamiltonian_flow_after_planar_maps(tmp_path, capsys, mnist_subset_path):
    argv = vae_argv(tmp_path, mnist_subset_path, "--flow", "hamiltonian", epochs="1")
    argv[argv.index("--layers") + 1] = "2"
    assert cli.main([*argv, "--planar-layers", "1", "--step-size", "0.02"]) == 0
    text = capsys.readouterr().out
    assert "DLGM + planar K=1 + Hamiltonian flow (HVAE), L=2" in text
    elbo = float(re.search(r"test ELBO = (-?[\d.]+)", text).group(1))
    nll = float(re.search(r"test -ln p\(x\) = ([\d.]+)", text).group(1))
    assert nll < -elbo + 1.0  # importance sampling on (z, rho) tightens the ELBO, up to MC error


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--planar-layers", "2"], "--planar-layers: an option of --flow hamiltonian, not planar"),
        (["--flow", "hamiltonian", "--layers", "0"], "--layers: the Hamiltonian flow needs"),
        (["--rank", "2"], "--rank: an option of --flow sylvester, not planar"),
        (["--flow", "sylvester", "--rank", "3"], "--rank: at most --latent (2), got 3"),
        (["--layers", "0", "--head-units", "4"], "--head-units: shapes the heads of amortised"),
        (["--flow", "hamiltonian", "--head-units", "4"], "--head-units: shapes the heads of"),
    ],
)
def test_vae_flow_options_are_checked(tmp_path, capsys, mnist_subset_path, extra, message):
    with pytest.raises(SystemExit) as stop:
        cli.main([*vae_argv(tmp_path, mnist_subset_path), *extra])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_vae_trains_sylvester_maps_of_the_rank_and_variant_asked(
    tmp_path, capsys, mnist_subset_path
):
    saved = tmp_path / "vae.keras"
    argv = vae_argv(tmp_path, mnist_subset_path, "--flow", "sylvester", "--save", str(saved))
    argv[argv.index("--epochs") + 1] = "1"
    argv[argv.index("--latent") + 1] = "3"
    assert cli.main([*argv, "--rank", "2", "--variant", "householder"]) == 0
    model = keras.models.load_model(saved)
    assert model.flow_options == {"rank": 2, "variant": "householder"}
    heads = model.posterior_layer.head_shapes
    assert heads["r"] == (2, 2) and heads["q_raw"] == (2, 3)  # 2 reflections of 3-vectors
    assert "DLGM + sylvester NF" in capsys.readouterr().out


def test_vae_heads_through_a_bottleneck(tmp_path, capsys, mnist_subset_path):
    saved, records = tmp_path / "vae.keras", tmp_path / "runs.json"
    argv = vae_argv(tmp_path, mnist_subset_path, "--save", str(saved), epochs="1")
    argv[argv.index("--layers") + 1] = "3"
    assert cli.main([*argv, "--head-units", "2", "--json", str(records)]) == 0
    assert "flow heads through 2 units" in capsys.readouterr().out
    model = keras.models.load_model(saved)
    assert model.flow_options == {"head_units": 2}
    layer = model.posterior_layer
    assert layer.flow_features.kernel.shape == (8, 2)  # --hidden 8 -> 2 shared units
    assert all(head.kernel.shape[0] == 2 for head in layer.flow_heads.values())
    (record,) = json.loads(records.read_text())
    assert record["arguments"]["head_units"] == 2


@pytest.mark.parametrize("per_execution, counted", [(1, 19), (10, 10)])
def test_images_per_second_count_every_step_after_the_first_execution(per_execution, counted):
    # 20 steps of 100 images; Keras reports once per execution, the first one (which compiles)
    # starts the clock: 19 steps or 10 steps of images are timed.
    model = FlowVAE(latent_size=2, hidden_units=4, num_layers=1, data_size=6, seed=0)
    model.compile(optimizer="adamax", steps_per_execution=per_execution)
    throughput = cli._throughput(100)
    x = (np.random.default_rng(0).random((1000, 6)) < 0.5).astype("float32")
    model.fit(x, batch_size=100, epochs=2, verbose=0, callbacks=[throughput])
    assert throughput.images == counted * 100 and throughput.rate > 0
