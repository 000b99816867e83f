"""tfnf.sampling: Philox-4x32-10 against Random123's known answers, and the normal draws' distribution."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfnf import sampling

# Random123 1.14, examples/kat_vectors: philox4x32 with 10 rounds (counter, key, expected output).
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox_matches_random123s_known_answers(counter, key, expected):
    as_u32 = lambda values: [tf.constant(np.uint32(v), tf.uint32) for v in values]  # noqa: E731
    out = sampling.philox4x32(as_u32(counter), as_u32(key))
    assert tuple(int(w.numpy()) for w in out) == expected


def test_philox_under_xla_gives_the_same_bits():
    counter = [tf.constant(np.arange(5, dtype=np.uint32) * 977)] + [tf.zeros([5], tf.uint32)] * 3
    key = [tf.constant(np.uint32(12345), tf.uint32), tf.constant(np.uint32(678), tf.uint32)]
    eager = sampling.philox4x32(counter, key)
    compiled = tf.function(sampling.philox4x32, jit_compile=True)(counter, key)
    for a, b in zip(eager, compiled):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_draws_are_standard_normal(dtype):
    z = sampling.standard_normal([400_000], seed=[3, 7], dtype=dtype).numpy().astype(np.float64)
    assert z.dtype == np.float64 and np.isfinite(z).all()
    n = len(z)
    # Moments against N(0, 1), each within 5 standard errors (the draw is fixed by its seed: not flaky).
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(scipy.stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(scipy.stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3
    # Tails: the fraction beyond 3 and 4 sd, against the normal's.
    for t in (3.0, 4.0):
        expected = 2 * scipy.stats.norm.sf(t)
        assert abs(np.mean(np.abs(z) > t) - expected) < 5 * np.sqrt(expected / n)
    # Neighbours (the two normals of one Box-Muller pair, and of adjacent blocks) are uncorrelated.
    for lag in (1, 2, 4):
        assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1]) < 5 / np.sqrt(n)


def test_seeds_give_independent_streams_and_shapes_extend():
    a = sampling.standard_normal([100_000], seed=[1, 0]).numpy()
    b = sampling.standard_normal([100_000], seed=[1, 1]).numpy()
    c = sampling.standard_normal([100_000], seed=[2, 0]).numpy()
    for x, y in ((a, b), (a, c), (b, c)):
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(len(x))
    # Same seed, same draws; a longer draw extends a shorter one, and the shape only arranges them (the
    # bits are the same; log and cos may round the last float32 bit differently for another length).
    np.testing.assert_array_equal(sampling.standard_normal([100_000], seed=[1, 0]).numpy(), a)
    np.testing.assert_allclose(sampling.standard_normal([25, 4], seed=[1, 0]).numpy().ravel(), a[:100], rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(sampling.standard_normal([7], seed=[1, 0]).numpy(), a[:7], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_eager_and_xla_draw_the_same_normals(dtype):
    draw = lambda seed: sampling.standard_normal([1000, 3], seed, dtype)  # noqa: E731
    seed = tf.constant([11, 5])
    np.testing.assert_allclose(tf.function(draw, jit_compile=True)(seed).numpy(), draw(seed).numpy(),
                               rtol=1e-5 if dtype == tf.float32 else 1e-12, atol=1e-6 if dtype == tf.float32 else 1e-13)


def test_bad_dtype_is_named():
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got float16"):
        sampling.standard_normal([3], [0, 0], tf.float16)
