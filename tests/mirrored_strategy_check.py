"""Run by tests/test_vae_training.py in a fresh interpreter: FlowVAE and NormalizingFlow under
MirroredStrategy.

Two logical CPU devices must be configured before TensorFlow initialises its
devices, hence a separate process. Prints one JSON line of numbers (and error
messages) that the test compares; see `main` for the keys.

`NoRows` undoes one part of the design (each replica drawing its rows of the
global batch's noise), to show the comparison would catch its absence.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfnf import models, sampling  # noqa: E402
from tfnf.models import (  # noqa: E402
    FlowVAE,
    NormalizingFlow,  # noqa: E402
    negative_log_likelihood,
)

DEVICES = ["/cpu:0", "/cpu:1"]


class NoRows(FlowVAE):
    """FlowVAE with each replica drawing its noise as if it held the whole batch: what the `rows`
    argument prevents.
    """

    def log_weight_terms(self, x, seed, sample_shape=(), rows=None, encoded=None):
        return super().log_weight_terms(x, seed, sample_shape, encoded=encoded)


# -- the runs -------------------------------------------------------------------


def images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((2, size)) < 0.5
    return (protos[rng.integers(2, size=n)] ^ (rng.random((n, size)) < 0.05)).astype("float64")


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def max_difference(a, b):
    return float(max(np.abs(p - q).max() for p, q in zip(a, b, strict=True)))


def fit_vae(cls, strategy, x, optimizer, epochs=1, batch_size=20, **compile_kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = cls(
            latent_size=2,
            hidden_units=6,
            num_layers=2,
            data_size=x.shape[1],
            seed=3,
            dtype="float64",
        )
        model.compile(optimizer=optimizer(), **compile_kwargs)
    start = weights(model)
    model.fit(x, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, {
        "moved": max_difference(start, weights(model)),
        "iterations": int(model.optimizer.iterations.numpy()),
    }


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


def per_replica_draws(model, strategy, x, with_rows):
    """Max differences between the base noise each replica draws for its half of x and one
    device's draw.

    `model` has no flow maps, so its posterior sample is loc + scale * eps and eps can be read back.
    """
    seed = tf.constant([3, 0])

    def draw(x):
        params = model.posterior_parameters(x)
        rows = sampling.replica_rows(tf.shape(x)[0]) if with_rows else None
        z, _ = model.posterior_layer.sample_and_log_prob(params, seed, rows=rows)
        return (z - params["loc"]) / params["scale"]

    one_device = draw(tf.constant(x)).numpy()
    batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))))
    halves = [
        t.numpy()
        for t in strategy.experimental_local_results(strategy.run(tf.function(draw), args=(batch,)))
    ]
    half = len(x) // 2
    return {
        "replica0_vs_one_device": float(np.abs(halves[0] - one_device[:half]).max()),
        "replica1_vs_one_device": float(np.abs(halves[1] - one_device[half:]).max()),
        "replica1_vs_replica0": float(np.abs(halves[1] - halves[0]).max()),
    }


def main():
    mirrored = tf.distribute.MirroredStrategy(DEVICES)
    one = tf.distribute.get_strategy()
    # SGD: unlike Adam, its step is proportional to the gradient, so a gradient summed instead of
    # averaged shows. No XLA on one device either: XLA's Philox stream differs from TF's kernel for
    # the same seed, and GuardedTraining.compile turns XLA off under a strategy.
    sgd = lambda: keras.optimizers.SGD(0.1)  # noqa: E731
    x = images(65, 12)  # 3 batches of 20, then 5 rows, which the replicas split 3 + 2
    out = {"replicas": mirrored.num_replicas_in_sync}

    reference, out["one_device"] = fit_vae(FlowVAE, one, x, sgd, jit_compile=False)
    distributed, out["mirrored"] = fit_vae(FlowVAE, mirrored, x, sgd)
    out["mirrored"]["weights_vs_one_device"] = max_difference(
        weights(reference), weights(distributed)
    )
    out["mirrored"]["jit_compile"] = bool(distributed.jit_compile)
    nll = [
        negative_log_likelihood(m, x[:10], num_samples=4, jit_compile=False).mean
        for m in (reference, distributed)
    ]
    out["mirrored"]["nll_vs_one_device"] = abs(nll[0] - nll[1])
    scores = [
        m.evaluate(x, batch_size=20, verbose=0, return_dict=True) for m in (reference, distributed)
    ]
    out["mirrored"]["evaluate_vs_one_device"] = max(
        abs(scores[0][k] - scores[1][k]) for k in scores[0]
    )
    out["mirrored"]["evaluate_keys"] = sorted(scores[1])
    ablated, _ = fit_vae(NoRows, mirrored, x, sgd)
    out["without_rows_vs_one_device"] = max_difference(weights(reference), weights(ablated))

    with mirrored.scope():
        keras.utils.set_random_seed(0)
        probe = FlowVAE(
            latent_size=2, hidden_units=6, num_layers=0, data_size=12, seed=3, dtype="float64"
        )
    out["draws_without_rows"] = per_replica_draws(probe, mirrored, x[:20], with_rows=False)
    out["draws_with_rows"] = per_replica_draws(probe, mirrored, x[:20], with_rows=True)

    # A NaN in one image of the third batch, in the rows replica 1 holds: both replicas skip the
    # step.
    bad = x[:60].copy()
    bad[55, 3] = np.nan
    out["non_finite_error"] = error_of(lambda: fit_vae(FlowVAE, mirrored, bad, sgd))
    two_steps, _ = fit_vae(FlowVAE, one, x[:40], sgd, jit_compile=False)
    with mirrored.scope():
        stopped = fit_vae_stopped(mirrored, bad, sgd)
    out["non_finite_weights_vs_two_steps"] = max_difference(weights(two_steps), weights(stopped))

    flow_one, out["flow_one_device"] = fit_flow(NormalizingFlow, one, jit_compile=False)
    flow_mirrored, out["flow_mirrored"] = fit_flow(NormalizingFlow, mirrored)
    out["flow_mirrored"]["weights_vs_one_device"] = max_difference(
        weights(flow_one), weights(flow_mirrored)
    )
    out["flow_odd_batch_error"] = error_of(
        lambda: flow_mirrored.fit(steps=1, batch_size=63, verbose=0)
    )
    print(json.dumps(out))


def fit_vae_stopped(strategy, x, optimizer):
    """The model of a run that stopped at a non-finite step, as the user holds it after the
    error.
    """
    keras.utils.set_random_seed(0)
    model = FlowVAE(
        latent_size=2, hidden_units=6, num_layers=2, data_size=x.shape[1], seed=3, dtype="float64"
    )
    model.compile(optimizer=optimizer())
    try:
        model.fit(x, batch_size=20, epochs=1, shuffle=False, verbose=0)
    except models.NonFiniteLossError:
        pass
    return model


if __name__ == "__main__":
    sys.exit(main())
