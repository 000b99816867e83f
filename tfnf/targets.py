"""Target log-densities: plain functions of z [..., D] -> [...], in a registry.

The paper's 2-D test energies (Table 1) are registered as U1..U4 with
log p~(z) = -U(z). Anything else a user brings, a callable or a
`tfd.Distribution`, goes through `as_log_prob`.

References:
    Rezende & Mohamed (2015), Table 1.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import _checks

__all__ = [
    "get",
    "names",
    "as_log_prob",
    "is_normalizable",
    "u1",
    "u2",
    "u3",
    "u4",
    "hexagon",
    "triangle",
    "Mixture",
    "mixture",
    "BOX",
    "Restricted",
    "JointTarget",
    "BayesianLinearRegression",
    "bayesian_linear_regression",
    "correlated_regression_data",
    "funnel",
]

tfd = tfp.distributions
tfb = tfp.bijectors

LogProb = Callable[[tf.Tensor], tf.Tensor]

# The square every 2-D target is plotted on (Figure 3), judged on (`diagnostics.kl_2d` for the
# non-normalisable U2..U4) and, for those, restricted to when fitted (`Restricted`).
#: The square (lo, hi) of every 2-D plot and box KL, (-4, 4) in each coordinate.
BOX = (-4.0, 4.0)

_REGISTRY: dict = {}
_NORMALIZABLE = {"U1", "hexagon", "triangle"}


def _register(name: str):
    def add(fn):
        fn = keras.saving.register_keras_serializable(package="tfnf.targets", name=name)(fn)
        _REGISTRY[name] = fn
        return fn

    return add


def _coordinates(z: tf.Tensor, name: str):
    """Split z [..., 2] into z1, z2 [...]; the Table 1 energies are 2-D only."""
    z = tf.convert_to_tensor(z)
    if z.shape[-1] is not None and z.shape[-1] != 2:
        raise ValueError(
            f"Target {name} is defined for event_size 2, got z with last dimension {z.shape[-1]}."
        )
    return z[..., 0], z[..., 1]


def _gauss(x: tf.Tensor, scale: float) -> tf.Tensor:
    """The exponent -(x / scale)^2 / 2 of an unnormalised Gaussian."""
    return -0.5 * tf.square(x / scale)


def _w1(z1):
    return tf.sin(2.0 * math.pi * z1 / 4.0)


def _w2(z1):
    return 3.0 * tf.exp(_gauss(z1 - 1.0, 0.6))


def _w3(z1):
    return 3.0 * tf.sigmoid((z1 - 1.0) / 0.3)


@_register("U1")
def u1(z: tf.Tensor) -> tf.Tensor:
    """-U1(z): a ring of radius 2 with two modes at z1 = +-2. z: [..., 2] -> [...]."""
    z1, _ = _coordinates(z, "U1")
    ring = _gauss(tf.norm(z, axis=-1) - 2.0, 0.4)
    return ring + tf.reduce_logsumexp(
        tf.stack([_gauss(z1 - 2.0, 0.6), _gauss(z1 + 2.0, 0.6)]), axis=0
    )


@_register("U2")
def u2(z: tf.Tensor) -> tf.Tensor:
    """-U2(z): a sine-shaped ridge. z: [..., 2] -> [...]."""
    z1, z2 = _coordinates(z, "U2")
    return _gauss(z2 - _w1(z1), 0.4)


@_register("U3")
def u3(z: tf.Tensor) -> tf.Tensor:
    """-U3(z): a ridge that splits in two around z1 = 1. z: [..., 2] -> [...]."""
    z1, z2 = _coordinates(z, "U3")
    d = z2 - _w1(z1)
    return tf.reduce_logsumexp(tf.stack([_gauss(d, 0.35), _gauss(d + _w2(z1), 0.35)]), axis=0)


@_register("U4")
def u4(z: tf.Tensor) -> tf.Tensor:
    """-U4(z): two ridges joined by a sigmoid step. z: [..., 2] -> [...]."""
    z1, z2 = _coordinates(z, "U4")
    d = z2 - _w1(z1)
    return tf.reduce_logsumexp(tf.stack([_gauss(d, 0.4), _gauss(d + _w3(z1), 0.35)]), axis=0)


class Mixture(NamedTuple):
    """An equal-scale Gaussian mixture in 2-D: p(z) = sum_i weights_i N(z; locs_i, scale^2 I)."""

    locs: np.ndarray  # [M, 2]
    weights: np.ndarray  # [M], summing to 1
    scale: float


def _polygon(num: int, radius: float, start: float = 0.0) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(num) / num
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


_MIXTURES = {
    # Six modes on a hexagon of radius 3, weights from 0.3 down to 0.05, sd 0.4.
    "hexagon": Mixture(_polygon(6, 3.0), np.array([0.30, 0.22, 0.18, 0.15, 0.10, 0.05]), 0.4),
    # Three modes on a triangle of radius 2.5, the third ten times lighter than the others.
    "triangle": Mixture(_polygon(3, 2.5, start=math.pi / 2), np.array([10, 10, 1]) / 21, 0.5),
}


def mixture(name: str) -> Mixture:
    """The modes of a registered mixture target ("hexagon", "triangle"): locs, weights, scale."""
    if name not in _MIXTURES:
        raise ValueError(f"{name!r} is not a mixture target; mixtures: {', '.join(_MIXTURES)}.")
    return _MIXTURES[name]


def _mixture_log_prob(z: tf.Tensor, spec: Mixture, name: str) -> tf.Tensor:
    """ln sum_i w_i N(z; m_i, s^2 I), normalised, by logsumexp over the modes."""
    _coordinates(z, name)
    z = tf.convert_to_tensor(z)
    offsets = z[..., tf.newaxis, :] - tf.constant(spec.locs, z.dtype)  # [..., M, 2]
    log_terms = (
        tf.reduce_sum(_gauss(offsets, spec.scale), -1)
        + tf.constant(np.log(spec.weights), z.dtype)
        - math.log(2 * math.pi * spec.scale**2)
    )
    return tf.reduce_logsumexp(log_terms, axis=-1)


@_register("hexagon")
def hexagon(z: tf.Tensor) -> tf.Tensor:
    """ln p(z) of six Gaussians (sd 0.4) on a hexagon of radius 3, weights 0.3 down to 0.05.

    Normalised (ln Z = 0). The modes lie 7.5 sd apart, so a flow that starts
    as one Gaussian must split into six pieces of unequal mass. z: [..., 2] -> [...].
    """
    return _mixture_log_prob(z, _MIXTURES["hexagon"], "hexagon")


@_register("triangle")
def triangle(z: tf.Tensor) -> tf.Tensor:
    """ln p(z) of three Gaussians (sd 0.5) on a triangle of radius 2.5, one ten times lighter.

    Normalised (ln Z = 0); weights 10/21, 10/21, 1/21: missing the light mode
    costs only about 0.05 nats of KL, the test of mode-seeking. z: [..., 2] -> [...].
    """
    return _mixture_log_prob(z, _MIXTURES["triangle"], "triangle")


def names() -> list:
    """The registered target names."""
    return sorted(_REGISTRY)


def get(name: str) -> LogProb:
    """The registered log-density called `name` (see `names()`)."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown target {name!r}; known targets: {', '.join(names())}.")
    return _REGISTRY[name]


