"""Keras layers that own flow parameters and hand out TFP objects built from them.

Keras 3 tracks only weights made with `add_weight`, so the layers hold the
parameters and build a fresh bijector (or distribution) from them each time it
is asked for, inside the traced training step.
"""

import functools
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import _checks, bijectors, sampling
from tfnf._checks import positive_int
from tfnf.bijectors.planar import SOFTPLUS_INVERSE_OF_1, identity_u

__all__ = [
    "BASES",
    "FLOWS",
    "AmortizedFlow",
    "DiagonalNormal",
    "FullRankNormal",
    "HamiltonianFlow",
    "NICEStack",
    "PlanarStack",
    "RadialStack",
    "SylvesterStack",
    "event_ranks",
    "get_flow",
]

tfd = tfp.distributions


def event_ranks(bijector_class: type) -> dict:
    """{parameter: event rank} of a TFP bijector class, from its `parameter_properties`."""
    return {name: p.event_ndims for name, p in bijector_class.parameter_properties().items()}


class _FlowLayer(keras.layers.Layer):
    """`num_layers` maps of one flow family, their weights stacked along a leading axis K.

    `bijector()` is a `tfnf.bijectors.Stack` of the family's bijector built from
    the weights: f_{K-1} o ... o f_0, traced as one loop. Keeping the K maps in
    one layer gives the optimiser a few [K, ...] weights instead of 3K small
    ones (faster: benchmarks/RESULTS.md). Subclasses name their `bijector_class`;
    its `parameter_properties` give the weights and their shapes.

    Arguments:
        num_layers: K, the number of maps.
        initializer: for every weight.
    """

    bijector_class: type
    default_initializer = "random_normal"

    def __init__(self, num_layers: int = 1, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = positive_int(num_layers, "num_layers")
        self.initializer = keras.initializers.get(initializer or self.default_initializer)

    @property
    def parameter_ranks(self) -> dict:
        """{weight: event rank}, the bijector's parameters in its constructor's order."""
        return event_ranks(self.bijector_class)

    def build(self, input_shape):
        size = input_shape[-1]
        for index, (name, rank) in enumerate(self.parameter_ranks.items()):
            weight = self.add_weight(
                shape=(self.num_layers,) + (size,) * rank,
                initializer=_own_draw(self.initializer, index),
                name=name,
            )
            setattr(self, name, weight)

    def bijector_parameters(self) -> dict:
        """The bijector's constructor arguments, [K, ...] tensors read from the weights."""
        return {name: tf.convert_to_tensor(getattr(self, name)) for name in self.parameter_ranks}

    def bijector(self) -> bijectors.Stack:
        """The K maps as one bijector, built from the current weights."""
        return bijectors.Stack(self.bijector_class(**self.bijector_parameters()))

    def call(self, z):
        """z: [..., D] -> f(z): [..., D]."""
        return self.bijector().forward(z)

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "initializer": keras.initializers.serialize(self.initializer),
        }


def _own_draw(initializer, index: int):
    """A copy of `initializer` that draws its own numbers for weight number `index`.

    A Keras random initializer returns the same values at every call, so u and
    w of the same shape would start equal. An unseeded copy takes a new seed
    from Python's `random` (reproducible under `keras.utils.set_random_seed`); a
    seeded one is offset by `index`.
    """
    copy = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    if (
        isinstance(getattr(copy, "seed", None), int)
        and getattr(initializer, "_init_seed", None) is not None
    ):
        copy.seed = initializer.seed + index
    return copy


@keras.saving.register_keras_serializable(package="tfnf")
class PlanarStack(_FlowLayer):
    """K planar maps (eq. 10): weights u, w [K, D] and b [K] for `tfnf.bijectors.PlanarFlow`.

    w and b start U(0, 1), as in the seed scripts. With `start_at_identity`
    (default) u is then set so that u_hat = 0: every map starts as the identity
    and q as the base, which on U1 straddles both modes and covers both more
    often than a random start (benchmarks/RESULTS.md).

    Arguments:
        start_at_identity: set u from w so each map starts as the identity;
            False draws u from `initializer` like w and b.
    """

    bijector_class = bijectors.PlanarFlow
    default_initializer = {"class_name": "RandomUniform", "config": {"minval": 0.0, "maxval": 1.0}}

    def __init__(
        self, num_layers: int = 1, initializer=None, start_at_identity: bool = True, **kwargs
    ):
        super().__init__(num_layers=num_layers, initializer=initializer, **kwargs)
        self.start_at_identity = bool(start_at_identity)

    def build(self, input_shape):
        super().build(input_shape)
        if self.start_at_identity:
            self.u.assign(identity_u(tf.convert_to_tensor(self.w)))

    def get_config(self):
        return {**super().get_config(), "start_at_identity": self.start_at_identity}


