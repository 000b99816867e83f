"""Sylvester flow f(z) = z + Q R h(R~ Q^T z + b) as a TFP bijector, with an exact inverse.

References:
    van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows for
    Variational Inference", UAI 2018, eq. 12-14 and section 3.
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, parameter_properties, tensor_util

from tfnf._checks import positive_int
from tfnf.bijectors._checks import finiteness_checks
from tfnf.bijectors.planar import INVERSE_ITERATIONS, _jacobian_factor, _solve_alpha

__all__ = ["Sylvester", "householder_q", "orthonormal_q", "permutation_q"]


def orthonormal_q(raw: tf.Tensor) -> tf.Tensor:
    """Q with orthonormal columns from any full-rank raw [..., D, M] (M <= D): the Q of its QR.

    Differentiable (TF's QR gradient), exact to round-off, and onto every Q up to the
    signs of its columns, which R's free signs absorb. (The paper iterates an
    orthogonalisation to convergence; QR reaches the same set in one step.)
    """
    return tf.linalg.qr(raw)[0]


def householder_q(vectors: tf.Tensor, num_columns: int | None = None) -> tf.Tensor:
    """Q = H_1 H_2 ... H_n, H_i = I - 2 v_i v_i^T / ||v_i||^2: vectors [..., n, D] -> [..., D, M].

    The first `num_columns` (M, default D) columns of the product of n reflections.
    """
    size = vectors.shape[-1]
    eye = tf.eye(size, dtype=vectors.dtype)
    q = tf.broadcast_to(eye, tf.concat([tf.shape(vectors)[:-2], [size, size]], 0))
    for i in range(vectors.shape[-2]):
        v = vectors[..., i, :]
        v = v / tf.norm(v, axis=-1, keepdims=True)
        # q H = q - 2 (q v) v^T
        q = q - 2.0 * tf.einsum("...d,...e->...de", tf.linalg.matvec(q, v), v)
    return q[..., : num_columns or size]


def permutation_q(size: int, reverse: bool = False, dtype=tf.float32) -> tf.Tensor:
    """The identity, or the reversal of the coordinates: the triangular variant's Q, [D, D]."""
    eye = tf.eye(size, dtype=dtype)
    return eye[::-1] if reverse else eye


def _diagonals(r: tf.Tensor, r_tilde: tf.Tensor) -> tuple:
    """(R, R~) upper triangular from raw [..., M, M]: the strict upper parts as they are and the
    diagonals through tanh, so diag(R) diag(R~) lies in (-1, 1) and the map is invertible."""
    upper_r = tf.linalg.band_part(r, 0, -1) - tf.linalg.band_part(r, 0, 0)
    upper_t = tf.linalg.band_part(r_tilde, 0, -1) - tf.linalg.band_part(r_tilde, 0, 0)
    d_r, d_t = tf.tanh(tf.linalg.diag_part(r)), tf.tanh(tf.linalg.diag_part(r_tilde))
    return upper_r + tf.linalg.diag(d_r), upper_t + tf.linalg.diag(d_t), d_r, d_t


