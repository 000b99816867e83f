"""Tempered leapfrog dynamics on the extended space (z, rho) as a TFP bijector, exactly invertible.

References:
    Rezende & Mohamed (2015), section 3.2 (infinitesimal flows, Hamiltonian flows).
    Salimans, Kingma & Welling, "Markov Chain Monte Carlo and Variational Inference:
    Bridging the Gap", ICML 2015.
    Caterini, Doucet & Sejdinovic, "Hamiltonian Variational Auto-Encoder", NeurIPS 2018,
    section 3 (tempered leapfrog flow, eq. 7-9).
"""

from collections.abc import Callable

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, tensor_util

from tfnf._checks import positive_int
from tfnf.bijectors._checks import finiteness_checks

__all__ = ["Hamiltonian", "quadratic_tempering"]


def quadratic_tempering(initial_beta: tf.Tensor, num_steps: int) -> tf.Tensor:
    """The HVAE's tempering factors alpha_1..alpha_L from beta_0 in (0, 1], [..., L].

    sqrt(beta_k) = 1 / ((1 - 1 / sqrt(beta_0)) k^2 / L^2 + 1 / sqrt(beta_0)), so
    beta_L = 1, and alpha_k = sqrt(beta_{k-1} / beta_k) scales the momentum after
    leapfrog step k (Caterini et al. 2018, section 3.3). Their product is
    sqrt(beta_0): the momentum drawn at temperature 1 / beta_0 ends at temperature 1.
    """
    initial_beta = tf.convert_to_tensor(initial_beta)
    k = tf.range(num_steps + 1, dtype=initial_beta.dtype)
    inverse_root = tf.math.rsqrt(initial_beta)[..., None]
    root_beta = 1.0 / ((1.0 - inverse_root) * (k / num_steps) ** 2 + inverse_root)
    return root_beta[..., :-1] / root_beta[..., 1:]


def _gradient(log_prob: Callable, z: tf.Tensor) -> tf.Tensor:
    """-grad_z log_prob(z)."""
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = log_prob(z)
    return -tape.gradient(value, z)