def is_normalizable(name: str) -> bool:
    """Whether exp(log p~) integrates over R^D; U2..U4 do not decay along z1."""
    get(name)
    return name in _NORMALIZABLE


def as_log_prob(target: str | LogProb | tfp.distributions.Distribution) -> LogProb:
    """A callable z [..., D] -> [...] from a registry name, a callable or a `tfd.Distribution`."""
    if isinstance(target, str):
        return get(target)
    if isinstance(target, tfp.distributions.Distribution):
        return target.log_prob
    if callable(target):
        return target
    raise TypeError(
        f"target_log_prob must be a target name, a callable z -> log p(z) or a "
        f"tfd.Distribution, got {type(target).__name__}."
    )


class Restricted:
    """A target restricted to a box [lo, hi]^D, with Gaussian tails of scale `tail_scale` outside.

        ln p~_B(z) = ln p~(z) - sum_i d_i(z)^2 / (2 tail_scale^2),

    d_i the distance of z_i from [lo, hi].

    Inside the box it is the target itself; outside it decays, so a target that
    does not decay (U2..U4 along z1) becomes normalisable and a flow fitted to it
    keeps its mass where it is judged. The tails lie outside the box, where the
    flow's smooth edge costs nothing in the box KL, and fitting p~_B bounds it:
    KL(q_B || p_B) <= KL(q || p_B~ normalised) / q(B) by the chain rule.

    Arguments:
        target: a log-density z [..., D] -> [...].
        box: (lo, hi), lo < hi.
        tail_scale: positive.
    """

    def __init__(self, target: LogProb, box=BOX, tail_scale: float = 1.0):
        lo, hi = _checks.box(box, "box")
        if not tail_scale > 0:
            raise ValueError(f"tail_scale must be positive, got {tail_scale!r}.")
        self.target, self.box, self.tail_scale = target, (lo, hi), float(tail_scale)
        self.xla_friendly = getattr(target, "xla_friendly", True)

    def __call__(self, z) -> tf.Tensor:
        z = tf.convert_to_tensor(z)
        lo, hi = self.box
        outside = tf.nn.relu(lo - z) + tf.nn.relu(z - hi)
        return self.target(z) - 0.5 * tf.reduce_sum(tf.square(outside / self.tail_scale), -1)

    log_prob = __call__


