"""K bijectors of one family, applied one after another as a single traced loop."""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import prefer_static as ps

__all__ = ["Stack"]


class Stack(tfp.bijectors.AutoCompositeTensorBijector):
    """f_{K-1} o ... o f_1 o f_0, where f_k is slice k of a batched bijector's leading batch axis.

    The same map as `tfb.Chain([layers[K-1], ..., layers[0]])`, but the K steps
    run in one `tf.while_loop`: one layer is traced whatever K, so trace and XLA
    compile time do not grow with the flow's length, and the forward pass and
    its log-det come out of one sweep (eq. 13).

    Arguments:
        layers: a bijector with batch shape [K, ...], e.g.
            `tfnf.bijectors.Planar(u=[K, D], w=[K, D], b=[K])`. K must be static.
    """

    def __init__(self, layers: tfp.bijectors.Bijector, validate_args: bool = False, name: str = "stack"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            batch_shape = layers.experimental_batch_shape()
            if batch_shape.rank is None or batch_shape.rank < 1 or batch_shape[0] is None:
                raise ValueError(f"Stack: `layers` needs a static leading batch axis K, got batch shape {batch_shape}.")
            if layers.forward_min_event_ndims != 1:
                raise ValueError("Stack: `layers` must act on vector events (forward_min_event_ndims = 1).")
            self._layers = layers
            self._num_layers = int(batch_shape[0])
            self._last_sweep = None
            super().__init__(forward_min_event_ndims=1, dtype=layers.dtype, validate_args=validate_args,
                             parameters=parameters, name=name)

    @property
    def layers(self) -> tfp.bijectors.Bijector:
        return self._layers

    @property
    def num_layers(self) -> int:
        return self._num_layers

    def _batch_shape(self, x_event_ndims):
        return self._layers.experimental_batch_shape(x_event_ndims=x_event_ndims)[1:]

    def _batch_shape_tensor(self, x_event_ndims):
        return self._layers.experimental_batch_shape_tensor(x_event_ndims=x_event_ndims)[1:]

    def _loop(self, body, state, reverse=False):
        """Run body(layer_k, *state) -> state for k = 0..K-1 (K-1..0 if reverse)."""
        last = self._num_layers - 1

        def step(k, *state):
            layer = self._layers[last - k if reverse else k]
            return (k + 1, *body(layer, *state))

        return tf.while_loop(lambda k, *_: k < self._num_layers, step, (tf.constant(0), *state),
                             maximum_iterations=self._num_layers)[1:]

    def forward_and_log_det(self, x):
        """(f(x), log|det df/dx|) in one sweep; x: [..., D] -> ([..., D], [...])."""
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        ldj = tf.zeros(ps.shape(x)[:-1], x.dtype)  # broadcast against the layers' batch below
        ldj = ldj + tf.zeros(self._batch_shape_tensor(1), x.dtype)

        if not hasattr(self._layers, "stack_step"):
            def body(layer, z, ldj):
                return layer.forward(z), ldj + layer.forward_log_det_jacobian(z, event_ndims=1)

            return self._loop(body, (x, ldj))
        # Planar and Radial hand over their per-map constants for all K maps,
        # computed once outside the loop, and a step that uses one slice: the
        # loop body is then a few fused element-wise ops (benchmarks/RESULTS.md).
        constants, step = self._layers.stack_step()

        def fused(k, z, ldj):
            y, log_det = step(tf.nest.map_structure(lambda c: tf.gather(c, k), constants), z)
            return k + 1, y, ldj + log_det

        return tf.while_loop(lambda k, *_: k < self._num_layers, fused, (tf.constant(0), x, ldj),
                             maximum_iterations=self._num_layers)[1:]

    def _forward(self, x):
        y, ldj = self.forward_and_log_det(x)
        # TFP asks for forward(x) then forward_log_det_jacobian(x) with the same x
        # (TransformedDistribution.experimental_sample_and_log_prob): keep the
        # log-det of the last sweep so the second call costs nothing.
        self._last_sweep = self._no_dependency((x, ldj))
        return y

    def _forward_log_det_jacobian(self, x):
        if self._last_sweep is not None and self._last_sweep[0] is x:
            return self._last_sweep[1]
        return self.forward_and_log_det(x)[1]

    def _inverse(self, y):
        return self._loop(lambda layer, z: (layer.inverse(z),), (y,), reverse=True)[0]

    def _inverse_log_det_jacobian(self, y):
        ildj = tf.zeros(ps.shape(y)[:-1], y.dtype) + tf.zeros(self._batch_shape_tensor(1), y.dtype)

        def body(layer, z, ildj):
            x = layer.inverse(z)
            return x, ildj - layer.forward_log_det_jacobian(x, event_ndims=1)

        return self._loop(body, (y, ildj), reverse=True)[1]