class Sylvester(tfp.bijectors.AutoCompositeTensorBijector):
    """Sylvester flow y = z + Q R tanh(R~ Q^T z + b), rank M, with an exact inverse.

    Q [..., D, M] has orthonormal columns (make it with `orthonormal_q`,
    `householder_q` or `permutation_q`); R and R~ are upper triangular, read from
    raw [..., M, M] matrices: their strict upper parts as given, their diagonals
    through tanh, so that diag(R)_m diag(R~)_m > -1 and the map is invertible. The
    log-det is sum_m log(1 + R_mm R~_mm tanh'(a_m)), a = R~ Q^T z + b.

    The inverse: the part of y orthogonal to Q's columns is z's own, and the part in
    their span, c = Q^T y = v + R h(R~ v + b) with v = Q^T z, is a triangular system
    of scalar monotone equations, solved from the last coordinate to the first with
    the planar map's Newton solve (`planar._solve_alpha`).

    Arguments:
        q: [..., D, M], orthonormal columns (not checked unless validate_args).
        r, r_tilde: [..., M, M] raw (see above); their lower parts are ignored.
        b: [..., M].
        inverse_iterations: Newton steps per coordinate in `inverse`.
        validate_args: check finiteness, and Q^T Q = I to 1e-4.

    References:
        van den Berg et al. (2018), eq. 12-14.
    """

    def __init__(
        self,
        q,
        r,
        r_tilde,
        b,
        inverse_iterations: int = INVERSE_ITERATIONS,
        validate_args: bool = False,
        name: str = "sylvester",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([q, r, r_tilde, b], dtype_hint=tf.float32)
            if not dtype_util.is_floating(dtype):
                raise TypeError(
                    "Sylvester: q, r, r_tilde, b must be floating point, got "
                    f"{dtype_util.name(dtype)}."
                )
            self._q = tensor_util.convert_nonref_to_tensor(q, dtype=dtype, name="q")
            self._r = tensor_util.convert_nonref_to_tensor(r, dtype=dtype, name="r")
            self._r_tilde = tensor_util.convert_nonref_to_tensor(r_tilde, dtype=dtype, name="r_t")
            self._b = tensor_util.convert_nonref_to_tensor(b, dtype=dtype, name="b")
            self._inverse_iterations = positive_int(
                inverse_iterations, "Sylvester: inverse_iterations"
            )
            _check_shapes(self._q, self._r, self._r_tilde, self._b)
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
            q=parameter_properties.ParameterProperties(event_ndims=2),
            r=parameter_properties.ParameterProperties(event_ndims=2),
            r_tilde=parameter_properties.ParameterProperties(event_ndims=2),
            b=parameter_properties.ParameterProperties(event_ndims=1),
        )

    @property
    def q(self):
        return self._q

    @property
    def r(self):
        return self._r

    @property
    def r_tilde(self):
        return self._r_tilde

    @property
    def b(self):
        return self._b

    def _constants(self) -> tuple:
        q = tf.convert_to_tensor(self._q)
        r, r_tilde, d_r, d_t = _diagonals(
            tf.convert_to_tensor(self._r), tf.convert_to_tensor(self._r_tilde)
        )
        return q, r, r_tilde, tf.convert_to_tensor(self._b), 1.0 + d_r * d_t

    def constants_and_step(self) -> tuple:
        """The maps as per-map constants and a pure function of one map: (constants, step).

        constants: Q, R and R~ (their diagonals through tanh), b and 1 + diag(R) diag(R~)
        of every map at once, so a loop over maps (`Stack`) does not rebuild them map
        by map; step(c, z) -> (f(z), log|det df/dz|) for one slice c of them.
        """
        return self._constants(), _step

    def _forward(self, z):
        return _step(self._constants(), z)[0]

    def _forward_log_det_jacobian(self, z):
        return _step(self._constants(), z)[1]

    def _inverse(self, y):
        q, r, r_tilde, b, one_plus = self._constants()
        c = tf.linalg.matvec(q, y, transpose_a=True)  # [..., M]
        size = c.shape[-1]
        v, t = [None] * size, [None] * size
        for m in reversed(range(size)):
            known_a = b[..., m] + sum(r_tilde[..., m, j] * v[j] for j in range(m + 1, size))
            rhs = c[..., m] - sum(r[..., m, j] * t[j] for j in range(m + 1, size))
            d_t = tf.linalg.diag_part(r_tilde)[..., m]
            # v + R_mm tanh(R~_mm v + known_a) = rhs; times R~_mm, for alpha = R~_mm v:
            # alpha + R_mm R~_mm tanh(alpha + known_a) = R~_mm rhs, monotone in alpha.
            alpha = _solve_alpha(d_t * rhs, one_plus[..., m], known_a, self._inverse_iterations)
            safe = tf.where(tf.equal(d_t, 0.0), tf.ones_like(d_t), d_t)
            d_r = tf.linalg.diag_part(r)[..., m]
            v[m] = tf.where(
                tf.equal(d_t, 0.0), rhs - d_r * tf.tanh(known_a), alpha / safe
            )  # R~_mm = 0: the equation is explicit
            t[m] = tf.tanh(tf.where(tf.equal(d_t, 0.0), known_a, alpha + known_a))
        h = tf.stack(t, axis=-1)
        return y - tf.linalg.matvec(q, tf.linalg.matvec(r, h))

    def _inverse_log_det_jacobian(self, y):
        return -self._forward_log_det_jacobian(self._inverse(y))

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        checks = finiteness_checks(
            "Sylvester", is_init, q=self._q, r=self._r, r_tilde=self._r_tilde, b=self._b
        )
        if is_init != tensor_util.is_ref(self._q):
            q = tf.convert_to_tensor(self._q)
            gram = tf.linalg.matmul(q, q, transpose_a=True)
            eye = tf.eye(tf.shape(q)[-1], dtype=q.dtype)
            checks.append(
                tf.debugging.assert_less(
                    tf.reduce_max(tf.abs(gram - eye)),
                    tf.constant(1e-4, q.dtype),
                    message="Sylvester: `q` must have orthonormal columns (Q^T Q = I).",
                )
            )
        return checks