@keras.saving.register_keras_serializable(package="tfnf")
class RadialStack(_FlowLayer):
    """K radial maps (eq. 14): z0 [K, D], a, b [K] (raw alpha, beta) for `bijectors.RadialFlow`."""

    bijector_class = bijectors.RadialFlow


@keras.saving.register_keras_serializable(package="tfnf")
class SylvesterStack(keras.layers.Layer):
    """K Sylvester maps (van den Berg et al. 2018) of rank M for `tfnf.bijectors.Sylvester`.

    Weights: raw R, R~ [K, M, M] and b [K, M], and what Q is made of:

    - "orthogonal": raw [K, D, M], Q its QR factor (`bijectors.orthonormal_q`);
    - "householder": `reflections` vectors [K, H, D], Q their product's first M columns;
    - "triangular": no weight, Q the identity for even k and the reversal for odd k (M = D).

    R starts at zero, so every map starts as the identity and q as the base; R~
    starts N(0, 1/M) and b at zero, so the first steps move R with a non-zero gradient.

    Arguments:
        num_layers: K.
        rank: M <= D (default: D).
        variant: "orthogonal", "householder" or "triangular".
        reflections: H, Householder reflections per map (default: M).
    """

    variants = ("orthogonal", "householder", "triangular")

    def __init__(
        self,
        num_layers: int = 1,
        rank: int | None = None,
        variant: str = "orthogonal",
        reflections: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = positive_int(num_layers, "num_layers")
        self.rank = None if rank is None else positive_int(rank, "rank")
        if variant not in self.variants:
            raise ValueError(
                f"SylvesterStack: variant must be one of {', '.join(self.variants)}, "
                f"got {variant!r}."
            )
        self.variant = variant
        self.reflections = None if reflections is None else positive_int(reflections, "reflections")

    def build(self, input_shape):
        size = int(input_shape[-1])
        rank = size if self.variant == "triangular" else (self.rank or size)
        if rank > size or (self.variant == "triangular" and self.rank not in (None, size)):
            raise ValueError(
                f"SylvesterStack: rank must be <= D = {size} (and = D for the triangular "
                f"variant), got {self.rank}."
            )
        self.size, self.columns = size, rank
        k = self.num_layers
        normal = keras.initializers.RandomNormal(stddev=1.0 / rank**0.5)
        self.r = self.add_weight(shape=(k, rank, rank), initializer="zeros", name="r")
        self.r_tilde = self.add_weight(shape=(k, rank, rank), initializer=normal, name="r_tilde")
        self.b = self.add_weight(shape=(k, rank), initializer="zeros", name="b")
        if self.variant == "orthogonal":
            self.q_raw = self.add_weight(
                shape=(k, size, rank), initializer="random_normal", name="q_raw"
            )
        elif self.variant == "householder":
            self.q_raw = self.add_weight(
                shape=(k, self.reflections or rank, size), initializer="random_normal", name="q_raw"
            )

    def q(self) -> tf.Tensor:
        """Q of every map, [K, D, M]."""
        if self.variant == "orthogonal":
            return bijectors.orthonormal_q(tf.convert_to_tensor(self.q_raw))
        if self.variant == "householder":
            return bijectors.householder_q(tf.convert_to_tensor(self.q_raw), self.columns)
        eye = bijectors.permutation_q(self.size, dtype=self.compute_dtype)
        return tf.stack([eye if k % 2 == 0 else eye[::-1] for k in range(self.num_layers)])

    def bijector(self) -> bijectors.Stack:
        """The K maps as one bijector, built from the current weights."""
        return bijectors.Stack(
            bijectors.Sylvester(
                q=self.q(),
                r=tf.convert_to_tensor(self.r),
                r_tilde=tf.convert_to_tensor(self.r_tilde),
                b=tf.convert_to_tensor(self.b),
            )
        )

    def call(self, z):
        """z: [..., D] -> f(z): [..., D]."""
        return self.bijector().forward(z)

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "rank": self.rank,
            "variant": self.variant,
            "reflections": self.reflections,
        }


