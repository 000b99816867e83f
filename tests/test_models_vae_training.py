"""Training FlowVAE at scale: two replicas under MirroredStrategy, and a run killed mid-epoch
resumed exactly.

The strategy runs happen in a fresh interpreter (tests/mirrored_strategy_check.py):
two logical CPU devices can only be configured before TensorFlow initialises
its devices. Each run is compared with the same run on one device.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnf import datasets
from tfnf.models import FlowVAE

# One worker runs this module, so the module fixture's subprocess runs once (pytest-xdist).
pytestmark = pytest.mark.xdist_group("strategies")

HELPER = pathlib.Path(__file__).with_name("mirrored_strategy_check.py")
MULTI_WORKER = pathlib.Path(__file__).with_name("multi_worker_check.py")
EXACT = 1e-12  # float64: the replicas sum the same numbers in another order


@pytest.fixture(scope="module")
def mirrored():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(HELPER)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- MirroredStrategy -------------------------------------------------------


def test_two_replicas_train_as_one_device(mirrored):
    one, two = mirrored["one_device"], mirrored["mirrored"]
    assert mirrored["replicas"] == 2
    assert (
        two["iterations"] == one["iterations"] == 4
    )  # 65 images in batches of 20; the last, 5, split 3 + 2
    assert one["moved"] > 0.05  # the weights moved far more than the tolerance below
    assert two["weights_vs_one_device"] < EXACT
    assert two["nll_vs_one_device"] < EXACT  # a model trained under the strategy evaluates as usual
    assert (
        two["jit_compile"] is False
    )  # "auto": XLA cannot compile an update applied across replicas


def test_evaluate_under_the_strategy_averages_over_images_as_one_device(mirrored):
    # The last batch of 5 splits 3 + 2: per-batch means would differ by about 1e-2 here.
    assert mirrored["mirrored"]["evaluate_keys"] == ["elbo", "kl", "loss", "reconstruction"]
    assert (
        mirrored["mirrored"]["evaluate_vs_one_device"] < 1e-4
    )  # the metrics accumulate in float32


def test_each_replica_draws_its_rows_of_one_devices_noise(mirrored):
    with_rows, without = mirrored["draws_with_rows"], mirrored["draws_without_rows"]
    assert with_rows["replica0_vs_one_device"] == 0 and with_rows["replica1_vs_one_device"] == 0
    # Without `rows` both replicas use the seed (seed, step) for their half batch: replica 1
    # repeats replica 0's noise instead of drawing the second half of one device's, and training
    # no longer matches one device.
    assert without["replica1_vs_replica0"] < EXACT and without["replica1_vs_one_device"] > 0.1
    assert mirrored["without_rows_vs_one_device"] > 1e-3


def test_a_non_finite_step_on_one_replica_stops_both_with_the_last_good_weights(mirrored):
    assert mirrored["non_finite_error"].startswith(
        "NonFiniteLossError: Non-finite loss, gradient or learning rate at training step 3"
    )
    assert mirrored["non_finite_weights_vs_two_steps"] < EXACT


def test_normalizing_flow_on_two_replicas_trains_as_one_device(mirrored):
    assert mirrored["flow_one_device"]["moved"] > 1e-2
    assert mirrored["flow_mirrored"]["weights_vs_one_device"] < EXACT
    assert (
        "batch_size (63) must be a multiple of the strategy's 2 replicas"
        in mirrored["flow_odd_batch_error"]
    )


def test_two_workers_train_as_one_device():
    # Two interpreters with their own TF_CONFIG, talking over 127.0.0.1, as two hosts would.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(MULTI_WORKER)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["vae_moved"] > 0.05
    assert out["vae_vs_one_device"] < EXACT and out["vae_workers_agree"] == 0
    assert out["flow_vs_one_device"] < EXACT
    assert (
        out["vae_loss_vs_one_device"] < 1e-5 and out["flow_loss_vs_one_device"] < 1e-5
    )  # float32 metrics


# -- BackupAndRestore ---------------------------------------------------------


def epoch_shuffled(x: np.ndarray, batch_size: int, seed: int, step) -> tf.data.Dataset:
    """Batches of x whose order in epoch e is a stateless function of (seed, e), as resuming needs.

    e is read from `step`, the optimizer's update counter (which BackupAndRestore
    restores), as Keras starts each epoch's pass over the data. `shuffle(seed=...)`
    is not enough: its order for an epoch depends on how many epochs this process
    has iterated, and a resumed process starts counting at 0.
    """
    x = tf.constant(x)
    per_epoch = math.ceil(int(x.shape[0]) / batch_size)

    def one_epoch(_):
        epoch = tf.cast(tf.convert_to_tensor(step) // per_epoch, tf.int32)
        order = tf.argsort(
            tf.random.stateless_uniform([int(x.shape[0])], seed=tf.stack([seed, epoch]))
        )
        return tf.data.Dataset.from_tensor_slices(tf.gather(x, order)).batch(batch_size)

    return (
        tf.data.Dataset.range(1)
        .flat_map(one_epoch)
        .apply(tf.data.experimental.assert_cardinality(per_epoch))
    )


class Kill(keras.callbacks.Callback):
    """Raises at a given batch of a given epoch, as a preempted job would stop."""

    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("killed")


def small_vae():
    keras.utils.set_random_seed(0)
    model = FlowVAE(latent_size=2, hidden_units=8, num_layers=2, seed=3, dtype="float64")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    return model


def train(x, epochs, callbacks=(), shuffled=True):
    """A fresh model (as a restarted process builds it) fitted for `epochs` of batches of 20."""
    model = small_vae()
    data = epoch_shuffled(x, 20, seed=7, step=model.optimizer.iterations) if shuffled else x
    history = model.fit(
        data,
        batch_size=None if shuffled else 20,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )
    return model, history


def test_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, mnist_subset_path):
    x = datasets.load_binarized_mnist("train", mnist_subset_path)[:200].astype(
        "float64"
    )  # 10 batches an epoch
    first = [
        next(iter(epoch_shuffled(x, 20, 7, tf.constant(step)))).numpy() for step in (0, 10, 19)
    ]
    assert np.any(first[0] != first[1]) and np.array_equal(
        first[1], first[2]
    )  # reshuffled each epoch, and only then

    uninterrupted, _ = train(x, epochs=3)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq="epoch")
    with pytest.raises(RuntimeError, match="killed"):
        train(x, epochs=3, callbacks=[backup, Kill(epoch=1, batch=6)])  # after 17 of 30 updates
    resumed, history = train(
        x,
        epochs=3,
        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq="epoch")],
    )
    assert history.epoch == [1, 2]  # epoch 0 restored, epoch 1 redone from its start
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 30
    for a, b in zip(resumed.trainable_variables, uninterrupted.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not (tmp_path / "backup").exists()  # removed once the run completes


def test_batch_level_backup_restarts_the_interrupted_epoch_from_its_first_batch(
    tmp_path, mnist_subset_path
):
    # Keras 3 restores the weights saved after update 16 (epoch 1, batch 5) but restarts epoch 1 at
    # batch 0: 16 + 20 = 36 updates instead of 30. Hence save_freq="epoch" for an exact resume.
    x = datasets.load_binarized_mnist("train", mnist_subset_path)[:200].astype("float64")
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="killed"):
        train(
            x,
            epochs=3,
            shuffled=False,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup, save_freq=4),
                Kill(epoch=1, batch=6),
            ],
        )
    resumed, history = train(
        x,
        epochs=3,
        shuffled=False,
        callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=4)],
    )
    assert history.epoch == [1, 2] and int(resumed.optimizer.iterations) == 36
