"""Run by tests/test_vae_training.py in a fresh interpreter: FlowVAE and NormalizingFlow under MirroredStrategy.

Two logical CPU devices must be configured before TensorFlow initialises its
devices, hence a separate process. Prints one JSON line of numbers (and error
messages) that the test compares; see `main` for the keys.

`Recommended*` carry the changes proposed for tfnf/models.py and tfnf/vae.py
(see their docstrings); the shipped classes fail under MirroredStrategy. Once
the library carries the changes, these subclasses go.
"""

import json
import math
import os
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfnf import models  # noqa: E402
from tfnf.models import NormalizingFlow  # noqa: E402
from tfnf.vae import FlowVAE, bernoulli_log_prob, negative_log_likelihood  # noqa: E402

DEVICES = ["/cpu:0", "/cpu:1"]


# -- the recommended fix ------------------------------------------------------

def replica_rows(batch):
    """(offset, total): this replica's rows within the global batch; (0, batch) outside a strategy."""
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return tf.constant(0), batch
    sizes = replica.all_gather(tf.reshape(batch, [1]), axis=0)  # [R]; the last batch may split unevenly
    return tf.reduce_sum(sizes[:replica.replica_id_in_sync_group]), tf.reduce_sum(sizes)


def global_noise_rows(shape, rows, seed, dtype, axis):
    """Standard normal noise drawn for the global batch along `axis`, then this replica's rows of it."""
    offset, total = rows
    global_shape = tf.concat([shape[:axis], [total], shape[axis + 1:]], 0)
    eps = tf.random.stateless_normal(global_shape, seed=seed, dtype=dtype, alg="philox")
    return tf.gather(eps, tf.range(offset, offset + shape[axis]), axis=axis)


class RecommendedGuard:
    """GuardedTraining as proposed: runs under a tf.distribute strategy with any number of replicas."""

    def _init_guard(self, seed):
        self._sampler_seed = seed if seed is not None else random.randrange(2**31)
        # A MirroredVariable assigned in replica context needs an aggregation; all replicas agree on it.
        self.first_non_finite_step = keras.Variable(-1, dtype="int64", trainable=False, name="first_non_finite_step",
                                                    aggregation="only_first_replica")

    def _apply_if_finite(self, loss, grads, variables):
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
                               + [tf.math.is_finite(loss)])
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:  # every replica must take the same branch
            finite = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.int32)) == 0
        clean = self.first_non_finite_step < 0
        if tf.distribute.has_strategy() and not tf.__internal__.distribute.strategy_supports_no_merge_call():
            # The optimizer's all-reduce is a merge_call, which no strategy allows inside a cond in
            # replica context: the cond goes to cross-replica context (Keras' LossScaleOptimizer does the same).
            def cross_replica(strategy, apply, grads):
                tf.cond(strategy.experimental_local_results(apply)[0],
                        lambda: strategy.extended.call_for_each_replica(self.optimizer.apply, args=(grads, variables)),
                        lambda: None)

            replica.merge_call(cross_replica, args=(finite & clean, grads))
        else:
            tf.cond(finite & clean, lambda: self.optimizer.apply(grads, variables), lambda: None)
        self.first_non_finite_step.assign(tf.where(
            clean & ~finite, tf.cast(self.optimizer.iterations, tf.int64), self.first_non_finite_step))
        return finite

    def compile(self, optimizer="rmsprop", *, jit_compile="auto", **kwargs):
        if jit_compile == "auto" and tf.distribute.has_strategy():
            jit_compile = False  # as Keras' own "auto": XLA cannot place a step that spans devices
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)


def _stop_on_non_finite(self, batch, logs=None):
    # int() of a keras.Variable holding a MirroredVariable raises TypeError; .numpy() reads the first replica.
    step = int(self.model.first_non_finite_step.numpy()) + 1
    if step:
        self.model.stop_training = True
        raise models.NonFiniteLossError(f"Non-finite loss or gradient at training step {step}.")