@keras.saving.register_keras_serializable(package="tfnf")
class HamiltonianFlow(keras.layers.Layer):
    """L tempered leapfrog steps on (z, rho) (`tfnf.bijectors.Hamiltonian`), a target-informed flow.

    The flow lives on the extended space: z comes from the position's distribution
    (the base, or the base warped by `planar_layers` planar maps, which this layer
    owns), rho ~ N(0, M / beta_0) is drawn beside it, the dynamics move both, and
    the objective compares their joint density with p~(z) N(rho; 0, M) (the
    momentum's reverse density). Weights, all learned:

    - raw step sizes [D], eps = softplus(raw), starting at `step_size`;
    - log M^-1 [D], starting at 0 (M = I);
    - raw beta_0 [], beta_0 = sigmoid(raw) in (0, 1), starting at `initial_beta`, and
      the HVAE's quadratic schedule between beta_0 and 1 (`bijectors.quadratic_tempering`);
      `tempering=False` fixes beta_0 = 1: no tempering, rho drawn from N(0, M).

    Arguments:
        num_layers: L, the leapfrog steps.
        step_size: the initial eps, every coordinate.
        initial_beta: the initial beta_0, in (0, 1).
        tempering: learn beta_0 (default) or keep it at 1.
        planar_layers: K >= 0 planar maps applied to the base before the dynamics.

    References:
        Caterini, Doucet & Sejdinovic (2018), section 3; Rezende & Mohamed (2015), section 3.2.
    """

    def __init__(
        self,
        num_layers: int = 1,
        step_size: float = 0.1,
        initial_beta: float = 0.5,
        tempering: bool = True,
        planar_layers: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = positive_int(num_layers, "num_layers")
        number = (int, float)
        if isinstance(step_size, bool) or not (
            isinstance(step_size, number) and step_size > 0 and math.isfinite(step_size)
        ):
            raise ValueError(
                f"HamiltonianFlow: step_size must be a positive number, got {step_size!r}."
            )
        if isinstance(initial_beta, bool) or not (
            isinstance(initial_beta, number) and 0 < initial_beta < 1
        ):
            raise ValueError(
                f"HamiltonianFlow: initial_beta must lie in (0, 1), got {initial_beta!r}."
            )
        self.step_size, self.initial_beta = float(step_size), float(initial_beta)
        self.tempering = _checks.boolean(tempering, "HamiltonianFlow: tempering")
        self.planar_layers = positive_int(planar_layers, "planar_layers", minimum=0)
        self.warp = (
            PlanarStack(num_layers=self.planar_layers, dtype=self.dtype_policy, name="warp")
            if self.planar_layers
            else None
        )

    def build(self, input_shape):
        size = int(input_shape[-1])
        self.size = size
        start = math.log(math.expm1(self.step_size))  # softplus^-1
        self.raw_step_size = self.add_weight(
            shape=(size,), initializer=keras.initializers.Constant(start), name="raw_step_size"
        )
        self.log_inverse_mass = self.add_weight(
            shape=(size,), initializer="zeros", name="log_inverse_mass"
        )
        logit = math.log(self.initial_beta / (1.0 - self.initial_beta))
        self.raw_beta = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(logit),
            name="raw_beta",
            trainable=self.tempering,
        )
        if self.warp is not None:
            self.warp.build(input_shape)

    def initial_beta_value(self) -> tf.Tensor:
        """beta_0, the initial inverse temperature of the momentum (1 without tempering)."""
        if not self.tempering:
            return tf.ones([], self.compute_dtype)
        return tf.sigmoid(tf.convert_to_tensor(self.raw_beta))

    def inverse_mass(self) -> tf.Tensor:
        return tf.exp(tf.convert_to_tensor(self.log_inverse_mass))

    def momentum_scale(self, at_start: bool) -> tf.Tensor:
        """The momentum's scale: sqrt(M / beta_0) at the start, sqrt(M) at the end, [D]."""
        scale = tf.math.rsqrt(self.inverse_mass())
        return scale * tf.math.rsqrt(self.initial_beta_value()) if at_start else scale

    def momentum_distribution(self, at_start: bool = False) -> tfd.Distribution:
        """N(0, M / beta_0) (at_start) or the reverse density N(0, M), event [D]."""
        scale = self.momentum_scale(at_start)
        return tfd.MultivariateNormalDiag(loc=tf.zeros_like(scale), scale_diag=scale)

    def momentum_log_prob(self, rho: tf.Tensor) -> tf.Tensor:
        """ln N(rho; 0, M), the momentum's reverse density: rho [..., D] -> [...]."""
        return self.momentum_distribution().log_prob(rho)

    def tempering_factors(self) -> tf.Tensor:
        """alpha_1..alpha_L, [L]."""
        beta = self.initial_beta_value()
        if not self.tempering:
            return tf.ones([self.num_layers], beta.dtype)
        return bijectors.quadratic_tempering(beta, self.num_layers)

    def bijector(self, target_log_prob) -> bijectors.Hamiltonian:
        """The dynamics on concat(z, rho), [..., 2D], for the target `target_log_prob`."""
        return bijectors.Hamiltonian(
            target_log_prob,
            step_size=tf.math.softplus(tf.convert_to_tensor(self.raw_step_size)),
            inverse_mass=self.inverse_mass(),
            tempering=self.tempering_factors(),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "step_size": self.step_size,
            "initial_beta": self.initial_beta,
            "tempering": self.tempering,
            "planar_layers": self.planar_layers,
        }


