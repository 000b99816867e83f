"""Layers: the flow layers (weights, the bijector built from them, initialisation, config),
the bases, and AmortizedFlow (per-example maps from encoder features).

AmortizedFlow's quantities are checked against recomputations that share none of
its code: numpy forward passes of its heads, per-example `tfb.Chain`s of the
bijectors built by hand, and autodiff Jacobians.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import MAP_FLOWS, gaussian_log_prob, head_parameters, per_example_posterior

import tfnf
from tfnf import layers
from tfnf.layers import AmortizedFlow

tfb, tfd = tfp.bijectors, tfp.distributions
AMORTIZED = sorted(AmortizedFlow.families)


def built(layer_class, **kwargs):
    layer = layer_class(dtype="float64", **kwargs)
    layer.build((None, 3))
    return layer


@pytest.mark.parametrize("layer_class", [layers.FLOWS[name] for name in MAP_FLOWS], ids=MAP_FLOWS)
def test_weights_are_stacked_per_map_and_build_the_bijector(layer_class):
    layer = built(layer_class, num_layers=4)
    assert [tuple(w.shape) for w in layer.weights] == [
        (4, 3) if r else (4,) for r in layer.parameter_ranks.values()
    ]
    z = np.random.default_rng(0).normal(size=(10, 3))
    expected = z
    for k in range(4):  # the K maps one after another, from the weights by hand
        expected = (
            layer.bijector_class(*[w.numpy()[k] for w in layer.weights]).forward(expected).numpy()
        )
    np.testing.assert_allclose(layer(z).numpy(), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("layer_class", [layers.FLOWS[name] for name in MAP_FLOWS], ids=MAP_FLOWS)
def test_each_weight_draws_its_own_initial_values_reproducibly(layer_class):
    keras.utils.set_random_seed(1)
    first = [w.numpy() for w in built(layer_class, num_layers=3).weights]
    keras.utils.set_random_seed(1)
    again = [w.numpy() for w in built(layer_class, num_layers=3).weights]
    keras.utils.set_random_seed(2)
    other = [w.numpy() for w in built(layer_class, num_layers=3).weights]
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert not np.array_equal(
        first[0].ravel()[:3], first[1].ravel()[:3]
    )  # u and w (z0 and a) differ
    assert not np.array_equal(first[1].ravel()[:3], first[2].ravel()[:3])


def test_planar_default_initializer_is_uniform_on_0_1():
    keras.utils.set_random_seed(0)
    u = built(layers.PlanarStack, num_layers=2000).w.numpy().ravel()
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 3 * np.sqrt(1 / 12 / u.size)  # U(0, 1): mean 1/2, variance 1/12


def test_a_seeded_initializer_still_draws_different_weights():
    layer = built(
        layers.PlanarStack, num_layers=5, initializer=keras.initializers.RandomNormal(seed=42)
    )
    assert not np.array_equal(layer.u.numpy(), layer.w.numpy())


@pytest.mark.parametrize("layer_class", [layers.FLOWS[name] for name in MAP_FLOWS], ids=MAP_FLOWS)
def test_config_round_trip(layer_class):
    layer = layer_class(num_layers=7, name="flow")
    clone = layer_class.from_config(layer.get_config())
    assert clone.num_layers == 7 and clone.get_config() == layer.get_config()


def test_bad_num_layers_is_named():
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        layers.PlanarStack(num_layers=0)


def test_diagonal_normal_base_starts_at_standard_normal():
    base = layers.DiagonalNormal(dtype="float64")
    base.build((None, 2))
    q0 = base.distribution()
    np.testing.assert_allclose(q0.mean().numpy(), [0.0, 0.0])
    np.testing.assert_allclose(q0.stddev().numpy(), [1.0, 1.0], rtol=1e-9)


def test_get_flow_lists_the_flows():
    assert layers.get_flow("radial") is layers.RadialStack
    with pytest.raises(
        ValueError, match="known flows: hamiltonian, nice, planar, radial, sylvester"
    ):
        layers.get_flow("maf")
    assert isinstance(
        tfnf.NormalizingFlow(event_size=2, num_layers=1, flow="radial").flow_layer,
        layers.RadialStack,
    )


def test_planar_maps_start_as_the_identity():
    layer = built(layers.PlanarStack, num_layers=4)
    z = np.random.default_rng(3).normal(size=(20, 3))
    np.testing.assert_allclose(layer(z).numpy(), z, rtol=0, atol=1e-14)
    assert not np.allclose(layer.u.numpy(), 0)  # raw u is not zero; u_hat is
    drawn = built(layers.PlanarStack, num_layers=4, start_at_identity=False)
    assert np.abs(drawn(z).numpy() - z).max() > 0.1


def test_nice_is_volume_preserving_invertible_and_starts_as_the_identity():
    layer = built(layers.NICEStack, num_layers=3, hidden_units=8)
    bijector = layer.bijector()
    z = np.random.default_rng(4).normal(size=(50, 3))
    y = bijector.forward(z).numpy()
    np.testing.assert_allclose(
        y, z[:, ::-1] if layer.num_layers % 2 else z, atol=1e-14
    )  # zero shifts, reversals
    for network in layer.shift_networks:  # move off the identity
        network.layers[-1].kernel.assign(
            np.random.default_rng(5).normal(size=network.layers[-1].kernel.shape)
        )
    bijector = layer.bijector()
    x = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bijector.forward(x)
    assert (
        np.abs(tf.linalg.slogdet(tape.batch_jacobian(y, x))[1].numpy()).max() < 1e-12
    )  # additive: det 1
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(z, event_ndims=1).numpy(), 0.0)
    np.testing.assert_allclose(bijector.inverse(tf.constant(y.numpy())).numpy(), z, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"variant": "orthogonal", "rank": 2},
        {"variant": "householder", "reflections": 3},
        {"variant": "triangular"},
    ],
)
def test_sylvester_variants_start_as_the_identity_and_keep_q_orthonormal(options):
    layer = built(layers.SylvesterStack, num_layers=3, **options)
    z = np.random.default_rng(6).normal(size=(20, 3))
    np.testing.assert_allclose(layer(z).numpy(), z, rtol=0, atol=1e-14)  # R = 0
    q = layer.q().numpy()
    assert q.shape == (3, 3, options.get("rank", 3))
    np.testing.assert_allclose(
        np.swapaxes(q, -1, -2) @ q,
        np.broadcast_to(np.eye(q.shape[-1]), (3,) * 1 + (q.shape[-1],) * 2),
        atol=1e-12,
    )
    layer.r.assign(np.random.default_rng(7).normal(size=layer.r.shape))  # off the identity
    bijector = layer.bijector()
    y = bijector.forward(z)
    # the K maps' log-det against the autodiff Jacobian of their composition
    x = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = bijector.forward(x)
    np.testing.assert_allclose(
        bijector.forward_log_det_jacobian(z, event_ndims=1).numpy(),
        tf.linalg.slogdet(tape.batch_jacobian(out, x))[1].numpy(),
        atol=1e-10,
    )
    np.testing.assert_allclose(bijector.inverse(tf.constant(y.numpy())).numpy(), z, atol=1e-10)
    again = layers.SylvesterStack.from_config(layer.get_config())
    assert (again.variant, again.rank, again.reflections) == (
        options["variant"],
        options.get("rank"),
        options.get("reflections"),
    )


def test_sylvester_bad_options_are_named():
    with pytest.raises(ValueError, match="variant must be one of orthogonal, householder"):
        layers.SylvesterStack(2, variant="givens")
    with pytest.raises(ValueError, match="rank must be <= D = 3"):
        built(layers.SylvesterStack, num_layers=2, rank=4)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        layers.SylvesterStack(2, rank=0)


def test_old_layer_names_load_as_the_new_classes():
    assert layers.Planar is layers.PlanarStack and layers.Radial is layers.RadialStack
    for old, new in (
        ("Planar", layers.PlanarStack),
        ("Radial", layers.RadialStack),
        ("NICE", layers.NICEStack),
    ):
        config = {
            "module": "tfnf.layers",
            "class_name": old,
            "registered_name": f"tfnf>{old}",
            "config": {"num_layers": 2, "name": "flow"},
        }  # as a file saved by tfnf 0.1 holds it
        assert type(keras.saving.deserialize_keras_object(config)) is new


def amortized(
    flow, num_layers=3, event_size=3, features=5, scale="softplus", seed=0, spread=0.5, **options
):
    """A float64 AmortizedFlow whose heads are all drawn at random, so no map is the identity."""
    layer = AmortizedFlow(
        event_size, num_layers, flow=flow, scale=scale, dtype="float64", **options
    )
    layer.build((None, features))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(spread * rng.normal(size=weight.shape))
    return layer


# -- AmortizedFlow ----------------------------------------------------------


@pytest.mark.parametrize("head_units", [None, 2])
@pytest.mark.parametrize("flow", AMORTIZED)
def test_amortized_flow_is_a_per_example_chain_of_the_slices(flow, head_units):
    layer = amortized(flow, head_units=head_units)
    h = np.random.default_rng(1).normal(size=(6, 5))
    params = {k: v.numpy() for k, v in layer(h).items()}
    expected = head_parameters(layer, h)
    assert params.keys() == expected.keys()
    for name in params:  # map k of example i in block k of the head's output
        np.testing.assert_allclose(
            params[name], expected[name], rtol=1e-12, atol=1e-12, err_msg=name
        )

    q = layer.distribution(h)
    assert q.batch_shape == [6] and q.event_shape == [3]
    for z, log_q in (
        q.experimental_sample_and_log_prob(7, seed=[3, 4]),  # forward sweeps: [7, 6, 3], [7, 6]
        layer.sample_and_log_prob(layer(h), seed=[3, 4], sample_shape=(7,)),
    ):
        z = tf.constant(
            z.numpy()
        )  # a new tensor, so log_prob goes through the inverse, not TFP's cache
        log_prob = q.log_prob(z).numpy()
        for i in range(6):
            by_chain = per_example_posterior(layer, params, i).log_prob(z[:, i]).numpy()
            np.testing.assert_allclose(log_prob[:, i], by_chain, rtol=0, atol=1e-9)
            np.testing.assert_allclose(log_q.numpy()[:, i], by_chain, rtol=0, atol=1e-9)


def test_sample_and_log_prob_draws_the_base_then_the_maps():
    layer = amortized("planar", seed=12)
    h = np.random.default_rng(13).normal(size=(6, 5))
    params = layer(h)
    z, _ = layer.sample_and_log_prob(params, seed=[1, 2], sample_shape=(2000,))
    eps = (layer.bijector_from(params).inverse(z) - params["loc"]) / params[
        "scale"
    ]  # back to the base noise
    eps = eps.numpy().reshape(-1)
    assert abs(eps.mean()) < 4 / math.sqrt(eps.size) and abs(eps.var() - 1) < 4 * math.sqrt(
        2 / eps.size
    )


@pytest.mark.parametrize("flow", AMORTIZED)
def test_amortized_log_density_matches_the_autodiff_jacobian(flow):
    layer = amortized(flow, seed=2)
    h = np.random.default_rng(3).normal(size=(6, 5))
    params = layer(h)
    z0 = tf.constant(np.random.default_rng(4).normal(size=(6, 3)))
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z = layer.bijector_from(params).forward(z0)
    log_det = tf.linalg.slogdet(tape.batch_jacobian(z, z0))[1].numpy()
    assert np.abs(log_det).max() > 0.1  # the maps are far from volume preserving
    expected = (
        gaussian_log_prob(z0.numpy(), params["loc"].numpy(), params["scale"].numpy()) - log_det
    )
    q = layer.distribution_from(params)
    np.testing.assert_allclose(
        q.log_prob(tf.constant(z.numpy())).numpy(), expected, rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(
        q.bijector.inverse(tf.constant(z.numpy())).numpy(), z0.numpy(), atol=1e-9
    )


@pytest.mark.parametrize("scale", ["softplus", "exp"])
def test_no_maps_is_the_diagonal_gaussian(scale):
    layer = amortized("planar", num_layers=0, scale=scale)
    assert [w.path.split("/")[1] for w in layer.weights] == ["loc", "loc", "scale", "scale"]
    h = np.random.default_rng(5).normal(size=(4, 5))
    params = head_parameters(layer, h)
    z = np.random.default_rng(6).normal(size=(9, 4, 3))
    np.testing.assert_allclose(
        layer.distribution(h).log_prob(z).numpy(),
        gaussian_log_prob(z, params["loc"], params["scale"]),
        rtol=1e-12,
    )


@pytest.mark.parametrize("head_units", [None, 2])
@pytest.mark.parametrize("flow", AMORTIZED)
def test_every_map_starts_as_the_identity_and_can_leave_it(flow, head_units):
    keras.utils.set_random_seed(0)
    layer = AmortizedFlow(3, 4, flow=flow, dtype="float64", head_units=head_units)
    layer.build((None, 5))
    h = np.random.default_rng(7).normal(size=(6, 5))
    params = head_parameters(layer, h)
    z0 = np.random.default_rng(8).normal(size=(6, 3))
    np.testing.assert_allclose(
        layer.bijector_from(layer(h)).forward(z0).numpy(), z0, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        layer.distribution(h).log_prob(z0).numpy(),
        gaussian_log_prob(z0, params["loc"], params["scale"]),
        rtol=0,
        atol=1e-12,
    )
    assert (
        np.ptp(params[{"radial": "z0", "planar": "w", "sylvester": "r_tilde"}[flow]], axis=1).min()
        > 0
    )  # parameters differ per example

    def gradients():
        with tf.GradientTape() as tape:
            z = layer.bijector_from(layer(h)).forward(z0)
            loss = tf.reduce_sum(z * np.random.default_rng(9).normal(size=z0.shape))
        return dict(
            zip((w.path for w in layer.weights), tape.gradient(loss, layer.weights), strict=True)
        )

    zero_head = {"planar": "u", "radial": "b", "sylvester": "r"}[flow]
    assert (
        np.abs(gradients()[f"{layer.name}/{zero_head}/kernel"].numpy()).max() > 1e-3
    )  # not a stationary point
    if (
        flow == "planar"
    ):  # with every flow head at zero instead, the maps would sit on a saddle and never move
        for head in layer.flow_heads.values():
            for weight in head.weights:
                weight.assign(tf.zeros_like(weight))
        flow_gradients = [
            g.numpy() for path, g in gradients().items() if path.split("/")[1] in layer.flow_heads
        ]
        assert len(flow_gradients) == 6 and all(np.all(g == 0) for g in flow_gradients)


def test_every_head_receives_a_gradient_off_the_identity():
    layer = amortized("planar", seed=10)
    h = np.random.default_rng(11).normal(size=(6, 5))
    with tf.GradientTape() as tape:
        z, log_q = layer.distribution(h).experimental_sample_and_log_prob(seed=[1, 2])
        loss = tf.reduce_mean(log_q + 0.5 * tf.reduce_sum(z**2, -1))
    for weight, grad in zip(layer.weights, tape.gradient(loss, layer.weights), strict=True):
        assert grad is not None and np.abs(grad.numpy()).min() > 0, weight.path


def test_planar_w_head_starts_at_a_fifth_of_glorots_variance():
    # VarianceScaling(0.2, fan_avg, uniform): U(-l, l) with l^2 = 3 * 0.2 * 2 / (fan_in + fan_out),
    # variance l^2 / 3.
    keras.utils.set_random_seed(0)
    layer = AmortizedFlow(40, 10, flow="planar", dtype="float64")
    layer.build((None, 400))
    kernel = layer.flow_heads["w"].kernel.numpy()
    assert kernel.shape == (400, 400)
    variance = 0.2 * 2 / (400 + 400)
    assert (
        abs(kernel.var() - variance) < 0.02 * variance
    )  # 160,000 draws: the sampling error is 0.4%
    assert np.abs(kernel).max() <= np.sqrt(3 * variance)
    glorot = layer.flow_heads[
        "b"
    ].kernel.numpy()  # the other heads keep Glorot's, five times the variance
    assert (
        abs(glorot.var() * (400 + 10) / (kernel.var() * (400 + 400)) - 5) < 0.3
    )  # 4,000 draws: 2% error


def test_a_head_bottleneck_costs_what_it_says():
    # K = 80 planar maps at D = 40 from H = 400 features: 80 * 81 outputs per example. Through
    # R = 64 shared units the flow heads hold H R + R K F weights (plus biases) instead of H K F.
    full = AmortizedFlow(40, 80, flow="planar")
    full.build((None, 400))
    cheap = AmortizedFlow(40, 80, flow="planar", head_units=64)
    cheap.build((None, 400))

    def flow_weights(layer):
        return sum(
            w.numpy().size for w in layer.weights if w.path.split("/")[1] not in ("loc", "scale")
        )

    assert flow_weights(full) == 400 * 80 * 81 + 80 * 81
    assert flow_weights(cheap) == 400 * 64 + 64 + 64 * 80 * 81 + 80 * 81
    assert flow_weights(full) / flow_weights(cheap) > 5.8
    # with no maps there is nothing to share: no bottleneck, the diagonal Gaussian's weights
    assert AmortizedFlow(40, 0, head_units=64).flow_features is None


def test_amortized_flow_config_round_trip_and_bad_arguments():
    layer = AmortizedFlow(event_size=4, num_layers=5, flow="radial", scale="exp", name="q")
    clone = AmortizedFlow.from_config(layer.get_config())
    assert (
        clone.get_config() == layer.get_config() and clone.num_layers == 5 and clone.scale == "exp"
    )
    shared = AmortizedFlow.from_config(AmortizedFlow(4, 5, head_units=3).get_config())
    assert shared.head_units == 3 and shared.flow_features.units == 3
    for kwargs, match in [
        ({"event_size": 0}, "event_size must be a positive integer, got 0"),
        ({"num_layers": -1}, "num_layers must be an integer >= 0, got -1"),
        ({"flow": "nice"}, "unknown flow 'nice'; amortised flows: planar, radial, sylvester"),
        ({"scale": "relu"}, "unknown scale 'relu'; choose one of: softplus, exp"),
        ({"head_units": 0}, "head_units must be a positive integer, got 0"),
        ({"head_units": 2.5}, "head_units must be a positive integer, got 2.5"),
    ]:
        with pytest.raises(ValueError, match=match):
            AmortizedFlow(**{"event_size": 2, "num_layers": 1, **kwargs})
    with pytest.raises(ValueError, match=r"features h must be \[B, H\], got shape \(2, 3, 4\)"):
        AmortizedFlow(2, 1).build((2, 3, 4))