class JointTarget:
    """A TFP joint distribution, usually pinned to data, as a target over unconstrained z in R^D.

    The flow lives in R^D; `bijector` splits z into the model's latent
    variables, reshapes each, arranges them in the model's own structure and maps
    each to its support with the model's default event-space bijector (TFP's
    `Split`, `JointMap` of `Reshape`, `Restructure` and
    `experimental_default_event_space_bijector`). The target is the density of
    z under that change of variables:

        log p~(z) = log p(data, bijector(z)) + log `|det d bijector / dz|`.

    A flow q fitted to it gives the posterior over the model's variables as
    `tfd.TransformedDistribution(q, target.bijector)` (`posterior(q)`), whose
    samples have the model's structure; `NormalizingFlow.surrogate_posterior(target.bijector)`
    is the same for `tfp.vi`.

    `xla_friendly` is False for an auto-batched model, whose gradient compiles
    badly under XLA (benchmarks/RESULTS.md); models then train without XLA by
    default. A `JointDistributionCoroutine` written for batched inputs (with
    `Root`) trains with XLA.

    Arguments:
        model: a `tfd.JointDistribution*` (e.g. `JointDistributionCoroutineAutoBatched`)
            pinned with `experimental_pin(observed=...)`, or one without observed
            variables, with fully known event shapes.
    """

    def __init__(self, model):
        if not hasattr(model, "experimental_default_event_space_bijector") or not hasattr(
            model, "event_shape"
        ):
            raise TypeError(
                f"model must be a TFP joint distribution (pinned with experimental_pin), "
                f"got {type(model).__name__}."
            )
        self.model = model
        self._log_prob = getattr(model, "unnormalized_log_prob", model.log_prob)
        # An auto-batched model evaluates a batch of z through tf.vectorized_map, whose gradient
        # is far slower under XLA than without it: compile's "auto" leaves XLA off for it.
        self.xla_friendly = not getattr(
            getattr(model, "distribution", model), "use_vectorized_map", False
        )
        constrain = model.experimental_default_event_space_bijector()
        shapes = constrain.inverse_event_shape(
            model.event_shape
        )  # the unconstrained variables' shapes
        flat_shapes = [
            tf.TensorShape(shape) for shape in tf.nest.flatten(shapes, expand_composites=False)
        ]
        if not all(shape.is_fully_defined() for shape in flat_shapes):
            raise ValueError(
                f"model: every latent variable needs a known event shape, got {shapes}."
            )
        sizes = [int(np.prod(shape.as_list())) for shape in flat_shapes]
        self.event_size = sum(sizes)
        self.dtype = tf.as_dtype(tf.nest.flatten(model.dtype)[0])
        self.bijector = tfb.Chain(
            [
                constrain,
                tfb.Restructure(tf.nest.pack_sequence_as(shapes, list(range(len(sizes))))),
                tfb.JointMap(
                    [
                        tfb.Reshape(shape.as_list(), [size])
                        for shape, size in zip(flat_shapes, sizes, strict=True)
                    ]
                ),
                tfb.Split(sizes),
            ]
        )

    def __call__(self, z) -> tf.Tensor:
        """log p~(z): z [..., D] -> [...]."""
        z = tf.convert_to_tensor(z, self.dtype)
        return self._log_prob(self.bijector.forward(z)) + self.bijector.forward_log_det_jacobian(
            z, event_ndims=1
        )

    log_prob = __call__

    def posterior(self, q: tfd.Distribution) -> tfd.Distribution:
        """q over z mapped to the model's variables: samples in its structure and support."""
        return tfd.TransformedDistribution(q, self.bijector)