@keras.saving.register_keras_serializable(package="tfnf")
class NICEStack(keras.layers.Layer):
    """K additive couplings (NICE, Dinh et al. 2014) from TFP, the paper's Figure 3(d) baseline.

    Each coupling is `tfb.RealNVP` with a shift-only network (volume
    preserving), followed by a reversal of the coordinates (permutation
    mixing). The networks are Keras MLPs owned by this layer; their last layer
    starts at zero, so every coupling starts as the identity.

    Arguments:
        num_layers: K couplings.
        hidden_units: width of the two hidden layers of each shift network.
    """

    def __init__(self, num_layers: int = 1, hidden_units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = positive_int(num_layers, "num_layers")
        self.hidden_units = positive_int(hidden_units, "hidden_units")

    def build(self, input_shape):
        size = input_shape[-1]
        if size < 2:
            raise ValueError(f"NICE needs event size >= 2 to split coordinates, got {size}.")
        self.num_masked = size // 2
        self.shift_networks = []
        for k in range(self.num_layers):
            network = keras.Sequential(
                [
                    keras.layers.Dense(
                        self.hidden_units, activation="relu", dtype=self.dtype_policy
                    ),
                    keras.layers.Dense(
                        self.hidden_units, activation="relu", dtype=self.dtype_policy
                    ),
                    keras.layers.Dense(
                        size - self.num_masked, kernel_initializer="zeros", dtype=self.dtype_policy
                    ),
                ],
                name=f"shift_{k}",
            )
            network.build((None, self.num_masked))
            self.shift_networks.append(network)

    def bijector(self) -> tfp.bijectors.Bijector:
        """Coupling, reversal, coupling, reversal, ...: f_0 first."""
        size = self.num_masked + self.shift_networks[0].output_shape[-1]
        steps = []
        for network in self.shift_networks:
            shift = tfp.bijectors.RealNVP(
                num_masked=self.num_masked,
                is_constant_jacobian=True,
                shift_and_log_scale_fn=lambda x, units, net=network: (net(x), None),
            )
            steps += [shift, tfp.bijectors.Permute(list(reversed(range(size))))]
        return tfp.bijectors.Chain(list(reversed(steps)))

    def call(self, z):
        """z: [..., D] -> f(z): [..., D]."""
        return self.bijector().forward(z)

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "hidden_units": self.hidden_units,
        }


