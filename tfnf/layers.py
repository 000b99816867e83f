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
    """A flow layer: `bijector()` builds the TFP bijector; calling the layer applies it."""

    def bijector(self) -> tfp.bijectors.Bijector:
        raise NotImplementedError

    def call(self, z):
        """z: [..., D] -> f(z): [..., D]."""
        return self.bijector().forward(z)


@keras.saving.register_keras_serializable(package="tfnf")
class Planar(_FlowLayer):
    """Weights u, w [D] and b [] of a planar flow (eq. 10); `bijector()` is `tfnf.bijectors.Planar`.

    Arguments:
        initializer: for u, w and b; U(0, 1) by default, as in the seed scripts:
            on U1 it tends to cover both modes, where small weights settle on one.
    """

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomUniform(0.0, 1.0))

    def build(self, input_shape):
        size = input_shape[-1]
        self.u = self.add_weight(shape=(size,), initializer=self.initializer, name="u")
        self.w = self.add_weight(shape=(size,), initializer=self.initializer, name="w")
        self.b = self.add_weight(shape=(), initializer=self.initializer, name="b")

    def bijector(self) -> bijectors.Planar:
        return bijectors.Planar(tf.convert_to_tensor(self.u), tf.convert_to_tensor(self.w),
                                tf.convert_to_tensor(self.b))

    def get_config(self):
        return {**super().get_config(), "initializer": keras.initializers.serialize(self.initializer)}


@keras.saving.register_keras_serializable(package="tfnf")
class Radial(_FlowLayer):
    """Weights z0 [D], a [] and b [] of a radial flow (eq. 14); `bijector()` is `tfnf.bijectors.Radial`.

    Arguments:
        initializer: for z0, a and b (raw alpha and beta).
    """

    def __init__(self, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        size = input_shape[-1]
        self.z0 = self.add_weight(shape=(size,), initializer=self.initializer, name="z0")
        self.a = self.add_weight(shape=(), initializer=self.initializer, name="a")
        self.b = self.add_weight(shape=(), initializer=self.initializer, name="b")

    def bijector(self) -> bijectors.Radial:
        return bijectors.Radial(tf.convert_to_tensor(self.z0), tf.convert_to_tensor(self.a),
                                tf.convert_to_tensor(self.b))

    def get_config(self):
        return {**super().get_config(), "initializer": keras.initializers.serialize(self.initializer)}


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
