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
            `tfnf.bijectors.PlanarFlow(u=[K, D], w=[K, D], b=[K])`. K must be static.
    """

    def __init__(
        self, layers: tfp.bijectors.Bijector, validate_args: bool = False, name: str = "stack"
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            batch_shape = layers.experimental_batch_shape()
            if batch_shape.rank is None or batch_shape.rank < 1 or batch_shape[0] is None:
                raise ValueError(
                    "Stack: `layers` needs a static leading batch axis K, got batch shape "
                    f"{batch_shape}."
                )
            if layers.forward_min_event_ndims != 1:
                raise ValueError(
                    "Stack: `layers` must act on vector events (forward_min_event_ndims = 1)."
                )
            self._layers = layers
            self._num_layers = int(batch_shape[0])
            self._last_sweep = None
            super().__init__(
                forward_min_event_ndims=1,
                dtype=layers.dtype,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def layers(self) -> tfp.bijectors.Bijector:
        return self._layers

    @property
    def num_layers(self) -> int:
        return self._num_layers

    def __getitem__(self, slices) -> "Stack":
        """Batch slicing: each map keeps its place on the leading axis K, sliced behind it."""
        slices = slices if isinstance(slices, tuple) else (slices,)
        return Stack(self._layers[(slice(None), *slices)], validate_args=self.validate_args)

    def _batch_shape(self, x_event_ndims):
        return self._layers.experimental_batch_shape(x_event_ndims=x_event_ndims)[1:]

    def _batch_shape_tensor(self, x_event_ndims):
        return self._layers.experimental_batch_shape_tensor(x_event_ndims=x_event_ndims)[1:]

    def _slice(self, k) -> tfp.bijectors.Bijector:
        """Map k: the batched bijector with every parameter gathered at k on its leading axis.

        TFP's own `bijector[k]` broadcasts the parameters to a dynamic batch
        shape first, which breaks shape invariants in the loop (and XLA's
        gradient) when the batch size of per-example parameters is unknown.
        """
        layers = self._layers
        names = layers.parameter_properties()
        return type(layers)(
            **{
                **layers.parameters,
                **{name: tf.gather(layers.parameters[name], k) for name in names},
            }
        )

    def _loop(self, body, state, reverse=False):
        """Run body(layer_k, *state) -> state for k = 0..K-1 (K-1..0 if reverse)."""
        last = self._num_layers - 1

        def step(k, *state):
            return (k + 1, *body(self._slice(last - k if reverse else k), *state))

        return tf.while_loop(
            lambda k, *_: k < self._num_layers,
            step,
            (tf.constant(0), *state),
            maximum_iterations=self._num_layers,
        )[1:]

    def forward_and_log_det(self, x):
        """(f(x), log|det df/dx|) in one sweep; x: [..., D] -> ([..., D], [...])."""
        x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
        ldj = tf.zeros(ps.shape(x)[:-1], x.dtype)  # broadcast against the layers' batch below
        ldj = ldj + tf.zeros(self._batch_shape_tensor(1), x.dtype)

        if not hasattr(self._layers, "constants_and_step"):

            def body(layer, z, ldj):
                return layer.forward(z), ldj + layer.forward_log_det_jacobian(z, event_ndims=1)

            return self._loop(body, (x, ldj))
        # Planar and radial maps hand over their constants for all K maps, computed once
        # outside the loop, and a step that uses one slice: the loop body is then a few
        # fused element-wise ops (benchmarks/RESULTS.md).
        constants, step = self._layers.constants_and_step()
        columns = getattr(step, "columns", None)
        narrow = x.shape.rank == 2 and (x.shape[-1] or 0) < COLUMNS_BELOW
        if COLUMNS and columns is not None and narrow and ldj.shape.rank == 1:
            if columns.applies(constants):
                # A flow's own maps on a [B, D] batch run on x^T, [D, B]: each map's w.z and
                # u_hat t then run along the batch, the layout that vectorises best
                # (benchmarks/RESULTS.md).
                y, ldj = _reversible_sweep(
                    columns, constants, tf.transpose(x), ldj, self._num_layers
                )
                return tf.transpose(y), ldj
        sweep = _reversible_sweep if hasattr(step, "reverse") else _sweep
        return sweep(step, constants, x, ldj, self._num_layers)

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


# Run a flow's own maps (one set of constants for every sample) with the batch as columns,
# for events narrower than COLUMNS_BELOW: from D = 64 up the rows ran as fast or faster
# (K = 8, batch 4,096, 5 rounds: D = 128 4.98 against 6.10 ms, D = 1,024 46.6 against 58.9;
# benchmarks/RESULTS.md), below it the columns (D = 40, batch 100: 0.12 against 0.23 ms).
COLUMNS = True
COLUMNS_BELOW = 64


def _sum_to(grad: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """grad summed over the axes along which `like` was broadcast to grad's shape."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(grad), s1=tf.shape(like))
    return tf.reshape(tf.reduce_sum(grad, axes), tf.shape(like))


# Maps per iteration of `_reversible_sweep`'s loops: more lets XLA fuse neighbouring maps'
# element-wise work, at the price of compile time (benchmarks/RESULTS.md).
UNROLL = 1


