"""Diagnostics against closed forms: Gaussian KL, a known normaliser, effective sample size."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import diagnostics

tfd = tfp.distributions


def gaussian(loc, scale):
    return tfd.MultivariateNormalDiag(
        loc=tf.constant(loc, tf.float64), scale_diag=tf.constant(scale, tf.float64)
    )


def gaussian_kl(q_loc, q_scale, p_loc, p_scale):
    """KL(N(q) || N(p)) for diagonal Gaussians, in closed form."""
    q_loc, q_scale, p_loc, p_scale = map(np.asarray, (q_loc, q_scale, p_loc, p_scale))
    return float(
        np.sum(
            np.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5
        )
    )


def test_kl_2d_matches_the_gaussian_closed_form():
    q, p = gaussian([0.3, -0.2], [0.8, 1.1]), gaussian([-0.5, 0.4], [1.2, 0.7])
    unnormalised = lambda z: p.log_prob(z) + 3.7  # noqa: E731  ln Z = 3.7 must not matter
    kl, mass = diagnostics.kl_2d(q, unnormalised, extent=(-9, 9), num=600)
    assert kl == pytest.approx(
        gaussian_kl([0.3, -0.2], [0.8, 1.1], [-0.5, 0.4], [1.2, 0.7]), abs=1e-6
    )
    assert mass == pytest.approx(1.0, abs=1e-9)


def test_kl_2d_on_a_box_is_between_the_truncated_densities():
    # q = p restricted to a box has zero KL against p restricted to the same box,
    # even though p puts mass outside it.
    p = gaussian([0.0, 0.0], [3.0, 3.0])
    kl, mass = diagnostics.kl_2d(p, p.log_prob, extent=(-1, 1), num=200)
    assert abs(kl) < 1e-12
    expected_mass = math.erf(1 / (3 * math.sqrt(2))) ** 2
    assert mass == pytest.approx(expected_mass, rel=1e-4)


def test_bound_is_kl_minus_log_normalizer():
    q, p = gaussian([0.0, 0.0], [1.0, 1.0]), gaussian([1.0, 0.0], [1.0, 2.0])
    value, error = diagnostics.bound(
        q, lambda z: p.log_prob(z) + 2.0, num_samples=200_000, seed=[1, 2]
    )
    expected = gaussian_kl([0, 0], [1, 1], [1, 0], [1, 2]) - 2.0
    assert abs(value - expected) < 4 * error
    assert error < 0.01


def test_importance_sampling_recovers_log_z_and_ess():
    p = gaussian([0.5, -0.5], [1.0, 1.5])
    exact = diagnostics.importance_log_normalizer(
        p, lambda z: p.log_prob(z) + 1.25, num_samples=1000, seed=[3, 4]
    )
    assert exact.log_z == pytest.approx(1.25, abs=1e-12)  # q = p: every weight is Z
    assert exact.ess == pytest.approx(1.0) and exact.standard_error < 1e-12
    q = gaussian([0.0, 0.0], [1.5, 2.0])
    estimate = diagnostics.importance_log_normalizer(
        q, lambda z: p.log_prob(z) + 1.25, num_samples=200_000, seed=[5, 6]
    )
    assert abs(estimate.log_z - 1.25) < 4 * estimate.standard_error
    # Kish ESS = 1 / E_q[(p/q)^2]; per coordinate, with p = N(m, s_p^2), q = N(0, s_q^2) and
    # a = 1/s_p^2 - 1/(2 s_q^2):
    # E = s_q / (sqrt(2 pi) s_p^2) sqrt(pi / a) exp(m^2 / (s_p^4 a) - m^2 / s_p^2).
    m, s_p, s_q = np.array([0.5, -0.5]), np.array([1.0, 1.5]), np.array([1.5, 2.0])
    a = 1 / s_p**2 - 1 / (2 * s_q**2)
    second_moment = np.prod(
        s_q
        / (np.sqrt(2 * np.pi) * s_p**2)
        * np.sqrt(np.pi / a)
        * np.exp(m**2 / (s_p**4 * a) - m**2 / s_p**2)
    )
    assert estimate.ess == pytest.approx(1 / second_moment, rel=0.02)


# -- Pareto k-hat -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_pareto_khat_recovers_the_tail_shape_and_agrees_with_scipys_fit(shape):
    from scipy import stats

    rng = np.random.default_rng(11)
    # weights with a generalised Pareto tail of this shape: w = (U^-k - 1) / k
    weights = (rng.random(20_000) ** -shape - 1) / shape
    khat = diagnostics.pareto_khat(np.log(weights) + 123.0)  # a shift changes nothing
    assert abs(khat - shape) < 0.12, khat
    # scipy's maximum-likelihood fit of the same tail, an estimator written apart from ours
    s = np.sort(weights)
    m = int(min(len(s) / 5, 3 * np.sqrt(len(s))))
    mle, _, _ = stats.genpareto.fit(s[-m:] - s[-m - 1], floc=0.0)
    assert abs(khat - mle) < 0.06, (khat, mle)


def test_pareto_khat_of_a_proposal_that_matches_is_low_and_one_too_narrow_is_high():
    rng = np.random.default_rng(12)
    z = rng.normal(size=100_000)
    # q = N(0, 1) for p = N(0, 1.1^2): bounded weights, k-hat well below 0.5
    good = -0.5 * (z / 1.1) ** 2 + 0.5 * z**2
    # q = N(0, 1) for p = N(0, 3^2): w = exp(4 z^2 / 9) has tail shape 1 - 1/9, far past 0.7
    bad = -0.5 * (z / 3.0) ** 2 + 0.5 * z**2
    assert diagnostics.pareto_khat(good) < 0.3 < 0.7 < diagnostics.pareto_khat(bad)
    estimate = diagnostics.importance_log_normalizer(
        tfp.distributions.Normal(0.0, 1.0),
        lambda x: -0.5 * (x / 3.0) ** 2,
        num_samples=50_000,
        seed=[1, 2],
    )
    assert estimate.khat > 0.7
    with pytest.raises(ValueError, match="log_weights must be >= 10 finite numbers, got 3"):
        diagnostics.pareto_khat([0.0, 1.0, 2.0])


def test_importance_weighted_bound_rises_with_k_to_ln_z_and_is_minus_the_bound_at_k_1():
    p = tfp.distributions.MultivariateNormalDiag([0.5, -0.5], [1.0, 1.5])
    q = tfp.distributions.MultivariateNormalDiag([0.0, 0.0], [1.5, 2.0])

    def log_p(z):
        return p.log_prob(z) + 1.25  # ln Z = 1.25

    one, error = diagnostics.importance_weighted_bound(q, log_p, 1, 100_000, seed=[1, 2])
    kl = float(tfp.distributions.kl_divergence(q, p))  # closed form
    assert abs(one - (1.25 - kl)) < 4 * error  # E_q[ln w] = ln Z - KL(q || p)
    bounds = [
        diagnostics.importance_weighted_bound(q, log_p, k, 20_000, seed=[3, k])[0]
        for k in (1, 5, 50)
    ]
    assert bounds[0] < bounds[1] < bounds[2] < 1.25 + 0.01
    assert 1.25 - bounds[2] < 0.1 * (1.25 - bounds[0])
