"""Radial flow f(z) = z + beta h(r) (z - z0), h(r) = 1 / (alpha + r), as a TFP bijector.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows",
    ICML 2015, eq. 14 and Appendix A.2.
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, parameter_properties, tensor_util

from tfnf.bijectors._checks import check_event_shapes, finiteness_checks

__all__ = ["RadialFlow", "Radial"]


def _safe_norm(x: tf.Tensor) -> tf.Tensor:
    """||x|| over the last axis, [..., D] -> [...], with a zero (not NaN) gradient at x = 0."""
    sq = tf.reduce_sum(tf.square(x), axis=-1)
    positive = sq > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, sq, tf.ones_like(sq))), tf.zeros_like(sq))


def _solve_radius(r_y: tf.Tensor, alpha: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """The r >= 0 with r (s + r) / (alpha + r) = r_y, s = softplus(raw beta) = alpha + beta.

    The quadratic r^2 + p r - alpha r_y = 0 with p = s - r_y, solved by the root
    formula that does not cancel for either sign of p.
    """
    p = s - r_y
    disc = tf.sqrt(tf.square(p) + 4.0 * alpha * r_y)
    return tf.where(p > 0, 2.0 * alpha * r_y / (p + disc), 0.5 * (disc - p))


def _step(constants: tuple, z: tf.Tensor) -> tuple:
    """One radial map from (z0, alpha, s = alpha + beta): (f(z), log|det df/dz|), eq. 14."""
    z0, alpha, s = constants
    d = z - z0
    r = _safe_norm(d)
    num_dims = tf.cast(tf.shape(z)[-1], z.dtype)
    # 1 + beta h(r) = (s + r) / (alpha + r), a ratio of positives, and eq. 14's
    # (1 + beta h)^(D-1) (1 + beta h + beta h' r) with
    # 1 + beta h + beta h' r = (r^2 + 2 alpha r + alpha s) / (alpha + r)^2, all terms >= 0.
    log_alpha_r = tf.math.log(alpha + r)
    log_det = (
        (num_dims - 1.0) * (tf.math.log(s + r) - log_alpha_r)
        + tf.math.log(r * (r + 2.0 * alpha) + alpha * s)
        - 2.0 * log_alpha_r
    )
    return z0 + d * ((s + r) / (alpha + r))[..., tf.newaxis], log_det


class RadialFlow(tfp.bijectors.AutoCompositeTensorBijector):
    """Radial flow y = z + beta (z - z0) / (alpha + ||z - z0||) with a closed-form inverse.

    Parameters are unconstrained: alpha = softplus(a) > 0 and
    beta = -alpha + softplus(b) > -alpha (Appendix A.2), so any real `z0, a, b`
    give an invertible map.

    Arguments:
        z0: [..., D] reference point.
        a: [...] raw alpha.
        b: [...] raw beta.
        validate_args: check the parameters are finite.

    References:
        Rezende & Mohamed (2015), eq. 14, Appendix A.2.
    """

    def __init__(self, z0, a, b, validate_args: bool = False, name: str = "radial"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([z0, a, b], dtype_hint=tf.float32)
            if not dtype_util.is_floating(dtype):
                raise TypeError(
                    f"RadialFlow: z0, a, b must be floating point, got {dtype_util.name(dtype)}."
                )
            self._z0 = tensor_util.convert_nonref_to_tensor(z0, dtype=dtype, name="z0")
            self._a = tensor_util.convert_nonref_to_tensor(a, dtype=dtype, name="a")
            self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
            check_event_shapes("RadialFlow", z0=self._z0)
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
            z0=parameter_properties.ParameterProperties(event_ndims=1),
            a=parameter_properties.ParameterProperties(event_ndims=0),
            b=parameter_properties.ParameterProperties(event_ndims=0),
        )

    @property
    def z0(self):
        return self._z0

    def alpha(self) -> tf.Tensor:
        """alpha = softplus(a) > 0, [...]."""
        return tf.math.softplus(self._a)

    def beta(self) -> tf.Tensor:
        """beta = -alpha + softplus(b) > -alpha, [...]."""
        return tf.math.softplus(self._b) - self.alpha()

    def constants_and_step(self) -> tuple:
        """The maps as per-map constants and a pure function of one map: (constants, step).

        constants: z0, alpha and s = alpha + beta of every map at once ([...]);
        step(c, z) -> (f(z), log|det df/dz|) for one slice c of them.
        """
        return (tf.convert_to_tensor(self._z0), self.alpha(), tf.math.softplus(self._b)), _step

    def _forward(self, z):
        return _step(self.constants_and_step()[0], z)[0]

    def _inverse(self, y):
        z0, alpha, s = self.constants_and_step()[0]
        d = y - z0
        r = _solve_radius(_safe_norm(d), alpha, s)
        return z0 + d * ((alpha + r) / (s + r))[..., tf.newaxis]

    def _forward_log_det_jacobian(self, z):
        return _step(self.constants_and_step()[0], z)[1]

    def _inverse_log_det_jacobian(self, y):
        return -self._forward_log_det_jacobian(self._inverse(y))

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        return finiteness_checks("RadialFlow", is_init, z0=self._z0, a=self._a, b=self._b)


Radial = RadialFlow  # the name before 0.2; kept for one release