@keras.saving.register_keras_serializable(package="tfnf")
class DiagonalNormal(keras.layers.Layer):
    """The base q0 = N(loc, diag(scale^2)), scale = softplus(raw_scale), starting at N(0, I).

    Arguments:
        trainable: False gives the fixed standard normal of the seed scripts.
    """

    def build(self, input_shape):
        size = input_shape[-1]
        self.loc = self.add_weight(shape=(size,), initializer="zeros", name="loc")
        start = keras.initializers.Constant(SOFTPLUS_INVERSE_OF_1)  # scale 1: q0 starts as N(0, I)
        self.raw_scale = self.add_weight(shape=(size,), initializer=start, name="raw_scale")

    def distribution(self) -> tfd.Distribution:
        return tfd.MultivariateNormalDiag(
            loc=tf.convert_to_tensor(self.loc),
            scale_diag=tf.math.softplus(tf.convert_to_tensor(self.raw_scale)),
        )

    def sample_and_log_prob(self, n: int, seed, rows=None) -> tuple:
        """n reparameterised draws z0 = loc + scale * eps of q0, and ln q0(z0).

        Arguments:
            n: number of draws.
            seed: stateless seed, a pair of integers.
            rows: None, or a `sampling.ReplicaRows`: these n draws are that slice of the global
                draw.
        Returns:
            (z0 [n, D], ln q0(z0) [n]).
        """
        loc, scale = (
            tf.convert_to_tensor(self.loc),
            tf.math.softplus(tf.convert_to_tensor(self.raw_scale)),
        )
        return sampling.diagonal_normal_draw(loc, scale, [n], seed, rows)

    def call(self, n):
        return self.distribution().sample(n)


@keras.saving.register_keras_serializable(package="tfnf")
class FullRankNormal(keras.layers.Layer):
    """The base q0 = N(loc, L L^T), N(0, I) under Shift(loc) o ScaleMatvecTriL(L); starts N(0, I).

    L is lower triangular with a positive diagonal, `tfb.FillScaleTriL` (softplus
    diagonal) of the D (D + 1) / 2 weights `raw_scale_tril`. An affine map of
    full rank in front of the flow: it captures a Gaussian's correlations that
    planar maps, each a rank-one change, learn slowly.
    """

    def build(self, input_shape):
        size = input_shape[-1]
        self.loc = self.add_weight(shape=(size,), initializer="zeros", name="loc")
        identity = (
            self._fill().inverse(tf.eye(size, dtype="float64")).numpy()
        )  # so that L starts as I
        self.raw_scale_tril = self.add_weight(
            shape=(size * (size + 1) // 2,),
            initializer=keras.initializers.Constant(identity),
            name="raw_scale_tril",
        )

    @staticmethod
    def _fill() -> tfp.bijectors.Bijector:
        return tfp.bijectors.FillScaleTriL(diag_bijector=tfp.bijectors.Softplus(), diag_shift=None)

    def scale_tril(self) -> tf.Tensor:
        """L: [D, D]."""
        return self._fill().forward(tf.convert_to_tensor(self.raw_scale_tril))

    def distribution(self) -> tfd.Distribution:
        loc = tf.convert_to_tensor(self.loc)
        standard = tfd.MultivariateNormalDiag(loc=tf.zeros_like(loc), scale_diag=tf.ones_like(loc))
        affine = tfp.bijectors.Shift(loc)(tfp.bijectors.ScaleMatvecTriL(self.scale_tril()))
        return tfd.TransformedDistribution(standard, affine)

    def sample_and_log_prob(self, n: int, seed, rows=None) -> tuple:
        """n draws z0 = loc + L eps and ln q0(z0) = ln N(eps; 0, I) - sum ln diag L.

        Arguments are those of `DiagonalNormal.sample_and_log_prob`. Returns (z0 [n, D], ln q0(z0)
        [n]).
        """
        loc, scale_tril = tf.convert_to_tensor(self.loc), self.scale_tril()
        eps, log_n = sampling.diagonal_normal_draw(
            tf.zeros_like(loc), tf.ones_like(loc), [n], seed, rows
        )
        z0 = loc + tf.linalg.matvec(scale_tril, eps)
        return z0, log_n - tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril)))

    def call(self, n):
        return self.distribution().sample(n)


