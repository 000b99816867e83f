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


def _integrate(step: Callable, order, target_log_prob: Callable, z, rho, parameters):
    """Runs `step` for the step indices in `order`, one `tf.while_loop`, under one custom gradient.

    step(k, z, rho, g, *parameters) -> (z, rho, g) is one tempered leapfrog step (or
    its inverse), g = grad U(z) carried from step to step so that each step
    evaluates the target's gradient once.
    The forward loop keeps only each step's input state (z, rho, g); the backward
    loop runs the steps in reverse, recomputing one at a time under a tape for
    its vector-Jacobian product: Hessian-vector products in z and mixed
    derivatives in the target's variables (a decoder's weights), which a watcher
    finds. Tensors the target captures get no gradient through the dynamics;
    variables do.

    Why not autodiff through L unrolled steps: every step would keep its
    target's intermediates for the second derivatives, and under XLA the backward
    pass fused the adjoints of successive steps into one kernel; for a target
    whose Hessian couples coordinates read by slicing (U2 in the box) each step's
    adjoint recomputed both coordinates of the next, 2^L times over: 30 ms a
    step at L = 4, 1.1 s at L = 8 (benchmarks/RESULTS.md). A loop body is its own
    computation, and the loop compiles once whatever L.
    """
    order = tf.constant(list(order), tf.int32)
    num_steps = int(order.shape[0])
    with tf.GradientTape(watch_accessed_variables=True) as watcher:
        start_gradient = tf.stop_gradient(_gradient(target_log_prob, z))
    variables = list(watcher.watched_variables())

    @tf.custom_gradient
    def run(z, rho, *parameters):
        for variable in variables:  # read here, so that custom_gradient passes them to backward
            tf.convert_to_tensor(variable)
        start = (z, rho, start_gradient)
        kept = [tf.TensorArray(x.dtype, size=num_steps, element_shape=x.shape) for x in start]

        def forward(i, state, kept):
            kept = [array.write(i, x) for array, x in zip(kept, state, strict=True)]
            return i + 1, step(order[i], *state, *parameters), kept

        _, (z, rho, _), kept = tf.while_loop(
            lambda i, *_: i < num_steps, forward, (0, start, kept), maximum_iterations=num_steps
        )
        kept = [array.stack() for array in kept]

        def backward(upstream_z, upstream_rho, variables=None):
            sources = list(parameters) + list(variables or [])

            def reverse(i, adjoint, totals):
                state = [x[i] for x in kept]
                with tf.GradientTape() as tape:
                    tape.watch(state + list(parameters))
                    out = step(order[i], *state, *parameters)
                grads = tape.gradient(
                    out,
                    state + sources,
                    output_gradients=list(adjoint),
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                grads = [tf.convert_to_tensor(g) for g in grads]
                totals = [t + g for t, g in zip(totals, grads[3:], strict=True)]
                return i - 1, tuple(grads[:3]), totals

            adjoint = (upstream_z, upstream_rho, tf.zeros_like(start_gradient))
            totals = [tf.zeros_like(x) for x in sources]
            _, (adjoint_z, adjoint_rho, adjoint_g), totals = tf.while_loop(
                lambda i, *_: i >= 0,
                reverse,
                (num_steps - 1, adjoint, totals),
                maximum_iterations=num_steps,
            )
            # the first step's g = grad U(z_0): its Hessian-vector product back to z_0
            first = tf.identity(kept[0][0])
            with tf.GradientTape() as tape:
                tape.watch(first)
                recomputed = _gradient(target_log_prob, first)
            extra = tape.gradient(
                recomputed,
                [first] + list(variables or []),
                output_gradients=adjoint_g,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            extra = [tf.convert_to_tensor(g) for g in extra]
            parameter_grads = totals[: len(parameters)]
            variable_grads = [
                t + g for t, g in zip(totals[len(parameters) :], extra[1:], strict=True)
            ]
            return (adjoint_z + extra[0], adjoint_rho, *parameter_grads), variable_grads

        return (tf.identity(z), tf.identity(rho)), backward

    return run(z, rho, *parameters)


def _column(values: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """values[..., k : k + 1] for a scalar tensor k."""
    return tf.gather(values, k[None], axis=-1)


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
        target = self._target_log_prob

        def step(k, z, rho, gradient, eps, inverse_mass, alpha):
            rho = rho - 0.5 * eps * gradient
            z = z + eps * inverse_mass * rho
            gradient = _gradient(target, z)
            return z, (rho - 0.5 * eps * gradient) * _column(alpha, k), gradient

        z, rho = _integrate(step, range(self._num_steps), target, *self._split(x), self._values())
        return tf.concat([z, rho], axis=-1)

    def _inverse(self, y):
        target = self._target_log_prob

        def step(k, z, rho, gradient, eps, inverse_mass, alpha):
            rho = rho / _column(alpha, k) + 0.5 * eps * gradient
            z = z - eps * inverse_mass * rho
            gradient = _gradient(target, z)
            return z, rho + 0.5 * eps * gradient, gradient

        order = range(self._num_steps - 1, -1, -1)
        z, rho = _integrate(step, order, target, *self._split(y), self._values())
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
