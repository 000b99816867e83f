"""Planar flow f(z) = z + u_hat * tanh(w.z + b) as a TFP bijector.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows",
    ICML 2015, eq. 10-12 and Appendix A.1.
"""

import types

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, parameter_properties, tensor_util

from tfnf._checks import positive_int
from tfnf.bijectors._checks import check_event_shapes, finiteness_checks

__all__ = [
    "PlanarFlow",
    "Planar",
    "constrain_u",
    "identity_u",
    "INVERSE_ITERATIONS",
    "SOFTPLUS_INVERSE_OF_1",
]

# Newton in `_solve_alpha` converges monotonically, quadratically for a well-conditioned map
# and linearly where w.u_hat -> -1; 50 steps cover both (benchmarks/RESULTS.md). The inverse
# is not on the training path, so the cost is only in log_prob.
INVERSE_ITERATIONS = 50

SOFTPLUS_INVERSE_OF_1 = 0.5413248546129181  # ln(e - 1), correctly rounded: softplus of it is 1


def _dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """a, b: [..., D] -> [...]."""
    return tf.reduce_sum(a * b, axis=-1)


# Below this many dimensions the element-wise form is the faster (K = 32, D = 2: 1.4-1.6 ms
# a step against 2.2 as products; benchmarks/RESULTS.md).
MATVEC_MIN_DIM = 8


def _wide(z: tf.Tensor) -> bool:
    """Rows of at least MATVEC_MIN_DIM (static) numbers, in a batch of them."""
    rank = z.shape.rank
    return rank is not None and rank > 1 and (z.shape[-1] or 0) >= MATVEC_MIN_DIM