#: The bases by the name `NormalizingFlow(base=...)` takes.
BASES = {"diagonal": DiagonalNormal, "full_rank": FullRankNormal}


#: The flows by the name `NormalizingFlow(flow=...)` and `FlowVAE(flow=...)` take.
FLOWS = {
    "planar": PlanarStack,
    "radial": RadialStack,
    "sylvester": SylvesterStack,
    "nice": NICEStack,
    "hamiltonian": HamiltonianFlow,
}

# The names before 0.2, kept for one release; .keras files saved with them load as the new classes.
Planar, Radial, NICE = PlanarStack, RadialStack, NICEStack
for _old, _new in (("Planar", PlanarStack), ("Radial", RadialStack), ("NICE", NICEStack)):
    keras.saving.get_custom_objects()[f"tfnf>{_old}"] = _new


def get_flow(name: str) -> type:
    """The flow layer class called `name` (a key of `FLOWS`)."""
    if name not in FLOWS:
        raise ValueError(f"Unknown flow {name!r}; known flows: {', '.join(sorted(FLOWS))}.")
    return FLOWS[name]


@keras.saving.register_keras_serializable(package="tfnf")
class AmortizedFlow(keras.layers.Layer):
    """An amortised flow posterior q(z | x): Dense heads from features h to the base and each map.

    `call(h)` returns a dict of parameter tensors: `loc`, `scale` [B, D] of
    q0 = N(loc, diag(scale^2)) and, for each of the K maps, the unconstrained
    parameters of the flow's bijector stacked as [K, B, ...] (planar: `u`, `w`
    [K, B, D], `b` [K, B]; radial: `z0` [K, B, D], `a`, `b` [K, B]).
    `distribution(h)` is q_K with batch shape [B] and event shape [D]: the base
    pushed through a `tfnf.bijectors.Stack` whose maps carry one set of
    parameters per example (section 4.2). num_layers = 0 is the diagonal
    Gaussian, through `tfb.Identity`.

    Every map starts as the identity, and not at a stationary point: one head per
    family outputs an offset from the parameter value that makes its map the
    identity, and that head starts at zero (kernel and bias). Planar:
    u = identity_u(w) + head_u(h), so u_hat = 0 and f = id; radial:
    b = a + head_b(h), so beta = softplus(b) - softplus(a) = 0. The other heads
    start as Keras' Dense (Glorot kernel, zero bias; planar w at a fifth of
    Glorot's variance, so that w(x).z + b starts mostly where tanh is not flat),
    so w, b (z0, a) differ per example and the zero head has a non-zero gradient
    from the first step. (All heads at zero would make planar maps a saddle:
    u = w = b = 0 has zero gradient in every parameter.)

    Arguments:
        event_size: D, the latent dimension.
        num_layers: K >= 0 maps.
        flow: "planar" or "radial".
        scale: "softplus" (scale = softplus(raw)) or "exp" (scale = exp(raw)) for the base.
        rank, variant: the Sylvester flow's rank M and how its Q is made.
        head_units: None, or R: the flow heads read h through one shared linear layer of R
            units (g = h A + c, then each head from g), so the maps' parameters depend on h
            through a rank-R map. With K maps of F outputs each, the heads cost H R + R K F
            multiply-adds per example instead of H K F: at the paper's K = 80, D = 40,
            H = 400 (F = 81, planar), R = 64 makes them 6x cheaper. The base's heads read h.

    References:
        Rezende & Mohamed (2015), sections 4.2 and 6.2.
    """

    @staticmethod
    def _planar(u, w, b) -> dict:
        return {"u": identity_u(w) + u, "w": w, "b": b}

    @staticmethod
    def _radial(z0, a, b) -> dict:
        return {"z0": z0, "a": a, "b": a + b}

    @staticmethod
    def _sylvester(r, r_tilde, b, q_raw=None, *, variant, size, columns, num_layers):
        if variant == "orthogonal":
            q = bijectors.orthonormal_q(q_raw)
        elif variant == "householder":
            q = bijectors.householder_q(q_raw, columns)
        else:  # triangular: the identity for even maps, the reversal for odd ones
            eye = bijectors.permutation_q(size, dtype=r.dtype)
            q = tf.stack([eye if k % 2 == 0 else eye[::-1] for k in range(num_layers)])
            q = tf.broadcast_to(q[:, tf.newaxis], tf.concat([tf.shape(r)[:2], [size, size]], 0))
        return {"q": q, "r": r, "r_tilde": r_tilde, "b": b}

    # flow: (bijector, head outputs -> bijector parameters, the head that starts at zero)
    families = {
        "planar": (bijectors.PlanarFlow, _planar, "u"),
        "radial": (bijectors.RadialFlow, _radial, "b"),
        "sylvester": (bijectors.Sylvester, _sylvester, "r"),
    }
    sylvester_variants = ("orthogonal", "householder", "triangular")
    scales = {"softplus": tf.math.softplus, "exp": tf.exp}
    # Planar w starts at a fifth of Glorot's variance, so that w(x).z + b starts mostly where tanh
    # is
    # not flat (benchmarks/RESULTS.md). Configs, made into initializers per layer: an instance made
    # at
    # import would take its seed then, not from keras.utils.set_random_seed.
    small_heads = {
        "planar": {
            "w": {
                "class_name": "VarianceScaling",
                "config": {"scale": 0.2, "mode": "fan_avg", "distribution": "uniform"},
            }
        }
    }

    def __init__(
        self,
        event_size: int,
        num_layers: int,
        flow: str = "planar",
        scale: str = "softplus",
        rank: int | None = None,
        variant: str = "orthogonal",
        head_units: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        event_size = positive_int(event_size, "AmortizedFlow: event_size")
        if head_units is not None:
            head_units = positive_int(head_units, "AmortizedFlow: head_units")
        num_layers = positive_int(num_layers, "AmortizedFlow: num_layers", minimum=0)
        if flow not in self.families:
            raise ValueError(
                f"AmortizedFlow: unknown flow {flow!r}; amortised flows: "
                f"{', '.join(self.families)}."
            )
        if scale not in self.scales:
            raise ValueError(
                f"AmortizedFlow: unknown scale {scale!r}; choose one of: {', '.join(self.scales)}."
            )
        self.event_size, self.num_layers, self.flow, self.scale = (
            event_size,
            num_layers,
            flow,
            scale,
        )
        self._bijector_class, self._from_heads, zero_head = self.families[flow]
        self.parameter_ranks = event_ranks(self._bijector_class)
        self.rank, self.variant = rank, variant
        if flow != "sylvester" and (rank is not None or variant != "orthogonal"):
            raise ValueError(
                f"AmortizedFlow: rank and variant are options of the sylvester flow, not {flow!r}."
            )
        # the shape of each head's output per map
        self.head_shapes = {name: (event_size,) * r for name, r in self.parameter_ranks.items()}
        if flow == "sylvester":
            if variant not in self.sylvester_variants:
                raise ValueError(
                    "AmortizedFlow: variant must be one of "
                    f"{', '.join(self.sylvester_variants)}, got {variant!r}."
                )
            columns = event_size if variant == "triangular" else (rank or event_size)
            if rank is not None and (
                positive_int(rank, "AmortizedFlow: rank") > event_size
                or (variant == "triangular" and rank != event_size)
            ):
                raise ValueError(
                    f"AmortizedFlow: rank must be <= event_size = {event_size} (and equal to it "
                    f"for the triangular variant), got {rank}."
                )
            self.head_shapes = {"r": (columns, columns), "r_tilde": (columns, columns)}
            self.head_shapes["b"] = (columns,)
            if variant == "orthogonal":
                self.head_shapes["q_raw"] = (event_size, columns)
            elif variant == "householder":
                self.head_shapes["q_raw"] = (columns, event_size)
            self._from_heads = functools.partial(
                self._sylvester,
                variant=variant,
                size=event_size,
                columns=columns,
                num_layers=num_layers,
            )

        def dense(units, name, **init):
            return keras.layers.Dense(units, dtype=self.dtype_policy, name=name, **init)

        self.head_units = head_units
        # the flow heads' shared bottleneck (None: they read h)
        self.flow_features = (
            dense(head_units, "flow_features") if head_units and num_layers else None
        )
        self.loc_head = dense(event_size, "loc")
        self.scale_head = dense(event_size, "scale")
        initializers = {
            zero_head: "zeros",
            **{
                name: keras.initializers.get(config)
                for name, config in self.small_heads.get(flow, {}).items()
            },
        }
        self.flow_heads = (
            {}
            if num_layers == 0
            else {
                name: dense(
                    num_layers * math.prod(shape),
                    name,
                    **({"kernel_initializer": initializers[name]} if name in initializers else {}),
                )
                for name, shape in self.head_shapes.items()
            }
        )

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"AmortizedFlow: features h must be [B, H], got shape {tuple(input_shape)}."
            )
        self.loc_head.build(input_shape)
        self.scale_head.build(input_shape)
        if self.flow_features is not None:
            self.flow_features.build(input_shape)
            input_shape = (input_shape[0], self.head_units)
        for head in self.flow_heads.values():
            head.build(input_shape)

    def call(self, h) -> dict:
        """h: [B, H] -> {"loc", "scale": [B, D], and each flow parameter: [K, B, D] or [K, B]}."""
        params = {"loc": self.loc_head(h), "scale": self.scales[self.scale](self.scale_head(h))}
        if self.num_layers:
            heads = {}
            if self.flow_features is not None:
                h = self.flow_features(h)
            for name, head in self.flow_heads.items():
                out = head(h)  # [B, K * prod(shape)], map k in the k-th block
                out = tf.reshape(out, [-1, self.num_layers, *self.head_shapes[name]])
                heads[name] = tf.transpose(out, [1, 0] + list(range(2, len(out.shape))))
            params.update(self._from_heads(**heads))
        return params

    def bijector_from(self, params: dict) -> tfp.bijectors.Bijector:
        """The K maps with per-example parameters, batch shape [B]; `tfb.Identity` if K = 0."""
        if self.num_layers == 0:
            return tfp.bijectors.Identity()
        return bijectors.Stack(
            self._bijector_class(**{name: params[name] for name in self.parameter_ranks})
        )

    def distribution_from(self, params: dict) -> tfd.TransformedDistribution:
        """q_K from the parameters `call` returned: batch shape [B], event shape [D] (eq. 13)."""
        base = tfd.MultivariateNormalDiag(loc=params["loc"], scale_diag=params["scale"])
        return sampling.FlowDistribution(base, self.bijector_from(params))

    def sample_and_log_prob(self, params: dict, seed, sample_shape=(), rows=None) -> tuple:
        """Draws z ~ q_K(z | x) and ln q_K(z | x) in one forward sweep of the maps (eq. 13).

        The same pair as `distribution_from(params).experimental_sample_and_log_prob`,
        with the base noise drawn as `DiagonalNormal.sample_and_log_prob` does
        (`sampling.standard_normal`):
        z0 = loc + scale * eps and ln q_K(z) = ln q0(z0) - sum_k ln|det df_k/dz_{k-1}|.

        Arguments:
            params: what `call` returned, `loc` and `scale` [B, D].
            seed: stateless seed, a pair of integers.
            sample_shape: draws per example, a tuple of ints.
            rows: None, or a `sampling.ReplicaRows` with sample_shape (): the B examples
                are that slice of the global batch.
        Returns:
            (z `[*sample_shape, B, D]`, ln q_K(z | x) `[*sample_shape, B]`).
        """
        z0, log_q0 = sampling.diagonal_normal_draw(
            params["loc"], params["scale"], sample_shape, seed, rows
        )
        return sampling.push_forward(self.bijector_from(params), z0, log_q0)

    def distribution(self, h) -> tfd.TransformedDistribution:
        """q_K(z | x) for features h: [B, H]; batch shape [B], event shape [D]."""
        return self.distribution_from(self(h))

    def get_config(self):
        return {
            **super().get_config(),
            "event_size": self.event_size,
            "num_layers": self.num_layers,
            "flow": self.flow,
            "scale": self.scale,
            "rank": self.rank,
            "variant": self.variant,
            "head_units": self.head_units,
        }
