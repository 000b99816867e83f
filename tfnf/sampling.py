"""Standard normal draws from the Philox-4x32-10 counter-based generator, written in TensorFlow ops.

The training steps draw their base noise here. `tf.random.stateless_normal`
with `alg="philox"` runs the same generator, but under XLA on a CPU it took
about 0.28 ms for the 8,192 normals of a K = 32 step, a quarter of the step;
the same generator as plain integer ops, with the Box-Muller transform, took
0.17 ms (benchmarks/RESULTS.md). Being ordinary ops, it also gives the same
bits with and without XLA (then the same normals, up to the rounding of log and
cos), which TF's stateless kernels do not for a seed computed at run time.

The generator is Salmon et al.'s Philox-4x32 with 10 rounds (the Random123
default, also TF's and JAX's), checked against Random123's known-answer
vectors in the tests; each 128-bit output block comes from the counter (block
index, 0, 0, 0) under the key (seed[0], seed[1]).

References:
    J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers:
    as easy as 1, 2, 3", SC 2011. G. E. P. Box and M. E. Muller, "A note on the
    generation of random normal deviates", Ann. Math. Statist. 29 (1958).
"""

import math

import tensorflow as tf

__all__ = ["philox4x32", "standard_normal"]

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox-4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
ROUNDS = 10


def _mulhilo(a: tf.Tensor, multiplier: int) -> tuple:
    """(high, low) 32-bit halves of the 64-bit product a * multiplier; a: uint32."""
    product = tf.cast(a, tf.uint64) * tf.constant(multiplier, tf.uint64)
    return tf.cast(tf.bitwise.right_shift(product, tf.constant(32, tf.uint64)), tf.uint32), tf.cast(product, tf.uint32)


def philox4x32(counter: tuple, key: tuple, rounds: int = ROUNDS) -> tuple:
    """Philox-4x32: four uint32 words of output for each counter (c0, c1, c2, c3) under key (k0, k1).

    Arguments:
        counter: four uint32 tensors of one shape.
        key: two uint32 tensors broadcastable to it.
    Returns:
        Four uint32 tensors of the counter's shape.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    xor = tf.bitwise.bitwise_xor
    for r in range(rounds):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = xor(xor(hi1, c1), k0), lo1, xor(xor(hi0, c3), k1), lo0
        if r < rounds - 1:
            k0, k1 = k0 + tf.constant(_W0, tf.uint32), k1 + tf.constant(_W1, tf.uint32)
    return c0, c1, c2, c3


def _open_uniform(words: list, dtype) -> list:
    """Uniforms in (0, 1), never 0 or 1: 24-bit for float32 (one word each), 53-bit for float64 (two words each)."""
    if dtype == tf.float32:
        return [(tf.cast(tf.bitwise.right_shift(w, tf.constant(8, tf.uint32)), tf.float32) + 0.5) * 2.0**-24
                for w in words]
    out = []
    for high, low in zip(words[0::2], words[1::2]):
        high = tf.cast(tf.bitwise.right_shift(high, tf.constant(5, tf.uint32)), tf.float64)  # 27 bits
        low = tf.cast(tf.bitwise.right_shift(low, tf.constant(6, tf.uint32)), tf.float64)  # 26 bits
        out.append((high * 2.0**26 + low + 0.5) * 2.0**-53)
    return out


def standard_normal(shape, seed, dtype=tf.float32) -> tf.Tensor:
    """N(0, 1) draws of the given shape: Philox-4x32-10 bits through the Box-Muller transform.

    A stateless function of (shape, seed): the same arguments give the same
    draws, eager or under XLA (to the rounding of log and cos). The k-th normal
    in row-major order depends only on (seed, k // 4) in float32 and
    (seed, k // 2) in float64, so a longer draw extends a shorter one.

    Arguments:
        shape: a 1-D int32 tensor or a list of ints.
        seed: two int32 values (a stateless seed, as `tf.random.stateless_normal` takes).
        dtype: float32 (24-bit uniforms; |z| <= 5.9) or float64 (53-bit uniforms; |z| <= 8.6).
    Returns:
        A tensor of `shape` and `dtype`.
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.float64):
        raise ValueError(f"standard_normal: dtype must be float32 or float64, got {dtype.name}.")
    shape = tf.cast(tf.convert_to_tensor(shape), tf.int32)
    size = tf.reduce_prod(shape)
    per_block = 4 if dtype == tf.float32 else 2  # normals per 128-bit block
    blocks = (size + per_block - 1) // per_block
    seed = tf.cast(tf.convert_to_tensor(seed), tf.uint32)
    counter = tf.cast(tf.range(blocks), tf.uint32)
    zero = tf.zeros_like(counter)
    words = philox4x32((counter, zero, zero, zero), (seed[0], seed[1]))
    u = _open_uniform(list(words), dtype)  # float32: 4 uniforms per block, float64: 2
    normals = []
    for radius_u, angle_u in zip(u[0::2], u[1::2]):
        radius = tf.sqrt(-2.0 * tf.math.log(radius_u))
        angle = (2.0 * math.pi) * angle_u
        normals += [radius * tf.cos(angle), radius * tf.sin(angle)]
    z = tf.reshape(tf.stack(normals, axis=-1), [-1])  # block-major: block b holds normals b*per_block ...
    return tf.reshape(z[:size], shape)