class BayesianLinearRegression:
    """The posterior of theta in y = X theta + noise, theta ~ N(0, s_p^2 I), noise ~ N(0, s_n^2 I).

    s_p = `prior_scale`, s_n = `noise_scale`.

    Conjugate, so the exact posterior is Gaussian in closed form:

        precision = I / prior_scale^2 + X^T X / noise_scale^2,   mean = precision^-1 X^T y /
        noise_scale^2,

    and so is the evidence p(y) = N(y; 0, noise_scale^2 I + prior_scale^2 X X^T).
    Calling it gives log p(y, theta), the unnormalised posterior, a target for a flow.

    Arguments:
        features: X [N, D].
        observations: y [N].
        noise_scale, prior_scale: positive floats.
    """

    def __init__(self, features, observations, noise_scale: float = 1.0, prior_scale: float = 1.0):
        self.features = tf.convert_to_tensor(features)
        self.dtype = self.features.dtype
        self.observations = tf.convert_to_tensor(observations, self.dtype)
        if self.features.shape.rank != 2 or self.observations.shape != self.features.shape[:1]:
            raise ValueError(
                f"features must be [N, D] and observations [N], got shapes "
                f"{tuple(self.features.shape)} and {tuple(self.observations.shape)}."
            )
        for name, value in (("noise_scale", noise_scale), ("prior_scale", prior_scale)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}.")
        self.noise_scale, self.prior_scale = float(noise_scale), float(prior_scale)
        self.dim = int(self.features.shape[1])

    def __call__(self, theta) -> tf.Tensor:
        """log p(y, theta) = log p(y | theta) + log p(theta): theta [..., D] -> [...]."""
        theta = tf.convert_to_tensor(theta, self.dtype)
        prediction = tf.einsum("nd,...d->...n", self.features, theta)  # [..., N]
        likelihood = tfd.Normal(prediction, self.noise_scale).log_prob(self.observations)
        prior = tfd.Normal(tf.constant(0.0, self.dtype), self.prior_scale).log_prob(theta)
        return tf.reduce_sum(likelihood, -1) + tf.reduce_sum(prior, -1)

    log_prob = __call__

    @property
    def posterior(self) -> tfd.MultivariateNormalTriL:
        """The exact posterior p(theta | y), event [D]."""
        x = self.features
        precision = (
            tf.eye(self.dim, dtype=self.dtype) / self.prior_scale**2
            + tf.matmul(x, x, transpose_a=True) / self.noise_scale**2
        )
        covariance = tf.linalg.inv(precision)
        covariance = 0.5 * (covariance + tf.transpose(covariance))
        mean = (
            tf.linalg.matvec(covariance, tf.linalg.matvec(x, self.observations, transpose_a=True))
            / self.noise_scale**2
        )
        return tfd.MultivariateNormalTriL(mean, tf.linalg.cholesky(covariance))

    @property
    def log_evidence(self) -> tf.Tensor:
        """log p(y), the log-normaliser of `log_prob`."""
        x = self.features
        covariance = self.noise_scale**2 * tf.eye(
            int(x.shape[0]), dtype=self.dtype
        ) + self.prior_scale**2 * tf.matmul(x, x, transpose_b=True)
        return tfd.MultivariateNormalTriL(
            tf.zeros_like(self.observations), tf.linalg.cholesky(covariance)
        ).log_prob(self.observations)

    def joint_distribution(self) -> tfd.Distribution:
        """The same model as a TFP joint distribution pinned to y (latent `theta`)."""
        x, zeros = self.features, tf.zeros([self.dim], self.dtype)

        @tfd.JointDistributionCoroutineAutoBatched
        def model():
            theta = yield tfd.Normal(zeros, self.prior_scale, name="theta")
            yield tfd.Normal(tf.linalg.matvec(x, theta), self.noise_scale, name="y")

        return model.experimental_pin(y=self.observations)