def _recomputed_gradient(log_prob: Callable, z: tf.Tensor) -> tf.Tensor:
    """-grad_z log_prob(z), differentiable, with a backward pass that recomputes it.

    Left to autodiff, every leapfrog step keeps its target's intermediates for the
    second derivatives, and under XLA the step's cost grew faster than the number of
    steps (benchmarks/RESULTS.md, "Hamiltonian flows").
    Here the value is computed apart from any outer tape, and its vector-Jacobian
    product v -> d(-grad ln p . v)/d(z, variables) recomputes the gradient under a
    fresh tape: a Hessian-vector product in z and the mixed derivatives in the
    target's variables (a decoder's weights, say), which the tape's watcher finds.
    Tensors the target captures get no gradient through the dynamics; variables do.
    """
    with tf.GradientTape(watch_accessed_variables=True) as watcher:
        value = tf.stop_gradient(_gradient(log_prob, z))
    variables = list(watcher.watched_variables())

    @tf.custom_gradient
    def attach(z, value):
        for variable in variables:  # read here, so that custom_gradient passes them to backward
            tf.convert_to_tensor(variable)

        def backward(upstream, variables=None):
            sources = [tf.identity(z)] + list(variables or [])  # z, in the backward's graph
            with tf.GradientTape() as tape:
                tape.watch(sources[0])
                recomputed = _gradient(log_prob, sources[0])
            grads = tape.gradient(
                recomputed,
                sources,
                output_gradients=upstream,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return (grads[0], tf.zeros_like(value)), grads[1:]

        return tf.identity(value), backward

    return attach(z, value)


class Hamiltonian(tfp.bijectors.Bijector):
    """L leapfrog steps of Hamiltonian dynamics on (z, rho), each followed by tempering.

    The event is x = concat(z, rho), [..., 2D]. The potential is
    U(z) = -target_log_prob(z), the kinetic energy rho^T M^-1 rho / 2 with a diagonal
    mass M. Step k is one leapfrog step with per-coordinate step sizes eps,

        rho <- rho - eps/2 * grad U(z);  z <- z + eps * M^-1 rho;  rho <- rho - eps/2 * grad U(z),

    then rho <- alpha_k rho. Each half of a leapfrog step is a shear (volume 1), so
    the log-det is the tempering's alone, D * sum_k log alpha_k, whatever the target:
    the density of the pushed-forward (z, rho) is exact. The inverse runs the steps
    backwards (undo the tempering, then the leapfrog step with -eps), exact up to
    round-off because leapfrog is time reversible.

    The target is any callable z [..., D] -> [...]; its gradient is taken inside the
    map, so gradients of anything computed from the output reach the step sizes, the
    mass, the tempering and the variables the target reads (a decoder's weights)
    through second derivatives of the target, recomputed in the backward pass rather
    than kept from the forward one. Tensors the target closes over are constants to it.

    Arguments:
        target_log_prob: ln p~(z), up to a constant: z [..., D] -> [...].
        step_size: eps > 0, [..., D] (or broadcastable to it).
        inverse_mass: diag(M^-1) > 0, [..., D] (or broadcastable).
        tempering: alpha_k > 0, [..., L]; L = `tempering.shape[-1]` is the number of
            leapfrog steps (`quadratic_tempering` gives the HVAE's; ones for none).
        validate_args: check the parameters are finite and positive.
    """

    def __init__(
        self,
        target_log_prob: Callable,
        step_size,
        inverse_mass,
        tempering,
        validate_args: bool = False,
        name: str = "hamiltonian",
    ):
        parameters = dict(locals())
        if not callable(target_log_prob):
            raise TypeError(
                "Hamiltonian: target_log_prob must be a callable z [..., D] -> [...], got "
                f"{type(target_log_prob).__name__}."
            )
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype(
                [step_size, inverse_mass, tempering], dtype_hint=tf.float32
            )
            if not dtype_util.is_floating(dtype):
                raise TypeError(
                    "Hamiltonian: step_size, inverse_mass and tempering must be floating "
                    f"point, got {dtype_util.name(dtype)}."
                )
            self._target_log_prob = target_log_prob
            self._step_size = tensor_util.convert_nonref_to_tensor(
                step_size, dtype=dtype, name="step_size"
            )
            self._inverse_mass = tensor_util.convert_nonref_to_tensor(
                inverse_mass, dtype=dtype, name="inverse_mass"
            )
            self._tempering = tensor_util.convert_nonref_to_tensor(
                tempering, dtype=dtype, name="tempering"
            )
            shape = tf.TensorShape(self._tempering.shape)
            if shape.rank is None or shape.rank < 1 or shape[-1] is None:
                raise ValueError(
                    "Hamiltonian: `tempering` must be [..., L] with a static L, the number "
                    f"of leapfrog steps; got shape {shape}."
                )
            self._num_steps = positive_int(shape[-1], "Hamiltonian: tempering.shape[-1]")
            super().__init__(
                forward_min_event_ndims=1,
                is_constant_jacobian=True,
                dtype=dtype,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def target_log_prob(self) -> Callable:
        return self._target_log_prob

    @property
    def step_size(self):
        return self._step_size

    @property
    def inverse_mass(self):
        return self._inverse_mass

    @property
    def tempering(self):
        return self._tempering

    @property
    def num_steps(self) -> int:
        return self._num_steps

    def _potential_gradient(self, z):
        """grad U(z) = -grad ln p~(z), row by row (the rows are independent draws).

        Its own derivatives (the Hessian-vector products that training needs) are
        recomputed from z when asked for (`_recomputed_gradient`), not kept from here.
        """
        return _recomputed_gradient(self._target_log_prob, z)

    def _split(self, x):
        size = x.shape[-1]
        if size is None or size % 2:
            raise ValueError(
                f"Hamiltonian: the event is concat(z, rho), [..., 2D]; got last dimension {size}."
            )
        return x[..., : size // 2], x[..., size // 2 :]

    def _values(self):
        return (
            tf.convert_to_tensor(self._step_size),
            tf.convert_to_tensor(self._inverse_mass),
            tf.convert_to_tensor(self._tempering),
        )

    def _forward(self, x):
        z, rho = self._split(x)
        eps, inverse_mass, alpha = self._values()
        gradient = self._potential_gradient(z)
        for k in range(self._num_steps):
            rho = rho - 0.5 * eps * gradient
            z = z + eps * inverse_mass * rho
            gradient = self._potential_gradient(z)
            rho = (rho - 0.5 * eps * gradient) * alpha[..., k : k + 1]
        return tf.concat([z, rho], axis=-1)

    def _inverse(self, y):
        z, rho = self._split(y)
        eps, inverse_mass, alpha = self._values()
        gradient = self._potential_gradient(z)
        for k in reversed(range(self._num_steps)):
            rho = rho / alpha[..., k : k + 1] + 0.5 * eps * gradient
            z = z - eps * inverse_mass * rho
            gradient = self._potential_gradient(z)
            rho = rho + 0.5 * eps * gradient
        return tf.concat([z, rho], axis=-1)

    def _forward_log_det_jacobian(self, x):
        size = x.shape[-1] // 2
        log_alpha = tf.reduce_sum(tf.math.log(tf.convert_to_tensor(self._tempering)), axis=-1)
        return tf.cast(size, log_alpha.dtype) * log_alpha

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        params = {
            "step_size": self._step_size,
            "inverse_mass": self._inverse_mass,
            "tempering": self._tempering,
        }
        checks = finiteness_checks("Hamiltonian", is_init, **params)
        for name, p in params.items():
            if is_init == tensor_util.is_ref(p):
                continue
            checks.append(
                tf.debugging.assert_positive(
                    tf.convert_to_tensor(p), message=f"Hamiltonian: `{name}` must be positive."
                )
            )
        return checks
