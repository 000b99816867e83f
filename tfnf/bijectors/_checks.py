"""Argument checks shared by the tfnf bijectors, in TFP's style."""

import numpy as np
import tensorflow as tf
from tensorflow_probability.python.internal import tensor_util


def check_event_shapes(owner: str, **vectors) -> None:
    """Raise ValueError unless every vector parameter is [..., D] with one common static D."""
    sizes = {}
    for name, v in vectors.items():
        shape = tf.TensorShape(v.shape)
        if shape.rank is not None and shape.rank < 1:
            raise ValueError(
                f"{owner}: `{name}` must have shape [..., D] (rank >= 1), got shape {shape}."
            )
        sizes[name] = shape[-1:] if shape.rank is not None else tf.TensorShape([None])
    first, first_size = next(iter(sizes.items()))
    for name, size in sizes.items():
        if not size.is_compatible_with(first_size):
            raise ValueError(
                f"{owner}: `{first}` and `{name}` must share the event size D, "
                f"got last dimensions {first_size} and {size}."
            )


def finiteness_checks(owner: str, is_init: bool, **params) -> list:
    """Check each parameter is finite (TFP's `_parameter_control_dependencies` protocol).

    A value known now is checked now (ValueError); one known only when the graph
    runs, a variable read inside `tf.function`, gets an assertion op.
    """
    checks = []
    for name, p in params.items():
        if is_init == tensor_util.is_ref(p):
            continue
        message = f"{owner}: parameter `{name}` must be finite."
        p = tf.convert_to_tensor(p)
        value = tf.get_static_value(p)
        if value is None:
            checks.append(tf.debugging.assert_all_finite(p, message))
        elif not np.all(np.isfinite(value)):
            raise ValueError(message)
    return checks
