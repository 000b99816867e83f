"""Keras layers that own flow parameters and hand out TFP objects built from them.

Keras 3 tracks only weights made with `add_weight`, so the layers hold the
parameters and build a fresh bijector (or distribution) from them each time it
is asked for, inside the traced training step.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import bijectors

__all__ = ["Planar", "Radial", "DiagonalNormal", "FLOWS", "get_flow"]

tfd = tfp.distributions


class _FlowLayer(keras.layers.Layer):
    """`num_layers` maps of one flow family, their weights stacked along a leading axis K.

    `bijector()` is a `tfnf.bijectors.Stack` of the family's bijector built from
    the weights: f_{K-1} o ... o f_0, traced as one loop. Keeping the K maps in
    one layer gives the optimiser a few [K, ...] weights instead of 3K small
    ones, which is most of the step time of a long flow. Subclasses name their
    `bijector_class` and its parameters with their event rank (1: [D], 0: scalar).

    Arguments:
        num_layers: K, the number of maps.
        initializer: for every weight.
    """

    bijector_class: type
    parameter_ranks: dict
    default_initializer = "random_normal"

    def __init__(self, num_layers: int = 1, initializer=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}.")
        self.num_layers = num_layers
        self.initializer = keras.initializers.get(initializer or self.default_initializer)

    def build(self, input_shape):
        size = input_shape[-1]
        for name, rank in self.parameter_ranks.items():
            weight = self.add_weight(shape=(self.num_layers,) + (size,) * rank, initializer=self.initializer,
                                     name=name)
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
        return {**super().get_config(), "num_layers": self.num_layers,
                "initializer": keras.initializers.serialize(self.initializer)}


@keras.saving.register_keras_serializable(package="tfnf")
class Planar(_FlowLayer):
    """K planar maps (eq. 10): weights u, w [K, D] and b [K] for `tfnf.bijectors.Planar`.

    The default initialiser U(0, 1) is the seed scripts': on U1 it lets a flow
    cover both modes, where small weights settle on one.
    """

    bijector_class = bijectors.Planar
    parameter_ranks = {"u": 1, "w": 1, "b": 0}
    default_initializer = keras.initializers.RandomUniform(0.0, 1.0)


@keras.saving.register_keras_serializable(package="tfnf")
class Radial(_FlowLayer):
    """K radial maps (eq. 14): weights z0 [K, D], a [K] and b [K] (raw alpha, beta) for `tfnf.bijectors.Radial`."""

    bijector_class = bijectors.Radial
    parameter_ranks = {"z0": 1, "a": 0, "b": 0}


@keras.saving.register_keras_serializable(package="tfnf")
class DiagonalNormal(keras.layers.Layer):
    """The base q0 = N(loc, diag(scale^2)), scale = softplus(raw_scale), starting at N(0, I).

    Arguments:
        trainable: False gives the fixed standard normal of the seed scripts.
    """

    def build(self, input_shape):
        size = input_shape[-1]
        self.loc = self.add_weight(shape=(size,), initializer="zeros", name="loc")
        # softplus^-1(1) so the base starts as N(0, I).
        self.raw_scale = self.add_weight(shape=(size,), initializer=keras.initializers.Constant(0.5413248546129181),
                                         name="raw_scale")

    def distribution(self) -> tfd.Distribution:
        return tfd.MultivariateNormalDiag(loc=tf.convert_to_tensor(self.loc),
                                          scale_diag=tf.math.softplus(tf.convert_to_tensor(self.raw_scale)))

    def call(self, n):
        return self.distribution().sample(n)


FLOWS = {"planar": Planar, "radial": Radial}


def get_flow(name: str) -> type:
    """The flow layer class called `name` ("planar" or "radial")."""
    if name not in FLOWS:
        raise ValueError(f"Unknown flow {name!r}; known flows: {', '.join(sorted(FLOWS))}.")
    return FLOWS[name]