def _dot_rows(z: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """z.v over the last axis, z [..., D], v broadcast against it -> [...].

    When v is one vector shared by every row of z (a flow's own maps, not amortised
    ones) this is a matrix-vector product, which XLA emits as one; an element-wise
    product and a sum over the last axis is a reduction XLA's CPU backend does not
    vectorise (benchmarks/RESULTS.md).
    """
    if v.shape.rank == 1 and _wide(z):
        return tf.tensordot(z, v, 1)
    return _dot(z, v)


def _sum_rows_outer(a: tf.Tensor, x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """a[..., None] * x, summed over the axes where `like` (a constant of the maps) was shared.

    For a vector `like` [D] and x [..., D] the sum over every leading axis is x^T a,
    a matrix-vector product; otherwise the per-row products, which the caller sums.
    """
    if like.shape.rank == 1 and _wide(x):
        axes = list(range(x.shape.rank - 1))
        return tf.tensordot(a, x, [axes, axes])
    return a[..., tf.newaxis] * x


def _over_norm_sq(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """x / ||w||^2 over the last axis, and 0 where w = 0 (the map is then a shift)."""
    w_sq = _dot(w, w)[..., tf.newaxis]
    return tf.where(w_sq > 0, x / tf.where(w_sq > 0, w_sq, tf.ones_like(w_sq)), tf.zeros_like(x))


def constrain_u(u: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """The invertibility reparameterisation u -> u_hat (Appendix A.1).

    u_hat = u + (m(w.u) - w.u) w / ||w||^2 with m(x) = -1 + softplus(x), so that
    w.u_hat = m(w.u) > -1. Where w = 0 the map is a shift and u is returned.

    Arguments:
        u: [..., D] unconstrained.
        w: [..., D].
    Returns:
        u_hat: [..., D].
    """
    wu = _dot(w, u)[..., tf.newaxis]
    return u + _over_norm_sq((tf.math.softplus(wu) - 1.0 - wu) * w, w)


def identity_u(w: tf.Tensor) -> tf.Tensor:
    """The raw u whose u_hat is 0, making the map the identity: u = ln(e - 1) w / ||w||^2.

    With u parallel to w, w.u = c and u_hat = m(c) w / ||w||^2, zero where
    m(c) = softplus(c) - 1 = 0. w: [..., D] -> [..., D].
    """
    return _over_norm_sq(tf.constant(SOFTPLUS_INVERSE_OF_1, w.dtype) * w, w)


def one_plus_w_u_hat(u: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """1 + w.u_hat = softplus(w.u) > 0 in closed form (1 where w = 0). u, w: [..., D] -> [...]."""
    return tf.where(_dot(w, w) > 0, tf.math.softplus(_dot(w, u)), tf.ones_like(w[..., 0]))


def _jacobian_factor(t: tf.Tensor, one_plus_m: tf.Tensor) -> tf.Tensor:
    """1 + m tanh'(a) = t^2 + (1 - t^2)(1 + m), t = tanh(a), m = w.u_hat (eq. 12).

    Written as a sum of two non-negative terms, so nothing cancels when m is
    close to -1; it is det df/dz, and g'(s) of the inverse's scalar equation.
    """
    t2 = tf.square(t)
    return t2 + (1.0 - t2) * one_plus_m


def _solve_alpha(c: tf.Tensor, one_plus_m: tf.Tensor, b: tf.Tensor, iterations: int) -> tf.Tensor:
    """Solve alpha + m tanh(alpha + b) = c for alpha, m = w.u_hat > -1.

    In s = alpha + b the equation is g(s) = s + m tanh(s) - k = 0, k = c + b,
    strictly increasing, with one inflection point at s = 0. Newton started at
    s0 = sign(k) max(|k| - m, 0) lies on the root's side of the inflection
    point, where g is convex or concave such that every Newton iterate stays
    between s0 and the root: convergence is monotone and needs no bracket.
    A fixed number of steps, so the loop traces and compiles under XLA.

    Arguments:
        c, one_plus_m, b: [...] broadcastable; c = w.y, one_plus_m = 1 + w.u_hat.
    """

    def g_over_dg(s, k, one_plus_m):
        t = tf.tanh(s)
        return tf.math.divide_no_nan(
            s + (one_plus_m - 1.0) * t - k, _jacobian_factor(t, one_plus_m)
        )

    k = c + b
    k_, one_plus_m_ = tf.stop_gradient(k), tf.stop_gradient(one_plus_m)
    s = tf.sign(k_) * tf.maximum(tf.abs(k_) - (one_plus_m_ - 1.0), 0.0)
    s = tf.while_loop(
        lambda i, _: i < iterations,
        lambda i, s: (i + 1, s - g_over_dg(s, k_, one_plus_m_)),
        (tf.constant(0), s),
        maximum_iterations=iterations,
    )[1]
    # One more Newton step, differentiated, gives the implicit-function gradient
    # ds/dtheta = -(dg/dtheta) / g' at the root without backpropagating the loop.
    return s - g_over_dg(s, k, one_plus_m) - b


def _step(constants: tuple, z: tf.Tensor) -> tuple:
    """One planar map from (u_hat, w, b, 1 + w.u_hat): (f(z), log|det df/dz|), eq. 10-12."""
    u_hat, w, b, one_plus_m = constants
    t = tf.tanh(_dot_rows(z, w) + b)
    return z + u_hat * t[..., tf.newaxis], tf.math.log(_jacobian_factor(t, one_plus_m))


def _step_saving(constants: tuple, z: tf.Tensor) -> tuple:
    """`_step`, and what running it backwards needs: (f(z), log|det|, t = tanh(w.z + b))."""
    u_hat, w, b, one_plus_m = constants
    t = tf.tanh(_dot_rows(z, w) + b)
    return z + u_hat * t[..., tf.newaxis], tf.math.log(_jacobian_factor(t, one_plus_m)), t


def _step_reverse(constants: tuple, y: tf.Tensor, t: tf.Tensor, grad_y, grad_log_det) -> tuple:
    """One planar map run backwards from its output y and its saved t, in closed form.

    The input is z = y - u_hat t exactly (t is saved, so no inverse is solved), and
    the vector-Jacobian product of (y, log J), J = t^2 + (1 - t^2)(1 + m), is

        dL/da = (grad_y . u_hat) (1 - t^2) + grad_log_det 2 t (1 - t^2) (1 - (1 + m)) / J,
        dL/dz = grad_y + dL/da w,

    and for the constants: dL/du_hat = grad_y t, dL/dw = dL/da z, dL/db = dL/da,
    dL/d(1 + m) = grad_log_det (1 - t^2) / J, per sample (the caller sums them over
    the samples that share a constant; dL/du_hat and dL/dw come summed already when
    u_hat and w are single vectors, as matrix-vector products).

    Returns:
        (z, dL/dz, (dL/du_hat, dL/dw, dL/db, dL/d(1 + m))).
    """
    u_hat, w, _, one_plus_m = constants
    z = y - u_hat * t[..., tf.newaxis]
    s = 1.0 - tf.square(t)
    jacobian = _jacobian_factor(t, one_plus_m)
    grad_a = (
        _dot_rows(grad_y, u_hat) * s + grad_log_det * 2.0 * t * s * (1.0 - one_plus_m) / jacobian
    )
    grad_z = grad_y + grad_a[..., tf.newaxis] * w
    grads = (
        _sum_rows_outer(t, grad_y, u_hat),
        _sum_rows_outer(grad_a, z, w),
        grad_a,
        grad_log_det * s / jacobian,
    )
    return z, grad_z, grads


def _column_dot(v: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    """v.z for every column of z: v [D], z [D, B] -> [B].

    A sum over the leading axis, which vectorises along the batch; from
    MATVEC_MIN_DIM dimensions up a vector-matrix product.
    """
    if (z.shape[0] or 0) >= MATVEC_MIN_DIM:
        return tf.tensordot(v, z, 1)
    return tf.reduce_sum(v[:, tf.newaxis] * z, axis=0)


def _columns_saving(constants: tuple, z: tf.Tensor) -> tuple:
    """`_step_saving` for one map's own vectors u_hat, w [D] and the batch as columns, z [D, B]."""
    u_hat, w, b, one_plus_m = constants
    t = tf.tanh(_column_dot(w, z) + b)
    return z + u_hat[:, tf.newaxis] * t, tf.math.log(_jacobian_factor(t, one_plus_m)), t


def _columns_reverse(constants: tuple, y: tf.Tensor, t: tf.Tensor, grad_y, grad_log_det) -> tuple:
    """`_step_reverse` with the batch as columns (y, grad_y [D, B]); the constants' gradients
    come summed over the batch: dL/du_hat = grad_y t, dL/dw = z dL/da (matrix-vector products),
    dL/db and dL/d(1 + m) sums over the batch."""
    u_hat, w, _, one_plus_m = constants
    z = y - u_hat[:, tf.newaxis] * t
    s = 1.0 - tf.square(t)
    jacobian = _jacobian_factor(t, one_plus_m)
    grad_a = (
        _column_dot(u_hat, grad_y) * s + grad_log_det * 2.0 * t * s * (1.0 - one_plus_m) / jacobian
    )
    grad_z = grad_y + w[:, tf.newaxis] * grad_a
    grads = (
        tf.linalg.matvec(grad_y, t),
        tf.linalg.matvec(z, grad_a),
        tf.reduce_sum(grad_a),
        tf.reduce_sum(grad_log_det * s / jacobian),
    )
    return z, grad_z, grads


def _columns_apply(constants: tuple) -> bool:
    """Whether the column form fits: u_hat, w [K, D] and b, 1 + w.u_hat [K], no batch axes."""
    return [c.shape.rank for c in constants] == [2, 2, 1, 1]


# A `Stack` of planar maps backpropagates with these instead of a tape (`stack._sweep`);
# with the batch as columns where every map's constants are single vectors.
_step.saving, _step.reverse = _step_saving, _step_reverse
_step.columns = types.SimpleNamespace(
    saving=_columns_saving, reverse=_columns_reverse, applies=_columns_apply
)


class PlanarFlow(tfp.bijectors.AutoCompositeTensorBijector):
    """Planar flow y = z + u_hat tanh(w.z + b) with an exact inverse.

    Parameters are unconstrained: `u` is mapped to `u_hat` (Appendix A.1) inside,
    so any real `u, w, b` give an invertible map. The inverse solves the scalar
    monotone equation along w by Newton's method (`_solve_alpha`).

    Arguments:
        u: [..., D] unconstrained.
        w: [..., D].
        b: [...] bias.
        inverse_iterations: fixed number of Newton steps in `inverse`.
        validate_args: check shapes and finiteness of the parameters.

    References:
        Rezende & Mohamed (2015), eq. 10-12, Appendix A.1.
    """

    def __init__(
        self,
        u,
        w,
        b,
        inverse_iterations: int = INVERSE_ITERATIONS,
        validate_args: bool = False,
        name: str = "planar",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([u, w, b], dtype_hint=tf.float32)
            if not dtype_util.is_floating(dtype):
                raise TypeError(
                    f"PlanarFlow: u, w, b must be floating point, got {dtype_util.name(dtype)}."
                )
            self._u = tensor_util.convert_nonref_to_tensor(u, dtype=dtype, name="u")
            self._w = tensor_util.convert_nonref_to_tensor(w, dtype=dtype, name="w")
            self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
            self._inverse_iterations = positive_int(
                inverse_iterations, "PlanarFlow: inverse_iterations"
            )
            check_event_shapes("PlanarFlow", u=self._u, w=self._w)
            super().__init__(
                forward_min_event_ndims=1,
                dtype=dtype,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict(
            u=parameter_properties.ParameterProperties(event_ndims=1),
            w=parameter_properties.ParameterProperties(event_ndims=1),
            b=parameter_properties.ParameterProperties(event_ndims=0),
        )

    @property
    def u(self):
        return self._u

    @property
    def w(self):
        return self._w

    @property
    def b(self):
        return self._b

    def u_hat(self) -> tf.Tensor:
        """The constrained u, [..., D]; w.u_hat > -1."""
        return constrain_u(tf.convert_to_tensor(self._u), tf.convert_to_tensor(self._w))

    def constants_and_step(self) -> tuple:
        """The maps as per-map constants and a pure function of one map: (constants, step).

        constants: u_hat, w, b and 1 + w.u_hat of every map at once ([...]), so a
        loop over maps (`Stack`) does not recompute them map by map; step(c, z)
        -> (f(z), log|det df/dz|) for one slice c of them.
        """
        u, w = tf.convert_to_tensor(self._u), tf.convert_to_tensor(self._w)
        return (constrain_u(u, w), w, tf.convert_to_tensor(self._b), one_plus_w_u_hat(u, w)), _step

    def _forward(self, z):
        return _step(self.constants_and_step()[0], z)[0]

    def _inverse(self, y):
        u, w, b = (tf.convert_to_tensor(p) for p in (self._u, self._w, self._b))
        alpha = _solve_alpha(_dot(w, y), one_plus_w_u_hat(u, w), b, self._inverse_iterations)
        return y - constrain_u(u, w) * tf.tanh(alpha + b)[..., tf.newaxis]

    def _forward_log_det_jacobian(self, z):
        return _step(self.constants_and_step()[0], z)[1]

    def _inverse_log_det_jacobian(self, y):
        return -self._forward_log_det_jacobian(self._inverse(y))

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        return finiteness_checks("PlanarFlow", is_init, u=self._u, w=self._w, b=self._b)


Planar = PlanarFlow  # the name before 0.2; kept for one release
