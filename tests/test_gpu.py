"""On a GPU: the training step runs there, every op of it, under XLA, with the CPU's numbers.

Skipped where TensorFlow sees no GPU (CI is CPU-only); `benchmarks/gpu_check.sh`
runs these first on a GPU machine (`pytest -m gpu`).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnf

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not tf.config.list_logical_devices("GPU"),
        reason="no GPU visible to TensorFlow (CI is CPU-only; benchmarks/gpu_check.sh runs "
        "these on one)",
    ),
]


def flow_weights(device: str, flow: str = "planar", dtype: str = "float64", steps: int = 20):
    with tf.device(device):
        keras.utils.set_random_seed(0)
        model = tfnf.NormalizingFlow(2, 8, flow=flow, target_log_prob="U1", seed=0, dtype=dtype)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
        model.fit(steps=steps, batch_size=512, verbose=0)
    return model


@pytest.fixture
def strict_placement():
    """Every op placed where asked: one without a GPU kernel raises instead of moving to the CPU."""
    tf.config.set_soft_device_placement(False)
    yield
    tf.config.set_soft_device_placement(True)


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_every_op_of_the_flow_training_step_runs_on_the_gpu(strict_placement, flow):
    model = flow_weights("/GPU:0", flow=flow, dtype="float32")
    assert all("GPU" in v.device for v in model.variables), [v.device for v in model.variables]
    assert np.isfinite(model.history.history["loss"][-1])


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_xla_on_the_gpu_trains_to_the_cpus_weights_in_float64(flow):
    # Same stateless Philox draws under XLA on both devices; element-wise functions (tanh,
    # softplus, log) differ in the last bits, which 20 Adam steps leave below 1e-9.
    gpu = flow_weights("/GPU:0", flow=flow)
    cpu = flow_weights("/CPU:0", flow=flow)
    for a, b in zip(gpu.trainable_variables, cpu.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_the_dlgm_trains_on_the_gpu(mnist_subset_path):
    images = tfnf.datasets.load_binarized_mnist("train", mnist_subset_path).astype("float32")
    with tf.device("/GPU:0"):
        keras.utils.set_random_seed(0)
        model = tfnf.models.FlowVAE(num_layers=10, kl_warmup=100, seed=0)
        model.compile(optimizer=keras.optimizers.Adamax(5e-4))
        history = model.fit(images, batch_size=100, epochs=2, verbose=0)
    assert all("GPU" in v.device for v in model.trainable_variables)
    assert history.history["elbo"][1] > history.history["elbo"][0]
