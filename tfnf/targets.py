"""Target log-densities: plain functions of z [..., D] -> [...], in a registry.

The paper's 2-D test energies (Table 1) are registered as U1..U4 with
log p~(z) = -U(z). Anything else a user brings, a callable or a
`tfd.Distribution`, goes through `as_log_prob`.

References:
    Rezende & Mohamed (2015), Table 1.
"""

import math
from typing import Callable, Union

import keras
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["get", "names", "as_log_prob", "is_normalizable", "u1", "u2", "u3", "u4"]

LogProb = Callable[[tf.Tensor], tf.Tensor]

_REGISTRY: dict = {}
_NORMALIZABLE = {"U1"}


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
        raise ValueError(f"Target {name} is defined for event_size 2, got z with last dimension {z.shape[-1]}.")
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
    return ring + tf.reduce_logsumexp(tf.stack([_gauss(z1 - 2.0, 0.6), _gauss(z1 + 2.0, 0.6)]), axis=0)


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


def as_log_prob(target: Union[str, LogProb, tfp.distributions.Distribution]) -> LogProb:
    """A callable z [..., D] -> [...] from a registry name, a callable or a `tfd.Distribution`."""
    if isinstance(target, str):
        return get(target)
    if isinstance(target, tfp.distributions.Distribution):
        return target.log_prob
    if callable(target):
        return target
    raise TypeError(f"target_log_prob must be a target name, a callable z -> log p(z) or a "
                    f"tfd.Distribution, got {type(target).__name__}.")
