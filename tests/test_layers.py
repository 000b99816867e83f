"""Flow layers: weights, the bijector built from them, initialisation, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnf
from tfnf import layers


def built(layer_class, **kwargs):
    layer = layer_class(dtype="float64", **kwargs)
    layer.build((None, 3))
    return layer


@pytest.mark.parametrize("layer_class", [layers.Planar, layers.Radial])
def test_weights_are_stacked_per_map_and_build_the_bijector(layer_class):
    layer = built(layer_class, num_layers=4)
    assert [tuple(w.shape) for w in layer.weights] == [(4, 3) if r else (4,) for r in layer.parameter_ranks.values()]
    z = np.random.default_rng(0).normal(size=(10, 3))
    expected = z
    for k in range(4):  # the K maps one after another, from the weights by hand
        expected = layer.bijector_class(*[w.numpy()[k] for w in layer.weights]).forward(expected).numpy()
    np.testing.assert_allclose(layer(z).numpy(), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("layer_class", [layers.Planar, layers.Radial])
def test_each_weight_draws_its_own_initial_values_reproducibly(layer_class):
    keras.utils.set_random_seed(1)
    first = [w.numpy() for w in built(layer_class, num_layers=3).weights]
    keras.utils.set_random_seed(1)
    again = [w.numpy() for w in built(layer_class, num_layers=3).weights]
    keras.utils.set_random_seed(2)
    other = [w.numpy() for w in built(layer_class, num_layers=3).weights]
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert not np.array_equal(first[0].ravel()[:3], first[1].ravel()[:3])  # u and w (z0 and a) differ
    assert not np.array_equal(first[1].ravel()[:3], first[2].ravel()[:3])


def test_planar_default_initializer_is_uniform_on_0_1():
    keras.utils.set_random_seed(0)
    u = built(layers.Planar, num_layers=2000).w.numpy().ravel()
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 3 * np.sqrt(1 / 12 / u.size)  # U(0, 1): mean 1/2, variance 1/12


def test_a_seeded_initializer_still_draws_different_weights():
    layer = built(layers.Planar, num_layers=5, initializer=keras.initializers.RandomNormal(seed=42))
    assert not np.array_equal(layer.u.numpy(), layer.w.numpy())


@pytest.mark.parametrize("layer_class", [layers.Planar, layers.Radial])
def test_config_round_trip(layer_class):
    layer = layer_class(num_layers=7, name="flow")
    clone = layer_class.from_config(layer.get_config())
    assert clone.num_layers == 7 and clone.get_config() == layer.get_config()


def test_bad_num_layers_is_named():
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        layers.Planar(num_layers=0)


def test_diagonal_normal_base_starts_at_standard_normal():
    base = layers.DiagonalNormal(dtype="float64")
    base.build((None, 2))
    q0 = base.distribution()
    np.testing.assert_allclose(q0.mean().numpy(), [0.0, 0.0])
    np.testing.assert_allclose(q0.stddev().numpy(), [1.0, 1.0], rtol=1e-9)


def test_get_flow_lists_the_flows():
    assert layers.get_flow("radial") is layers.Radial
    with pytest.raises(ValueError, match="known flows: nice, planar, radial"):
        layers.get_flow("maf")
    assert isinstance(tfnf.NormalizingFlow(event_size=2, num_layers=1, flow="radial").flow_layer, layers.Radial)


def test_planar_maps_start_as_the_identity():
    layer = built(layers.Planar, num_layers=4)
    z = np.random.default_rng(3).normal(size=(20, 3))
    np.testing.assert_allclose(layer(z).numpy(), z, rtol=0, atol=1e-14)
    assert not np.allclose(layer.u.numpy(), 0)  # raw u is not zero; u_hat is
    drawn = built(layers.Planar, num_layers=4, start_at_identity=False)
    assert np.abs(drawn(z).numpy() - z).max() > 0.1


def test_nice_is_volume_preserving_invertible_and_starts_as_the_identity():
    layer = built(layers.NICE, num_layers=3, hidden_units=8)
    bijector = layer.bijector()
    z = np.random.default_rng(4).normal(size=(50, 3))
    y = bijector.forward(z).numpy()
    np.testing.assert_allclose(y, z[:, ::-1] if layer.num_layers % 2 else z, atol=1e-14)  # zero shifts, reversals
    for network in layer.shift_networks:  # move off the identity
        network.layers[-1].kernel.assign(np.random.default_rng(5).normal(size=network.layers[-1].kernel.shape))
    bijector = layer.bijector()
    x = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bijector.forward(x)
    assert np.abs(tf.linalg.slogdet(tape.batch_jacobian(y, x))[1].numpy()).max() < 1e-12  # additive: det 1
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(z, event_ndims=1).numpy(), 0.0)
    np.testing.assert_allclose(bijector.inverse(tf.constant(y.numpy())).numpy(), z, atol=1e-12)