class RecommendedFlowVAE(RecommendedGuard, FlowVAE):
    """FlowVAE as proposed: each replica draws its rows of the global batch's noise; gradient of the global mean."""

    fix_noise, fix_scale = True, True

    def log_weight_terms(self, x, seed, sample_shape=(), rows=None):
        if rows is None or not self.fix_noise:
            return super().log_weight_terms(x, seed, sample_shape)
        x = tf.cast(x, self.compute_dtype)
        params = self.posterior_parameters(x)
        loc, scale = params["loc"], params["scale"]
        eps = global_noise_rows(tf.shape(loc), rows, seed, loc.dtype, axis=0)
        log_q = (-0.5 * tf.reduce_sum(tf.square(eps), -1) - tf.reduce_sum(tf.math.log(scale), -1)
                 - 0.5 * self.latent_size * math.log(2 * math.pi))
        z = loc + scale * eps
        if self.num_layers:
            z, log_det = self.posterior_layer.bijector_from(params).forward_and_log_det(z)
            log_q = log_q - log_det
        return bernoulli_log_prob(x, self.decode(z)), self.prior.log_prob(z), log_q

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        beta = self._beta()
        rows = replica_rows(tf.shape(x)[0])
        with tf.GradientTape() as tape:
            log_px_z, log_pz, log_q = self.log_weight_terms(x, self._step_seed(), rows=rows)
            per_image = log_q - beta * (log_px_z + log_pz)
            loss = tf.reduce_mean(per_image)
            # The strategy sums the replicas' gradients: each replica takes its share of the global mean.
            share = tf.reduce_sum(per_image) / tf.cast(rows[1], per_image.dtype) if self.fix_scale else loss
        variables = self.trainable_variables
        finite = self._apply_if_finite(loss, tape.gradient(share, variables), variables)
        return self._track(loss, log_px_z, log_pz, log_q, finite)


class RecommendedFlow(RecommendedGuard, NormalizingFlow):
    """NormalizingFlow as proposed: `batch_size` is the global batch; each replica draws its rows of it."""

    def fit(self, *, steps, steps_per_epoch, batch_size, **kwargs):
        # The shipped fit feeds scalar dummy elements, which a strategy cannot split between replicas.
        self.batch_size, self.train_function = batch_size, None
        self.first_non_finite_step.assign(-1)
        no_data = tf.data.Dataset.from_tensors(tf.zeros([self.distribute_strategy.num_replicas_in_sync])).repeat()
        return keras.Model.fit(self, no_data, epochs=steps // steps_per_epoch, steps_per_epoch=steps_per_epoch,
                               callbacks=[models.StopOnNonFinite()], **kwargs)

    def train_step(self, data):
        beta = self._beta(self.optimizer.iterations)
        replica = tf.distribute.get_replica_context()
        per_replica = self.batch_size // replica.num_replicas_in_sync  # batch_size: a multiple of the replicas
        rows = (replica.replica_id_in_sync_group * per_replica, self.batch_size)
        with tf.GradientTape() as tape:
            base = self.base.distribution()
            loc, scale = base.loc, base.scale.diag
            eps = global_noise_rows(tf.constant([per_replica, self.event_size]), rows, self._step_seed(), loc.dtype,
                                    axis=0)
            z0 = loc + scale * eps
            log_q0 = base.log_prob(z0)
            z, log_det = self.bijector.forward_and_log_det(z0)
            loss, bound = models.reverse_kl(log_q0 - log_det, self._target_log_prob(z), beta)
            share = loss / replica.num_replicas_in_sync  # the strategy sums the replicas' gradients
        variables = self.trainable_variables
        finite = self._apply_if_finite(loss, tape.gradient(share, variables), variables)
        nan = tf.constant(math.nan, loss.dtype)
        self.loss_tracker.update_state(tf.where(finite, loss, nan))
        self.bound_tracker.update_state(tf.where(finite, bound, nan))
        self.beta_tracker.update_state(beta)
        return {m.name: m.result() for m in self.metrics}


# -- the runs -------------------------------------------------------------------

def images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((2, size)) < 0.5
    return (protos[rng.integers(2, size=n)] ^ (rng.random((n, size)) < 0.05)).astype("float64")


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def max_difference(a, b):
    return float(max(np.abs(p - q).max() for p, q in zip(a, b)))