def bayesian_linear_regression(
    features, observations, noise_scale: float = 1.0, prior_scale: float = 1.0
) -> BayesianLinearRegression:
    """`BayesianLinearRegression(features, observations, noise_scale, prior_scale)`."""
    return BayesianLinearRegression(features, observations, noise_scale, prior_scale)


def correlated_regression_data(
    num_points: int, dim: int, correlation: float = 0.95, noise_scale: float = 1.0, seed: int = 0
) -> tuple:
    """Synthetic data for `BayesianLinearRegression` with strongly correlated features.

    Rows of X are N(0, C) with C_ii = 1 and C_ij = correlation; theta is drawn
    N(0, I) and y = X theta + noise_scale * N(0, I). Correlated features make the
    posterior strongly correlated, which a mean-field Gaussian cannot represent.

    Returns:
        (X [num_points, dim], y [num_points], theta [dim]), float64 numpy arrays.
    """
    if not 0 <= correlation < 1:
        raise ValueError(f"correlation must be in [0, 1), got {correlation!r}.")
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((num_points, 1))
    x = math.sqrt(correlation) * shared + math.sqrt(1 - correlation) * rng.standard_normal(
        (num_points, dim)
    )
    theta = rng.standard_normal(dim)
    return x, x @ theta + noise_scale * rng.standard_normal(num_points), theta


def funnel(z: tf.Tensor, scale: float = 3.0) -> tf.Tensor:
    """Neal's funnel (normalised): v = z[..., 0] ~ N(0, scale^2), z[..., i] | v ~ N(0, exp(v)).

    The conditional scale exp(v / 2) spans orders of magnitude over the bulk of
    v: a neck and a mouth that no Gaussian fits. Exact marginals: v ~ N(0, 9);
    each x_i has mean 0 and standard deviation exp(scale^2 / 4) (9.49 for 3).
    Not in the registry (any D >= 2). z: [..., D] -> [...].
    """
    z = tf.convert_to_tensor(z)
    v, x = z[..., 0], z[..., 1:]
    half = tf.constant(0.5, z.dtype)
    log_v = tfd.Normal(tf.zeros_like(v), tf.cast(scale, z.dtype)).log_prob(v)
    return log_v + tf.reduce_sum(
        tfd.Normal(tf.zeros_like(x), tf.exp(half * v)[..., tf.newaxis]).log_prob(x), -1
    )
