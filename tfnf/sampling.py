"""Drawing from q: base noise, the push-forward through the maps (eq. 13), and replica slices.

Every sampler of a model goes through `diagonal_normal_draw` for its noise and
`push_forward` for the maps, so the training steps of the flow model and of the
DLGM draw and transform in the same way.
"""

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "FlowDistribution",
    "ReplicaRows",
    "diagonal_normal_draw",
    "forward_and_log_det",
    "push_forward",
    "replica_rows",
    "standard_normal",
]


class ReplicaRows(NamedTuple):
    """This replica's slice of the global batch: rows `offset` ... of a batch of `total` rows."""

    offset: tf.Tensor
    total: tf.Tensor


def replica_rows(batch) -> ReplicaRows | None:
    """Where this replica's rows lie in the global batch, under a `tf.distribute` strategy.

    Each replica gathers every replica's size, so a last batch that the strategy
    splits unevenly is placed right.

    Arguments:
        batch: this replica's batch size, a scalar int32 tensor.
    Returns:
        ReplicaRows(offset, total) of scalar tensors; None outside a strategy or with one replica.
    """
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return None
    sizes = replica.all_gather(tf.reshape(tf.cast(batch, tf.int32), [1]), axis=0)  # [replicas]
    return ReplicaRows(
        tf.reduce_sum(sizes[: replica.replica_id_in_sync_group]), tf.reduce_sum(sizes)
    )


def standard_normal(shape, seed, dtype=tf.float32) -> tf.Tensor:
    """Stateless N(0, 1) draws; in float32, Philox uniforms on (-1, 1) mapped by sqrt(2) erfinv.

    The inverse-CDF transform, as JAX draws its normals: under XLA on a CPU it
    costs about half of `tf.random.stateless_normal`'s Box-Muller, whose sine and
    cosine XLA does not vectorise (4,096 x 128 draws: 4.6 ms against 7.9;
    benchmarks/RESULTS.md). Philox, because TensorFlow runs Threefry only under XLA.
    The uniforms start one step inside -1 and end below 1, so every draw is finite:
    they lie in [-5.42, 5.17], outside which N(0, 1) has mass 1.5e-7. Other dtypes
    (float64, the precision of checks, not of speed) keep `stateless_normal` (Philox).

    Arguments:
        shape: the draws' shape, a list or 1-D int32 tensor.
        seed: stateless seed, a pair of integers.
        dtype: a floating dtype.
    """
    dtype = tf.as_dtype(dtype)
    if dtype != tf.float32:
        return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")
    low = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))
    u = tf.random.stateless_uniform(shape, seed, minval=low, maxval=1.0, dtype=dtype, alg="philox")
    return math.sqrt(2.0) * tf.math.erfinv(u)


def diagonal_normal_draw(
    loc: tf.Tensor, scale: tf.Tensor, sample_shape, seed, rows: ReplicaRows | None = None
) -> tuple:
    """Reparameterised draws z = loc + scale * eps of N(loc, diag(scale^2)) and their log-densities.

    eps comes from `standard_normal`. With `rows`, the call
    draws the global batch's noise and keeps this replica's rows, so replicas
    together draw what one device would.

    Arguments:
        loc, scale: [..., D] (batch shape [...]).
        sample_shape: draws per batch member, a list or tuple of ints.
        seed: stateless seed, a pair of integers.
        rows: None, or this call's slice of the first axis of the global draw.
    Returns:
        (z `[*sample_shape, ..., D]`, ln N(z; loc, scale) `[*sample_shape, ...]`).
    """
    num = len(sample_shape)
    shape = tf.concat([tf.constant(list(sample_shape), tf.int32, shape=[num]), tf.shape(loc)], 0)
    if rows is None:
        eps = standard_normal(shape, seed, loc.dtype)
    else:
        whole = tf.tensor_scatter_nd_update(shape, [[0]], [rows.total])
        eps = standard_normal(whole, seed, loc.dtype)
        eps = eps[rows.offset : rows.offset + shape[0]]
    log_q = (
        -0.5 * tf.reduce_sum(tf.square(eps), axis=-1)
        - tf.reduce_sum(tf.math.log(scale), axis=-1)
        - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    )
    return loc + scale * eps, log_q


def forward_and_log_det(bijector: tfp.bijectors.Bijector, x: tf.Tensor) -> tuple:
    """(f(x), log|det df/dx|) for vector events, x: [..., D] -> ([..., D], [...]).

    One sweep where the bijector offers it (`tfnf.bijectors.Stack.forward_and_log_det`);
    otherwise TFP's `forward` and `forward_log_det_jacobian`.
    """
    sweep = getattr(bijector, "forward_and_log_det", None)
    if sweep is not None:
        return sweep(x)
    return bijector.forward(x), bijector.forward_log_det_jacobian(x, event_ndims=1)


def push_forward(bijector: tfp.bijectors.Bijector, z0: tf.Tensor, log_q0: tf.Tensor) -> tuple:
    """Draws of the base pushed through the maps, with their density (eq. 13).

    z_K = f(z0) and ln q_K(z_K) = ln q0(z0) - sum_k ln|det df_k/dz_{k-1}|.

    Arguments:
        bijector: f = f_K o ... o f_1.
        z0: [..., D] draws of q0; log_q0: [...] their log-densities.
    Returns:
        (z_K [..., D], ln q_K(z_K) [...]).
    """
    z, log_det = forward_and_log_det(bijector, z0)
    return z, log_q0 - log_det


class FlowDistribution(tfp.distributions.TransformedDistribution):
    """q_K: a `tfd.TransformedDistribution` whose density is 0 (log_prob -inf) far out, not NaN.

    Where z is infinite, or so large that `|z|^2` overflows (beyond sqrt(max float) / 4, about
    4.6e18 in float32), the maps' inverse would compute inf - inf; q's density there is below
    the smallest positive float for any base scale under about 1e15, so log_prob returns its
    limit, -inf (its gradient there is not defined). Elsewhere it is TFP's `log_prob`, computed
    on z itself, so the bijector cache still answers for samples.
    """

    def _log_prob(self, z, **kwargs):
        z = tf.convert_to_tensor(z, dtype_hint=self.dtype)
        outside = tf.reduce_any(tf.abs(z) > math.sqrt(z.dtype.max) / 4, axis=-1)  # inf; NaN stays
        log_prob = super()._log_prob(z, **kwargs)
        return tf.where(outside, tf.constant(-math.inf, log_prob.dtype), log_prob)
