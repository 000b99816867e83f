"""The `tfnf` command: trains, reports bound and KL consistently, writes a picture."""

import re
import signal
import subprocess
import sys
import time

import keras
import matplotlib.image
import pytest

from tfnf import cli, diagnostics, layers, models, names, targets


def numbers(pattern, text):
    return [float(x) for x in re.search(pattern, text).groups()]


def test_fit_reports_bound_kl_and_writes_png(tmp_path, capsys):
    out, saved = tmp_path / "u1.png", tmp_path / "u1.keras"
    assert (
        cli.main(
            [
                "fit",
                "U1",
                "--layers",
                "2",
                "--steps",
                "20",
                "--batch-size",
                "256",
                "--out",
                str(out),
                "--save",
                str(saved),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    bound, error = numbers(r"bound E_q\[log q - log p~\] = (-?[\d.]+) \+- ([\d.]+)", text)
    kl, log_z = numbers(r"KL\(q \|\| p\) = bound \+ ln Z = (-?[\d.]+) .*\(ln Z = ([\d.]+)\)", text)
    assert log_z == pytest.approx(1.8775, abs=1e-4)  # the paper's quadrature figure
    assert kl == pytest.approx(bound + log_z, abs=2e-4)  # printed to 4 decimals
    assert kl > -3 * error  # a KL divergence
    # k-hat of the saved flow as a proposal for U1, recomputed from the same draws
    (khat,) = numbers(r"Pareto k-hat (-?[\d.]+)", text)
    q = models.load_model(saved).distribution
    recomputed = diagnostics.importance_log_normalizer(
        q, targets.get("U1"), num_samples=100_000, seed=[0, 1]
    )
    assert khat == pytest.approx(recomputed.khat, abs=0.006)
    assert f"effective sample size {recomputed.ess:.0%}" in text
    iwae, iwae_error = numbers(r"ln Z, k = 64: (-?[\d.]+) \+- ([\d.]+)", text)
    assert (
        -bound - 3 * error - 3 * iwae_error < iwae < log_z + 3 * iwae_error
    )  # ELBO <= IWAE <= ln Z
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (400, 800)  # 8 x 4 inches at 100 dpi: target beside flow
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert saved.exists()


def test_fit_on_a_non_normalisable_target_says_kl_is_undefined(tmp_path, capsys):
    assert (
        cli.main(
            [
                "fit",
                "U2",
                "--flow",
                "radial",
                "--layers",
                "1",
                "--steps",
                "5",
                "--batch-size",
                "64",
                "--out",
                str(tmp_path / "u2.png"),
            ]
        )
        == 0
    )
    assert "U2 is not normalisable over R^2" in capsys.readouterr().out


def test_unknown_target_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "U9"])
    assert "invalid choice: 'U9'" in capsys.readouterr().err


def test_figure3_and_bound_vs_k_write_their_outputs(tmp_path, capsys):
    figure = tmp_path / "figure3.png"
    assert (
        cli.main(
            [
                "figure3",
                "--out",
                str(figure),
                "--targets",
                "U1",
                "U2",
                "--layers",
                "1",
                "2",
                "--steps",
                "10",
                "--batch-size",
                "64",
            ]
        )
        == 0
    )
    # 2 rows x 3 columns of 2.2 in at 110 dpi, and half an inch for the caption.
    assert matplotlib.image.imread(figure).shape[:2] == (539, 726)
    printed = capsys.readouterr().out
    assert "U1 K=2: bound" in printed and "KL(q || p)" in printed  # U1: the exact KL
    assert "U2 K=2: bound" in printed and "KL on (-4, 4)^2" in printed  # U2: on the plotted box
    khats = [float(x) for x in re.findall(r"Pareto k-hat (-?[\d.]+|inf)", printed)]
    assert len(khats) == 4 and all(k > -2 for k in khats)  # one per panel
    curve = tmp_path / "fig3d.png"
    assert (
        cli.main(
            [
                "bound-vs-k",
                "--out",
                str(curve),
                "--flows",
                "planar",
                "nice",
                "--layers",
                "1",
                "2",
                "--seeds",
                "2",
                "--steps",
                "10",
                "--batch-size",
                "64",
            ]
        )
        == 0
    )
    rows = (tmp_path / "fig3d.csv").read_text().splitlines()
    assert rows[0] == "target,flow,K,seed,bound,standard_error" and len(rows) == 1 + 2 * 2 * 2
    printed = capsys.readouterr().out
    for row in rows[1:]:  # the table holds what was printed, run by run
        assert row in printed
    assert matplotlib.image.imread(curve).std() > 0.05


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["figure3"], (1e-2, True)),
        (["figure3", "--learning-rate", "0.02"], (0.02, True)),
        (["bound-vs-k", "--no-decay"], (1e-2, False)),
        (["fit", "U1"], (1e-2, True)),
    ],
)
def test_learning_rate_and_decay_reach_the_optimiser(monkeypatch, tmp_path, argv, expected):
    seen = []
    fit_flow = models.fit_flow

    def recording_fit_flow(*args, **kwargs):
        model = fit_flow(*args, **kwargs)
        rate = model.optimizer._learning_rate  # the schedule, or the constant
        config = (
            rate.get_config()
            if hasattr(rate, "get_config")
            else {"initial_learning_rate": float(rate.numpy())}
        )
        seen.append((config["initial_learning_rate"], "alpha" in config))
        return model

    monkeypatch.setattr(models, "fit_flow", recording_fit_flow)  # what cli calls, by module
    options = ["--steps", "1", "--batch-size", "16", "--out", str(tmp_path / "x.png")]
    options += [] if argv[0] == "fit" else ["--targets", "U1", "--layers", "1"]
    options += ["--seeds", "1"] if argv[0] == "bound-vs-k" else []
    assert cli.main(argv + options) == 0
    assert seen and all(
        rate == pytest.approx(expected[0]) and decayed == expected[1] for rate, decayed in seen
    )