def fit_vae(cls, strategy, x, optimizer, epochs=1, batch_size=20, **compile_kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = cls(latent_size=2, hidden_units=6, num_layers=2, data_size=x.shape[1], seed=3, dtype="float64")
        model.compile(optimizer=optimizer(), **compile_kwargs)
    start = weights(model)
    model.fit(x, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, {"moved": max_difference(start, weights(model)),
                   "iterations": int(model.optimizer.iterations.numpy())}


def fit_flow(cls, strategy, steps=3, **compile_kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = cls(event_size=2, num_layers=3, target_log_prob="U1", seed=3, dtype="float64")
        model.compile(optimizer=keras.optimizers.Adam(1e-2), **compile_kwargs)
    start = weights(model)
    model.fit(steps=steps, steps_per_epoch=3, batch_size=64, verbose=0)
    return model, {"moved": max_difference(start, weights(model))}


def error_of(run):
    try:
        run()
    except Exception as error:  # reported, and compared by the test
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return None


def per_replica_draws(model, strategy, x, rows_fix):
    """Max differences between the base noise each replica draws for its half of x and one device's draw.

    `model` has no flow maps, so its posterior sample is loc + scale * eps and eps can be read back.
    """
    seed = tf.constant([3, 0])

    def draw(x):
        params = model.posterior_parameters(x)
        if rows_fix:
            return global_noise_rows(tf.shape(params["loc"]), replica_rows(tf.shape(x)[0]), seed, x.dtype, axis=0)
        z, _ = model.posterior_layer.sample_and_log_prob(params, seed)
        return (z - params["loc"]) / params["scale"]

    one_device = draw(tf.constant(x)).numpy()
    batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))))
    halves = [t.numpy() for t in strategy.experimental_local_results(strategy.run(tf.function(draw), args=(batch,)))]
    half = len(x) // 2
    return {"replica0_vs_one_device": float(np.abs(halves[0] - one_device[:half]).max()),
            "replica1_vs_one_device": float(np.abs(halves[1] - one_device[half:]).max()),
            "replica1_vs_replica0": float(np.abs(halves[1] - halves[0]).max())}


def main():
    mirrored = tf.distribute.MirroredStrategy(DEVICES)
    one = tf.distribute.get_strategy()
    # SGD: unlike Adam, its step is proportional to the gradient, so a gradient summed instead of averaged shows.
    # No XLA on one device either: XLA's Philox stream differs from TF's kernel for the same seed, and Keras
    # (and the proposed GuardedTraining.compile) turns XLA off under a strategy.
    sgd = lambda: keras.optimizers.SGD(0.1)  # noqa: E731
    x = images(65, 12)  # 3 batches of 20, then 5 rows, which the replicas split 3 + 2
    out = {"replicas": mirrored.num_replicas_in_sync}

    # The shipped classes.
    out["shipped_vae_error"] = error_of(lambda: fit_vae(FlowVAE, mirrored, x, sgd, jit_compile=False))
    out["shipped_flow_error"] = error_of(lambda: fit_flow(NormalizingFlow, mirrored, jit_compile=False))
    with mirrored.scope():
        keras.utils.set_random_seed(0)
        probe = FlowVAE(latent_size=2, hidden_units=6, num_layers=0, data_size=12, seed=3, dtype="float64")
    out["shipped_draws"] = per_replica_draws(probe, mirrored, x[:20], rows_fix=False)
    out["fixed_draws"] = per_replica_draws(probe, mirrored, x[:20], rows_fix=True)

    # The recommended fix, then with each of its two FlowVAE parts undone.
    models.StopOnNonFinite.on_train_batch_end = _stop_on_non_finite
    reference, out["one_device"] = fit_vae(RecommendedFlowVAE, one, x, sgd, jit_compile=False)
    distributed, out["mirrored"] = fit_vae(RecommendedFlowVAE, mirrored, x, sgd)
    out["mirrored"]["weights_vs_one_device"] = max_difference(weights(reference), weights(distributed))
    out["mirrored"]["jit_compile"] = bool(distributed.jit_compile)
    nll = [negative_log_likelihood(m, x[:10], num_samples=4, jit_compile=False).mean for m in (reference, distributed)]
    out["mirrored"]["nll_vs_one_device"] = abs(nll[0] - nll[1])
    for part in ("fix_noise", "fix_scale"):
        model, _ = fit_vae(type("Ablated", (RecommendedFlowVAE,), {part: False}), mirrored, x, sgd)
        out[f"without_{part}_vs_one_device"] = max_difference(weights(reference), weights(model))
    flow_one, out["flow_one_device"] = fit_flow(RecommendedFlow, one, jit_compile=False)
    flow_mirrored, out["flow_mirrored"] = fit_flow(RecommendedFlow, mirrored)
    out["flow_mirrored"]["weights_vs_one_device"] = max_difference(weights(flow_one), weights(flow_mirrored))
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
