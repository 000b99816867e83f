"""Training FlowVAE at scale: two replicas under MirroredStrategy, and a run killed mid-epoch resumed exactly.

The strategy runs happen in a fresh interpreter (tests/mirrored_strategy_check.py):
two logical CPU devices can only be configured before TensorFlow initialises
its devices. The shipped FlowVAE and NormalizingFlow fail there; the helper also
runs the changes proposed for tfnf/models.py and tfnf/vae.py (its
`Recommended*` classes), and the tests marked xfail(strict) turn into failures,
to be unmarked, once the library carries them.
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
from tfnf.vae import FlowVAE

HELPER = pathlib.Path(__file__).with_name("mirrored_strategy_check.py")
EXACT = 1e-12  # float64: the replicas sum the same numbers in another order


@pytest.fixture(scope="module")
def mirrored():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(HELPER)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- MirroredStrategy -------------------------------------------------------

def test_two_replicas_train_as_one_device_with_the_proposed_changes(mirrored):
    one, two = mirrored["one_device"], mirrored["mirrored"]
    assert mirrored["replicas"] == 2
    assert two["iterations"] == one["iterations"] == 4  # 65 images in batches of 20; the last, 5, split 3 + 2
    assert one["moved"] > 0.05  # the weights moved far more than the tolerance below
    assert two["weights_vs_one_device"] < EXACT
    assert two["nll_vs_one_device"] < EXACT  # a model trained under the strategy evaluates as usual
    assert two["jit_compile"] is False  # XLA cannot compile a step spanning two devices


def test_each_proposed_change_to_flow_vae_is_needed(mirrored):
    fixed, shipped = mirrored["fixed_draws"], mirrored["shipped_draws"]
    # Drawing the global batch's noise and keeping this replica's rows: each replica draws what one device does.
    assert fixed["replica0_vs_one_device"] == 0 and fixed["replica1_vs_one_device"] == 0
    # The shipped draw: both replicas use the seed (seed, step) for their half batch, so replica 1 repeats
    # replica 0's noise instead of drawing the second half of one device's.
    assert shipped["replica1_vs_replica0"] < EXACT and shipped["replica1_vs_one_device"] > 0.1
    # Undo either change and two replicas no longer train as one device.
    assert mirrored["without_fix_noise_vs_one_device"] > 1e-3
    assert mirrored["without_fix_scale_vs_one_device"] > 1e-3  # gradients summed over replicas, not averaged


def test_normalizing_flow_on_two_replicas_trains_as_one_device_with_the_proposed_changes(mirrored):
    assert mirrored["flow_one_device"]["moved"] > 1e-2
    assert mirrored["flow_mirrored"]["weights_vs_one_device"] < EXACT


@pytest.mark.xfail(strict=True, reason="tfnf/models.py GuardedTraining._apply_if_finite: optimizer.apply (a "
                                       "merge_call) inside tf.cond in replica context; see mirrored_strategy_check.py")
def test_shipped_flow_vae_trains_under_mirrored_strategy(mirrored):
    assert mirrored["shipped_vae_error"] is None


@pytest.mark.xfail(strict=True, reason="tfnf/vae.py: every replica draws with the seed (seed, step) for its own "
                                       "half batch, so replica 1 repeats replica 0's noise")
def test_shipped_replicas_draw_what_one_device_draws(mirrored):
    assert mirrored["shipped_draws"]["replica1_vs_one_device"] < EXACT


@pytest.mark.xfail(strict=True, reason="tfnf/models.py NormalizingFlow.fit feeds scalar dummy elements, which a "
                                       "strategy cannot split; then the GuardedTraining merge_call error")
def test_shipped_normalizing_flow_trains_under_mirrored_strategy(mirrored):
    assert mirrored["shipped_flow_error"] is None


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
        order = tf.argsort(tf.random.stateless_uniform([int(x.shape[0])], seed=tf.stack([seed, epoch])))
        return tf.data.Dataset.from_tensor_slices(tf.gather(x, order)).batch(batch_size)

    return tf.data.Dataset.range(1).flat_map(one_epoch).apply(tf.data.experimental.assert_cardinality(per_epoch))


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
    history = model.fit(data, batch_size=None if shuffled else 20, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=list(callbacks))
    return model, history


def test_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, mnist_subset_path):
    x = datasets.load_binarized_mnist("train", mnist_subset_path)[:200].astype("float64")  # 10 batches an epoch
    first = [next(iter(epoch_shuffled(x, 20, 7, tf.constant(step)))).numpy() for step in (0, 10, 19)]
    assert np.any(first[0] != first[1]) and np.array_equal(first[1], first[2])  # reshuffled each epoch, and only then

    uninterrupted, _ = train(x, epochs=3)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq="epoch")
    with pytest.raises(RuntimeError, match="killed"):
        train(x, epochs=3, callbacks=[backup, Kill(epoch=1, batch=6)])  # after 17 of 30 updates
    resumed, history = train(x, epochs=3, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"),
                                                                                      save_freq="epoch")])
    assert history.epoch == [1, 2]  # epoch 0 restored, epoch 1 redone from its start
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 30
    for a, b in zip(resumed.trainable_variables, uninterrupted.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not (tmp_path / "backup").exists()  # removed once the run completes


def test_batch_level_backup_restarts_the_interrupted_epoch_from_its_first_batch(tmp_path, mnist_subset_path):
    # Keras 3 restores the weights saved after update 16 (epoch 1, batch 5) but restarts epoch 1 at batch 0:
    # 16 + 20 = 36 updates instead of 30. Hence save_freq="epoch" for an exact resume.
    x = datasets.load_binarized_mnist("train", mnist_subset_path)[:200].astype("float64")
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="killed"):
        train(x, epochs=3, shuffled=False, callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=4),
                                                      Kill(epoch=1, batch=6)])
    resumed, history = train(x, epochs=3, shuffled=False,
                             callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=4)])
    assert history.epoch == [1, 2] and int(resumed.optimizer.iterations) == 36