@pytest.mark.parametrize("extra, anneal_from", [([], "standard_normal"), (["--no-anneal"], None)])
def test_fit_anneals_by_default_and_restricts_u2_to_the_plotted_box(
    monkeypatch, tmp_path, capsys, extra, anneal_from
):
    seen = []
    fit_flow = models.fit_flow

    def recording_fit_flow(*args, **kwargs):
        seen.append(fit_flow(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(models, "fit_flow", recording_fit_flow)
    argv = ["fit", "U2", "--layers", "1", "--steps", "2", "--batch-size", "16"]
    assert cli.main(argv + ["--out", str(tmp_path / "u2.png"), *extra]) == 0
    (model,) = seen
    assert model.anneal_from == anneal_from and model.box == targets.BOX
    kl, mass = diagnostics.kl_2d(model.distribution, targets.get("U2"), extent=targets.BOX)
    printed = capsys.readouterr().out
    assert f"KL(q_box || p_box) = {kl:.4f} nats, with {mass:.0%} of q's mass inside" in printed


# -- bad input: refused while parsing, before TensorFlow is imported or anything is trained ----

COMMAND = ["-c", "import sys; from tfnf import cli; sys.exit(cli.main(sys.argv[1:]))"]
# The same, reporting on exit (argparse's too) whether TensorFlow had been imported.
PROBED = (
    "import atexit, sys; from tfnf import cli; "
    "atexit.register(lambda: print('TF' if 'tensorflow' in sys.modules else 'no TF', "
    "file=sys.stderr)); "
    "sys.exit(cli.main(sys.argv[1:]))"
)


def run(*argv, cwd=None):
    """The command as a user runs it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", PROBED, *argv], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "U1", "--layers", "-1"], "argument --layers: must be an integer >= 0, got '-1'"),
        (["fit", "U1", "--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
        (["fit", "U1", "--batch-size", "0"], "argument --batch-size: must be a positive integer"),
        (
            ["fit", "U1", "--seed", "4294967296"],
            r"argument --seed: must be an integer in \[0, 2\*\*31 - 1\]",
        ),
        (["fit", "U1", "--seed", "abc"], "argument --seed: must be an integer"),
        (
            ["fit", "U1", "--learning-rate", "nan"],
            "argument --learning-rate: must be a finite number > 0",
        ),
        (["fit", "U1", "--out", "myplot"], "argument --out: 'myplot' must end in .png"),
        (["fit", "U1", "--out", "."], r"argument --out: '\.' is a directory"),
        (
            ["fit", "U1", "--out", "no/such/dir/u1.png"],
            "the directory of 'no/such/dir/u1.png' does not exist",
        ),
        (["fit", "U1", "--save", "model.h5"], "argument --save: 'model.h5' must end in .keras"),
        (["fit", "U7"], "argument target: invalid choice: 'U7'"),
        (["figure3", "--layers", "2", "-8"], "argument --layers"),
        (["bound-vs-k", "--seeds", "0"], "argument --seeds: must be a positive integer, got '0'"),
        (
            ["vae", "--layers", "1", "--epochs", "1", "--eval-images", "-5"],
            "argument --eval-images",
        ),
        (["vae", "--layers", "1", "--epochs", "1", "--samples", "0"], "argument --samples"),
        (
            ["vae", "--layers", "1", "--epochs", "1", "--table", "t.txt"],
            "argument --table: 't.txt' must end in .csv or .md",
        ),
        (
            ["vae", "--layers", "1", "--epochs", "1", "--data", "missing.npz"],
            "argument --data: 'missing.npz' does not exist",
        ),
        (
            ["vae", "--layers", "1", "--epochs", "1", "--momentum", "1.5"],
            r"argument --momentum: must be a number in \[0, 1\)",
        ),
    ],
)
def test_bad_arguments_get_one_line_exit_2_and_no_work(argv, message, tmp_path):
    result = run(*argv, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "no TF"  # nothing was imported to train with, let alone trained
    assert len(lines) == 2 and re.search(message, lines[0]), result.stderr  # one line, no traceback
    assert list(tmp_path.iterdir()) == []


def test_the_default_picture_path_is_checked_too(tmp_path):
    (tmp_path / "U1.png").mkdir()  # fit's default picture, U1.png, cannot be written there
    result = run("fit", "U1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("tfnf fit: error: argument --out: 'U1.png' is a directory")


def test_help_shows_every_default_and_imports_no_tensorflow():
    result = run("fit", "--help")
    assert result.returncode == 0 and result.stderr.strip() == "no TF"
    options = re.findall(r"^  (--[\w-]+)", result.stdout, flags=re.M)
    assert {"--layers", "--steps", "--out", "--seed", "--learning-rate"} <= set(options)
    text = " ".join(result.stdout.split())
    for option in (
        "--layers LAYERS flow length K (default: 32)",
        "(default: <target>.png)",
        "samples per step (default: 4096)",
    ):
        assert option in text


def test_the_command_names_are_the_registries():
    assert names.TARGETS == tuple(targets.names())
    assert names.FLOWS == tuple(sorted(names.FLOWS))
    assert sorted(names.FLOWS + names.TARGET_INFORMED_FLOWS) == sorted(layers.FLOWS)
    assert names.AMORTIZED_FLOWS == tuple(sorted(layers.AmortizedFlow.families))


def test_ctrl_c_stops_with_one_line_and_saves_what_finished(tmp_path):
    saved = tmp_path / "flow.keras"
    process = subprocess.Popen(
        [
            sys.executable,
            *COMMAND,
            "fit",
            "U1",
            "--layers",
            "2",
            "--steps",
            "1000000",
            "--batch-size",
            "64",
            "--save",
            str(saved),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    line = ""
    while "Epoch 3/" not in line and time.monotonic() < deadline:  # training is under way
        line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    last = err.strip().splitlines()[-1]
    steps = int(
        re.search(
            r"tfnf fit: interrupted after (\d+) training steps; saved the model to", last
        ).group(1)
    )
    assert steps >= 200
    restored = keras.saving.load_model(saved)
    assert int(restored.optimizer.iterations) == steps