def _reversible_sweep(step, constants, x: tf.Tensor, ldj: tf.Tensor, num_layers: int) -> tuple:
    """`_sweep` for a step that runs backwards in closed form (`step.saving`, `step.reverse`).

    The forward loop keeps one small tensor per map (planar: t = tanh(w.z + b),
    [...], not z [..., D]); the backward loop recovers each map's input from its
    output and that tensor and applies the step's own vector-Jacobian product: no
    tape, no recomputed forward, no [K, ..., D] stack of inputs in memory. Each loop
    iteration runs `UNROLL` maps; the K mod UNROLL maps left over run unrolled after
    (forward) and before (backward) the loop.
    """
    flat = tf.nest.flatten(constants)
    unroll = max(1, min(UNROLL, num_layers))
    blocks, looped = num_layers // unroll, (num_layers // unroll) * unroll

    def at(k, tensors):
        return tf.nest.pack_sequence_as(constants, [tf.gather(t, k) for t in tensors])

    @tf.custom_gradient
    def sweep(x, ldj, *flat):
        def forward(k, z, ldj, saved):
            y, log_det, keep = step.saving(at(k, flat), z)
            return y, ldj + log_det, saved.write(k, keep)

        def block(i, z, ldj, saved):
            for j in range(unroll):
                z, ldj, saved = forward(i * unroll + j, z, ldj, saved)
            return i + 1, z, ldj, saved

        saved = tf.TensorArray(x.dtype, size=num_layers, element_shape=ldj.shape)
        state = (x, ldj, saved)
        if blocks:
            state = tf.while_loop(
                lambda i, *_: i < blocks, block, (0, *state), maximum_iterations=blocks
            )[1:]
        for k in range(looped, num_layers):
            state = forward(k, *state)
        y, ldj_out, saved = state
        saved = saved.stack()

        def grad(grad_y, grad_ldj):
            def backward(k, z, grad_z, grads):
                c = at(k, flat)
                z, grad_z, grad_c = step.reverse(c, z, saved[k], grad_z, grad_ldj)
                sums = [_sum_to(g, t) for g, t in zip(grad_c, tf.nest.flatten(c), strict=True)]
                return z, grad_z, [g.write(k, gc) for g, gc in zip(grads, sums, strict=True)]

            def block(i, z, grad_z, *grads):
                grads = list(grads)
                for j in reversed(range(unroll)):
                    z, grad_z, grads = backward((blocks - 1 - i) * unroll + j, z, grad_z, grads)
                return (i + 1, z, grad_z, *grads)

            grads = [
                tf.TensorArray(t.dtype, size=num_layers, element_shape=t.shape[1:]) for t in flat
            ]
            z, grad_z = y, grad_y
            for k in reversed(range(looped, num_layers)):
                z, grad_z, grads = backward(k, z, grad_z, grads)
            if blocks:
                out = tf.while_loop(
                    lambda i, *_: i < blocks,
                    block,
                    (0, z, grad_z, *grads),
                    maximum_iterations=blocks,
                )
                grad_z, grads = out[2], out[3:]
            return (grad_z, grad_ldj, *[g.stack() for g in grads])

        return (y, ldj_out), grad

    return sweep(x, ldj, *flat)


def _sweep(step, constants, x: tf.Tensor, ldj: tf.Tensor, num_layers: int) -> tuple:
    """(z_K, ldj + sum_k log|det df_k|) for z_{k+1} = step(constants[k], z_k), z_0 = x.

    Its gradient rematerialises: the forward loop keeps only each z_k, and the
    backward loop re-runs one step at a time under a tape to get that step's
    vector-Jacobian product, rather than keeping every intermediate of every
    step as backpropagating the loop would (faster under XLA: benchmarks/RESULTS.md).

    Arguments:
        step: (constants slice, z [..., D]) -> (z' [..., D], log-det [...]).
        constants: a structure of [K, ...] tensors.
        x: [..., D]; ldj: [...], the log-det so far, already of the result's shape.
    """
    flat = tf.nest.flatten(constants)

    def at(k, tensors):
        return tf.nest.pack_sequence_as(constants, [tf.gather(t, k) for t in tensors])

    @tf.custom_gradient
    def sweep(x, ldj, *flat):
        def body(k, z, ldj, zs):
            y, log_det = step(at(k, flat), z)
            return k + 1, y, ldj + log_det, zs.write(k, z)

        inputs = tf.TensorArray(x.dtype, size=num_layers, element_shape=x.shape)
        _, y, ldj, inputs = tf.while_loop(
            lambda k, *_: k < num_layers, body, (0, x, ldj, inputs), maximum_iterations=num_layers
        )
        inputs = inputs.stack()

        def grad(grad_y, grad_ldj):
            # d(ldj_out)/d(log_det_k) = 1 for every k, so grad_ldj flows to each step as is.
            def back(j, grad_z, *grads):
                k = num_layers - 1 - j
                z, c = inputs[k], [tf.gather(t, k) for t in flat]
                with tf.GradientTape() as tape:
                    tape.watch([z, *c])
                    y, log_det = step(tf.nest.pack_sequence_as(constants, c), z)
                grad_z, *grad_c = tape.gradient(
                    [y, log_det],
                    [z, *c],
                    output_gradients=[grad_z, grad_ldj],
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                return (
                    j + 1,
                    grad_z,
                    *[g.write(k, gc) for g, gc in zip(grads, grad_c, strict=True)],
                )

            grads = [
                tf.TensorArray(t.dtype, size=num_layers, element_shape=t.shape[1:]) for t in flat
            ]
            out = tf.while_loop(
                lambda j, *_: j < num_layers,
                back,
                (0, grad_y, *grads),
                maximum_iterations=num_layers,
            )
            return (out[1], grad_ldj, *[g.stack() for g in out[2:]])

        return (y, ldj), grad

    return sweep(x, ldj, *flat)
