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


def test_registry_lists_the_four_energies():
    assert targets.names() == ["U1", "U2", "U3", "U4"]
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
    with pytest.raises(ValueError, match="Unknown target 'U9'; known targets: U1, U2, U3, U4"):
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
