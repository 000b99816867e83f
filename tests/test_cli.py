"""The `tfnf` command: trains, reports bound and KL consistently, writes a picture."""

import re

import matplotlib.image
import pytest

from tfnf import cli


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
    assert matplotlib.image.imread(figure).shape[:2] == (
        484,
        726,
    )  # 2 rows x 3 columns of 2.2 in at 110 dpi
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
        (["figure3"], (5e-3, True)),
        (["figure3", "--learning-rate", "0.02"], (0.02, True)),
        (["bound-vs-k", "--no-decay"], (1e-2, False)),
        (["fit", "U1"], (1e-2, True)),
    ],
)
def test_learning_rate_and_decay_reach_the_optimiser(monkeypatch, tmp_path, argv, expected):
    seen = []
    fit_flow = cli.models.fit_flow

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

    monkeypatch.setattr(cli.models, "fit_flow", recording_fit_flow)
    options = ["--steps", "1", "--batch-size", "16", "--out", str(tmp_path / "x.png")]
    options += [] if argv[0] == "fit" else ["--targets", "U1", "--layers", "1"]
    options += ["--seeds", "1"] if argv[0] == "bound-vs-k" else []
    assert cli.main(argv + options) == 0
    assert seen and all(
        rate == pytest.approx(expected[0]) and decayed == expected[1] for rate, decayed in seen
    )
