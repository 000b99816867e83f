"""Base noise: `sampling.standard_normal` draws N(0, 1), finite, eagerly and under XLA."""

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from tfnf import sampling

DRAWS = {
    "eager": lambda shape, seed, dtype: sampling.standard_normal(shape, seed, dtype),
    "xla": tf.function(sampling.standard_normal, jit_compile=True),
}


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("how", DRAWS)
def test_standard_normal_has_the_normal_cdf(how, dtype):
    n = 400_000
    eps = DRAWS[how]([n], tf.constant([7, 11]), dtype).numpy().astype(np.float64)
    points = np.array([-3.0, -1.5, -0.5, 0.0, 0.5, 1.5, 3.0])
    expected = scipy.special.ndtr(points)  # Phi in closed form
    empirical = (eps[:, None] <= points).mean(axis=0)
    tolerance = 5 * np.sqrt(expected * (1 - expected) / n)  # five binomial standard errors
    np.testing.assert_array_less(np.abs(empirical - expected), tolerance)
    assert np.isfinite(eps).all()


@pytest.mark.parametrize("how", DRAWS)
def test_float32_draws_are_the_erfinv_of_uniforms_strictly_inside_minus_one_and_one(how):
    seed = tf.constant([3, 4])
    eps = DRAWS[how]([1 << 20, 4], seed, tf.float32).numpy()
    # the transform's ends: the uniforms' extremes, one step inside -1 and 3 steps of 2^-24
    # below 1 (2.0 * [0, 1 - 2^-23) + nextafter(-1, 0), rounded)
    ends = np.array([np.nextafter(np.float32(-1), np.float32(0)), 1 - 3 * 2.0**-24])
    lowest, highest = np.sqrt(2.0) * scipy.special.erfinv(ends)
    assert lowest - 1e-5 <= eps.min() and eps.max() <= highest + 1e-5
    u = scipy.special.erf(eps.astype(np.float64) / np.sqrt(2.0))  # back to the uniforms
    assert -1 < u.min() and u.max() < 1