def _step(constants: tuple, z: tf.Tensor) -> tuple:
    """(f(z), log|det df/dz|) of one map from its constants (Q, R, R~, b, 1 + diag products).

    A map shared by every sample (Q [D, M]) runs as matrix products over the batch,
    z [..., D] times Q, R~^T, R^T, Q^T; per-sample maps (Q [B, D, M], amortised) as
    matrix-vector products. (A broadcast matvec of one Q against a [B, D] batch runs as B
    small products: K = 8, D = 40, M = 8 trained 1.8x slower that way, benchmarks/RESULTS.md.)
    """
    q, r, r_tilde, b, one_plus = constants
    if q.shape.rank == r.shape.rank == r_tilde.shape.rank == 2:
        a = tf.tensordot(tf.tensordot(z, q, [[-1], [0]]), r_tilde, [[-1], [-1]]) + b
        t = tf.tanh(a)
        y = z + tf.tensordot(tf.tensordot(t, r, [[-1], [-1]]), q, [[-1], [-1]])
    else:
        a = tf.linalg.matvec(r_tilde, tf.linalg.matvec(q, z, transpose_a=True)) + b
        t = tf.tanh(a)
        y = z + tf.linalg.matvec(q, tf.linalg.matvec(r, t))
    return y, tf.reduce_sum(tf.math.log(_jacobian_factor(t, one_plus)), axis=-1)


def _check_shapes(q, r, r_tilde, b) -> None:
    """ValueError unless q is [..., D, M], r and r_tilde [..., M, M], b [..., M] (static M)."""
    shapes = {
        name: tf.TensorShape(x.shape)
        for name, x in {"q": q, "r": r, "r_tilde": r_tilde, "b": b}.items()
    }
    ranks = {"q": 2, "r": 2, "r_tilde": 2, "b": 1}
    for name, shape in shapes.items():
        if shape.rank is not None and shape.rank < ranks[name]:
            raise ValueError(
                f"Sylvester: `{name}` must have rank >= {ranks[name]}, got shape {shape}."
            )
    m = shapes["q"][-1]
    for name, size in (
        ("r", shapes["r"][-2:]),
        ("r_tilde", shapes["r_tilde"][-2:]),
        ("b", shapes["b"][-1:]),
    ):
        expected = tf.TensorShape([m] * len(size))
        if not size.is_compatible_with(expected):
            raise ValueError(
                f"Sylvester: `{name}` must be [..., {'M, M' if len(size) == 2 else 'M'}] with "
                f"M = {m}, the columns of `q`; got last dimensions {size}."
            )
    if shapes["q"][-1] is not None and shapes["q"][-2] is not None and m > shapes["q"][-2]:
        raise ValueError(f"Sylvester: `q` must be [..., D, M] with M <= D, got {shapes['q']}.")
