"""Table 1 energies against a direct NumPy transcription, and their normalising constants by
quadrature.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import integrate

from tfnf import diagnostics, targets


def numpy_energies(z):
    """U1..U4 of Table 1, transcribed literally (naive exp/log, fine at moderate z)."""
    z1, z2 = z[..., 0], z[..., 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    return {
        "U1": 0.5 * ((np.linalg.norm(z, axis=-1) - 2) / 0.4) ** 2
        - np.log(np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)),
        "U2": 0.5 * ((z2 - w1) / 0.4) ** 2,
        "U3": -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        ),
        "U4": -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
        ),
    }


def test_registry_lists_the_four_energies_and_the_mixtures():
    assert targets.names() == ["U1", "U2", "U3", "U4", "hexagon", "triangle"]
    assert targets.is_normalizable("U1") and not targets.is_normalizable("U2")


@pytest.mark.parametrize("name", ["U1", "U2", "U3", "U4"])
def test_energies_match_table_1(name):
    z = np.random.default_rng(1).uniform(-4, 4, size=(500, 2))
    np.testing.assert_allclose(
        targets.get(name)(tf.constant(z)).numpy(), -numpy_energies(z)[name], rtol=1e-12, atol=1e-12
    )


def test_logsumexp_keeps_u1_finite_far_from_the_modes():
    # exp(-((z1 -+ 2)/0.6)^2/2) underflows to 0 at z1 = 30; log(0 + 0) would be -inf.
    value = targets.get("U1")(tf.constant([[30.0, 0.0]], tf.float64)).numpy()[0]
    expected = -0.5 * (28 / 0.4) ** 2 - 0.5 * (28 / 0.6) ** 2  # the nearer mode dominates
    assert value == pytest.approx(expected, rel=1e-12)


def test_u1_log_normalizer_by_quadrature_matches_paper():
    def density(z2, z1):
        return math.exp(-numpy_energies(np.array([z1, z2]))["U1"])

    # scipy's adaptive quadrature of the NumPy transcription, independent of our midpoint rule.
    mass, _ = integrate.dblquad(density, -6, 6, -6, 6, epsabs=1e-10, epsrel=1e-9)
    assert math.log(mass) == pytest.approx(1.8775, abs=5e-5)
    assert diagnostics.log_normalizer_2d(targets.get("U1")) == pytest.approx(
        math.log(mass), abs=1e-6
    )


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="Unknown target 'U9'; known targets: U1, U2, U3, U4, hexagon, triangle"
    ):
        targets.get("U9")


def test_wrong_event_size_is_named():
    with pytest.raises(
        ValueError, match="U1 is defined for event_size 2, got z with last dimension 3"
    ):
        targets.get("U1")(tf.zeros([4, 3]))


def test_as_log_prob_accepts_names_callables_and_distributions():
    normal = tfp.distributions.MultivariateNormalDiag(loc=[1.0, -1.0], scale_diag=[0.5, 2.0])
    z = tf.constant([[0.3, 0.2], [1.0, -1.0]])
    expected = -0.5 * np.sum(((z.numpy() - [1.0, -1.0]) / [0.5, 2.0]) ** 2, -1) - np.log(
        2 * np.pi * 0.5 * 2.0
    )
    np.testing.assert_allclose(targets.as_log_prob(normal)(z).numpy(), expected, rtol=1e-6)
    assert targets.as_log_prob("U2") is targets.get("U2")
    with pytest.raises(TypeError, match="target_log_prob must be a target name"):
        targets.as_log_prob(3)


# -- the multi-modal targets, the box restriction and the mode diagnostics ----------------------


def numpy_mixture(z, locs, weights, scale):
    """sum_i w_i N(z; m_i, scale^2 I), transcribed literally."""
    squared = ((z[..., None, :] - locs) ** 2).sum(-1)
    return (weights * np.exp(-0.5 * squared / scale**2) / (2 * np.pi * scale**2)).sum(-1)


MIXTURES = {
    # Written out from the issue: six modes on a hexagon of radius 3, sd 0.4, weights 0.3..0.05;
    # three on a triangle of radius 2.5 from the top, sd 0.5, the third ten times lighter.
    "hexagon": (
        3 * np.array([[np.cos(a), np.sin(a)] for a in np.arange(6) * np.pi / 3]),
        np.array([0.30, 0.22, 0.18, 0.15, 0.10, 0.05]),
        0.4,
    ),
    "triangle": (
        2.5 * np.array([[0.0, 1.0], [-np.sqrt(3) / 2, -0.5], [np.sqrt(3) / 2, -0.5]]),
        np.array([10, 10, 1]) / 21,
        0.5,
    ),
}


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixture_targets_match_their_transcription(name):
    locs, weights, scale = MIXTURES[name]
    spec = targets.mixture(name)
    np.testing.assert_allclose(spec.locs, locs, atol=1e-12)
    np.testing.assert_allclose(spec.weights, weights, rtol=1e-12)
    assert spec.scale == scale and targets.is_normalizable(name)
    z = np.random.default_rng(2).uniform(-4, 4, size=(500, 2))
    np.testing.assert_allclose(
        np.exp(targets.get(name)(tf.constant(z)).numpy()),
        numpy_mixture(z, locs, weights, scale),
        rtol=1e-10,
        atol=1e-300,
    )


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixture_targets_are_normalised_by_quadrature(name):
    def density(z2, z1):
        return numpy_mixture(np.array([z1, z2]), *MIXTURES[name])

    # scipy's adaptive quadrature of the transcription over a 4 x 4 tiling of (-8, 8)^2.
    edges = np.linspace(-8, 8, 5)
    mass = sum(
        integrate.dblquad(density, a, b, c, d, epsabs=1e-10)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
        for c, d in zip(edges[:-1], edges[1:], strict=True)
    )
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert diagnostics.log_normalizer_2d(targets.get(name), extent=(-8, 8)) == pytest.approx(
        0.0, abs=1e-6
    )


def test_restricted_target_is_the_target_inside_the_box_with_gaussian_tails_outside():
    restricted = targets.Restricted(targets.get("U2"), box=(-1.0, 2.0), tail_scale=0.5)
    z = np.random.default_rng(3).uniform(-4, 5, size=(400, 2))
    outside = np.maximum(-1.0 - z, 0) + np.maximum(z - 2.0, 0)
    expected = -numpy_energies(z)["U2"] - 0.5 * (outside**2).sum(-1) / 0.25
    np.testing.assert_allclose(restricted(tf.constant(z)).numpy(), expected, rtol=1e-12)


def test_restricting_u2_to_the_box_makes_it_normalisable():
    # Across z1 the ridge integrates to 0.4 sqrt(2 pi) wherever it is; along z1 the box gives
    # a width 8 and each unit-scale Gaussian tail sqrt(2 pi) / 2 (z2's tails lie 7 sd away).
    expected = math.log(0.4 * math.sqrt(2 * math.pi) * (8 + math.sqrt(2 * math.pi)))
    log_z = diagnostics.log_normalizer_2d(
        targets.Restricted(targets.get("U2")), extent=(-12, 12), num=2400
    )
    assert log_z == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "box, message",
    [
        ((1.0, -1.0), r"box must be a pair \(lo, hi\) of finite numbers with lo < hi"),
        ("wide", r"box must be a pair \(lo, hi\) of numbers, got 'wide'"),
        ((0.0, float("inf")), "finite numbers"),
    ],
)
def test_restricted_refuses_a_bad_box(box, message):
    with pytest.raises(ValueError, match=message):
        targets.Restricted(targets.get("U2"), box=box)


def test_mode_masses_of_the_mixture_itself_are_its_weights():
    spec = targets.mixture("hexagon")
    mixture = tfp.distributions.MixtureSameFamily(
        tfp.distributions.Categorical(probs=spec.weights),
        tfp.distributions.MultivariateNormalDiag(spec.locs, np.full_like(spec.locs, spec.scale)),
    )
    masses = diagnostics.mode_masses(mixture, spec.locs, num_samples=200_000, seed=[4, 5])
    # Binomial standard errors are at most 0.001; the Voronoi cells lose ~1e-4 across edges.
    np.testing.assert_allclose(masses, spec.weights, atol=0.005)
    assert diagnostics.covers_modes(masses, spec.weights).all()
    assert diagnostics.covers_modes([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]).tolist() == [
        True,
        True,
        False,
    ]


def test_unknown_mixture_is_named():
    with pytest.raises(ValueError, match="'U1' is not a mixture target; mixtures: hexagon"):
        targets.mixture("U1")
