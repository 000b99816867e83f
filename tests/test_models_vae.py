"""FlowVAE: the ELBO, importance-sampled -ln p(x), training, saving, bad input.

Each model quantity is checked against a recomputation that shares none of its
code (conftest): numpy forward passes of the encoder and decoder, per-example
`tfb.Chain`s of the bijectors built by hand, autodiff Jacobians and quadrature over z.
"""

import importlib
import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import (
    bernoulli_log_prob,
    decoder_logits,
    gaussian_log_prob,
    head_parameters,
    maxout,
    per_example_posterior,
    weights,
)
from scipy.special import logsumexp

import tfnf
from tfnf.models import FlowVAE, negative_log_likelihood

tfb, tfd = tfp.bijectors, tfp.distributions


# -- helpers ----------------------------------------------------------------


def vae(num_layers=2, flow="planar", seed=0, data_size=12, latent_size=2, hidden_units=6, **kwargs):
    keras.utils.set_random_seed(seed)
    model = FlowVAE(
        latent_size=latent_size,
        hidden_units=hidden_units,
        num_layers=num_layers,
        flow=flow,
        data_size=data_size,
        seed=seed,
        dtype=kwargs.pop("dtype", "float64"),
        **kwargs,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    return model


def randomise_posterior(model, seed=1, spread=0.5):
    rng = np.random.default_rng(seed)
    for weight in model.posterior_layer.weights:
        weight.assign(spread * rng.normal(size=weight.shape))


def terms_by_hand(model, params, x, z):
    """(ln q(z | x) by per-example chains, ln p(x | z) and ln p(z) in numpy), each [B]."""
    log_q = np.array(
        [
            per_example_posterior(model.posterior_layer, params, i).log_prob(z[i]).numpy()
            for i in range(len(x))
        ]
    )
    return log_q, bernoulli_log_prob(x, decoder_logits(model, z)), gaussian_log_prob(z, 0.0, 1.0)


def binary_images(n, size, seed=0, prototypes=2, flip=0.05):
    """Noisy copies of a few random binary prototypes: data with structure a VAE can learn."""
    rng = np.random.default_rng(seed)
    protos = rng.random((prototypes, size)) < 0.5
    x = protos[rng.integers(prototypes, size=n)] ^ (rng.random((n, size)) < flip)
    return x.astype("float32")


# -- FlowVAE ----------------------------------------------------------------


def test_reported_elbo_terms_equal_a_numpy_recomputation():
    model = vae(num_layers=2, hidden_layers=2, maxout_pieces=3, anneal=True, seed=5)
    randomise_posterior(model)
    x = binary_images(8, 12, seed=1)
    # numpy: encoder (two maxout layers) and heads
    h = x.astype(np.float64)
    for layer in model.encoder.layers:
        h = maxout(h, layer)
    params = head_parameters(model.posterior_layer, h)
    for name, value in model.posterior_parameters(x).items():
        np.testing.assert_allclose(
            value.numpy(), params[name], rtol=1e-10, atol=1e-12, err_msg=name
        )
    # the sample the first step draws, seed (seed, 0); its log q by per-example chains, the rest in
    # numpy
    z = model.posterior_layer.sample_and_log_prob(model.posterior_parameters(x), seed=[5, 0])[
        0
    ].numpy()
    log_q, log_px_z, log_pz = terms_by_hand(model, params, x, z)
    expected = {
        "elbo": np.mean(log_px_z + log_pz - log_q),
        "reconstruction": np.mean(log_px_z),
        "kl": np.mean(log_q - log_pz),
    }
    assert abs(expected["kl"]) > 0.1 and abs(expected["reconstruction"]) > 1.0

    evaluated = model.evaluate(x, batch_size=8, return_dict=True, verbose=0)  # beta = 1
    for name in ("elbo", "reconstruction", "kl"):
        assert evaluated[name] == pytest.approx(expected[name], rel=1e-6), (
            name
        )  # Keras metrics are float32
    assert evaluated["loss"] == pytest.approx(-expected["elbo"], rel=1e-6)

    model.reset_metrics()
    trained = model.train_on_batch(x, return_dict=True)  # step 0: beta_0 = 0.01 on ln p(x, z)
    assert trained["loss"] == pytest.approx(np.mean(log_q - 0.01 * (log_px_z + log_pz)), rel=1e-6)
    assert trained["elbo"] == pytest.approx(expected["elbo"], rel=1e-6)


def test_with_maps_at_the_identity_the_model_equals_the_diagonal_gaussian_dlgm():
    gaussian, flow = vae(num_layers=0, seed=3), vae(num_layers=3, seed=4)
    shared = {v.path: v for v in gaussian.weights}
    for v in flow.weights:
        if v.path in shared:
            v.assign(shared[v.path])
    assert len(flow.trainable_variables) == len(gaussian.trainable_variables) + 6  # u, w, b heads
    x = binary_images(10, 12, seed=2)
    terms_gaussian = gaussian.log_weight_terms(x, seed=[7, 8])
    terms_flow = flow.log_weight_terms(x, seed=[7, 8])
    for a, b in zip(terms_gaussian, terms_flow, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "num_layers, flow, options",
    [(0, "planar", None), (2, "planar", None), (3, "hamiltonian", {"step_size": 0.3})],
    ids=["gaussian", "planar", "hamiltonian"],
)
def test_importance_sampled_likelihood_matches_quadrature_over_z(num_layers, flow, options):
    # For the Hamiltonian flow the weights are those of the extended space (z, rho), whose
    # target p(x, z) N(rho; 0, M) integrates to the same p(x).
    model = vae(
        num_layers=num_layers,
        flow=flow,
        flow_options=options,
        latent_size=1,
        data_size=6,
        hidden_units=4,
        maxout_pieces=2,
        seed=6,
    )
    rng = np.random.default_rng(3)
    for weight in model.decoder.weights:  # a decoder with a say, so the posterior is not the prior
        weight.assign(rng.normal(size=weight.shape))
    x = (np.random.default_rng(4).random((4, 6)) < 0.5).astype("float32")
    dz = 1e-3
    grid = np.arange(-12.0, 12.0 + dz / 2, dz)[:, None]  # p(x) = integral of p(x | z) N(z; 0, 1) dz
    log_joint = bernoulli_log_prob(
        x[:, None, :], decoder_logits(model, grid)[None]
    ) + gaussian_log_prob(grid, 0, 1)
    log_px = logsumexp(log_joint, axis=1) + math.log(dz)
    posterior = np.exp(log_joint - log_px[:, None]) * dz
    mean = posterior @ grid[:, 0]
    sd = np.sqrt(posterior @ grid[:, 0] ** 2 - mean**2)
    # A proposal near each posterior, 1.5 times wider so the weights have a finite variance: the
    # base heads solved for loc = mean and scale = 1.5 sd at these 4 images; the maps a little off
    # the identity.
    h = x.astype(np.float64)
    for layer in model.encoder.layers:
        h = maxout(h, layer)
    features = np.c_[h, np.ones(len(h))]
    q = model.posterior_layer
    for head, target in ((q.loc_head, mean), (q.scale_head, np.log(np.expm1(1.5 * sd)))):
        solution = np.linalg.lstsq(features, target[:, None], rcond=None)[0]
        head.kernel.assign(solution[:-1])
        head.bias.assign(solution[-1])
    for head in q.flow_heads.values():
        for weight in head.weights:
            weight.assign(0.2 * rng.normal(size=weight.shape))

    # 3 + 1 images; 6 chunks of 3334 samples, trimmed to 20,000
    estimate = negative_log_likelihood(
        model,
        x,
        num_samples=20_000,
        batch_size=3,
        samples_per_chunk=3500,
        seed=1,
        jit_compile=False,
    )
    np.testing.assert_allclose(
        estimate.per_image, -log_px, rtol=0, atol=0.05
    )  # about 4 standard errors
    assert estimate.mean == pytest.approx(-log_px.mean(), abs=0.03)
    assert estimate.standard_error == pytest.approx(
        np.std(estimate.per_image, ddof=1) / 2.0, rel=1e-12
    )
    elbo = model.evaluate(np.tile(x, (500, 1)), batch_size=2000, return_dict=True, verbose=0)[
        "elbo"
    ]
    assert (
        -elbo > -log_px.mean() + 0.1
    )  # the ELBO of this q is looser by far than the estimate's error


def test_fit_on_mnist_lowers_the_negative_elbo_and_the_likelihood_estimate(mnist_subset_path):
    keras.utils.set_random_seed(0)
    model = FlowVAE(
        latent_size=2, hidden_units=16, num_layers=2, seed=0
    )  # 784 pixels, XLA: the defaults
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    dataset = (
        tfnf.datasets.binarized_mnist("train", mnist_subset_path).take(256).batch(32)
    )  # batch unknown when traced
    x_test = tfnf.datasets.load_binarized_mnist("test", mnist_subset_path)[:100]
    before = model.evaluate(x_test, batch_size=100, return_dict=True, verbose=0)
    history = model.fit(dataset, epochs=8, verbose=0).history
    after = model.evaluate(x_test, batch_size=100, return_dict=True, verbose=0)
    nll = negative_log_likelihood(model, x_test, num_samples=20, batch_size=100)
    assert sorted(history) == ["elbo", "kl", "loss", "reconstruction"]
    assert int(model.optimizer.iterations) == 64
    assert history["loss"][-1] < history["loss"][0] - 50.0
    assert (
        before["loss"] > 500.0 and after["loss"] < 300.0
    )  # from near 784 ln 2 = 543 nats per image
    assert after["elbo"] == pytest.approx(after["reconstruction"] - after["kl"], rel=1e-5)
    # E ln p_S(x) >= ELBO: the importance-sampled -ln p(x) is below -ELBO on the same images
    assert nll.mean < after["loss"] - 1.0


def test_save_and_load_give_the_same_elbo_on_fixed_seeds(tmp_path):
    model = vae(num_layers=2, flow="radial", anneal=True, scale="exp", seed=8)
    x = binary_images(64, 12, seed=6)
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, FlowVAE) and loaded.get_config() == model.get_config()
    for a, b in zip(weights(loaded), weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        loaded.log_weight_terms(x, seed=[1, 2]), model.log_weight_terms(x, seed=[1, 2]), strict=True
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.evaluate(x, batch_size=64, return_dict=True, verbose=0) == model.evaluate(
        x, batch_size=64, return_dict=True, verbose=0
    )
    loaded.fit(x, batch_size=16, epochs=1, verbose=0)  # and it trains on
    assert int(loaded.optimizer.iterations) == 8


class _Snapshots(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if math.isfinite(logs["loss"]):
            self.last_good = weights(self.model)


def test_non_finite_loss_stops_names_the_step_and_keeps_the_last_good_weights():
    model = vae(num_layers=2)
    x = binary_images(64, 12, seed=7)
    x[27, 3] = np.nan  # in batch 3 (0-based) of 8 images
    snapshots = _Snapshots()
    with pytest.raises(
        tfnf.NonFiniteLossError, match="training step 4: .* weights are those after step 3"
    ):
        model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[snapshots])
    assert int(model.optimizer.iterations) == 3
    for a, b in zip(weights(model), snapshots.last_good, strict=True):
        np.testing.assert_array_equal(a, b)


def test_kl_warm_up_weighs_only_the_kl_term_linearly():
    model = vae(num_layers=2, kl_warmup=4, seed=6)
    randomise_posterior(model)
    x = binary_images(8, 12, seed=2)
    params = head_parameters(
        model.posterior_layer, maxout(x.astype(np.float64), model.encoder.layers[0])
    )
    z = model.posterior_layer.sample_and_log_prob(model.posterior_parameters(x), seed=[6, 0])[
        0
    ].numpy()
    log_q, log_px_z, log_pz = terms_by_hand(model, params, x, z)
    trained = model.train_on_batch(x, return_dict=True)  # step 0: beta_0 = 1 / 4 on the KL only
    assert trained["loss"] == pytest.approx(np.mean(0.25 * (log_q - log_pz) - log_px_z), rel=1e-6)
    assert trained["elbo"] == pytest.approx(np.mean(log_px_z + log_pz - log_q), rel=1e-6)
    # beta_t = min(1, (t + 1) / W) at every step, and 1 without warm-up
    schedule = tfnf.models.kl_warmup_schedule(4)
    betas = [float(schedule(t)) for t in range(7)]
    np.testing.assert_allclose(betas, [min(1.0, (t + 1) / 4) for t in range(7)], rtol=1e-6)
    assert tfnf.models.kl_warmup_schedule(0) == 1.0
    assert FlowVAE.from_config(model.get_config()).kl_warmup == 4


def test_encoder_noise_perturbs_only_what_the_encoder_sees_in_training():
    model = vae(num_layers=2, encoder_noise=0.3, seed=4)
    randomise_posterior(model)
    x = binary_images(8, 12, seed=3)
    # the noise the first step draws: N(0, 0.3^2) from the fold-in of the step seed (4, 0)
    seed = tf.random.experimental.stateless_fold_in(tf.constant([4, 0]), 1)
    eps = tf.random.stateless_normal([8, 12], seed=seed, dtype="float64", alg="philox").numpy()
    noisy = x.astype(np.float64) + 0.3 * eps
    h = maxout(noisy, model.encoder.layers[0])
    params = head_parameters(model.posterior_layer, h)
    z = model.posterior_layer.sample_and_log_prob(
        {k: tf.constant(v) for k, v in params.items()}, seed=[4, 0]
    )[0].numpy()
    log_q, log_px_z, log_pz = terms_by_hand(model, params, x, z)  # decoding the clean images
    trained = model.train_on_batch(x, return_dict=True)
    assert trained["elbo"] == pytest.approx(np.mean(log_px_z + log_pz - log_q), rel=1e-9)
    clean = vae(num_layers=2, seed=4)
    randomise_posterior(clean)
    assert clean.train_on_batch(x, return_dict=True)["elbo"] != pytest.approx(trained["elbo"])
    assert FlowVAE.from_config(model.get_config()).encoder_noise == 0.3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"encoder_noise": -0.1}, ValueError, "encoder_noise must be >= 0, got -0.1"),
        ({"kl_warmup": -1}, ValueError, "kl_warmup must be an integer >= 0, got -1"),
        ({"kl_warmup": 5, "anneal": True}, ValueError, "anneal and kl_warmup are two schedules"),
        ({"latent_size": 0}, ValueError, "latent_size must be a positive integer, got 0"),
        ({"hidden_units": 2.5}, ValueError, "hidden_units must be a positive integer, got 2.5"),
        ({"num_layers": -1}, ValueError, "num_layers must be an integer >= 0, got -1"),
        ({"data_size": True}, ValueError, "data_size must be a positive integer, got True"),
        ({"maxout_pieces": 0}, ValueError, "maxout_pieces must be a positive integer, got 0"),
        (
            {"flow": "nice"},
            ValueError,
            "unknown flow 'nice'; amortised flows: planar, radial, sylvester, and hamiltonian",
        ),
        ({"dtype": "int32"}, TypeError, "dtype must be float32 or float64, got 'int32'"),
        (
            {"flow": "hamiltonian", "num_layers": 0},
            ValueError,
            "num_layers: the Hamiltonian flow needs at least one leapfrog step, got 0",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        FlowVAE(**{"latent_size": 2, "hidden_units": 4, "data_size": 8, **kwargs})


def test_bad_data_is_named():
    model = vae(num_layers=1)
    with pytest.raises(
        ValueError, match=r"data_size=12 pixels, shape \[B, 12\]; got shape \(10, 5\)"
    ):
        model.fit(np.zeros((10, 5), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"got shape \(None, 3\)"):
        model.evaluate(
            tf.data.Dataset.from_tensor_slices(np.zeros((4, 3), "float32")).batch(2), verbose=0
        )
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        negative_log_likelihood(model, np.zeros((2, 12)), num_samples=0)
    with pytest.raises(
        ValueError, match=r"images must be \[N, 12\] with N >= 1, got shape \(2, 13\)"
    ):
        negative_log_likelihood(model, np.zeros((2, 13)))


def test_the_dlgm_has_one_home_and_the_old_module_still_imports_with_a_warning():
    assert tfnf.FlowVAE is FlowVAE and tfnf.models.vae.FlowVAE is FlowVAE
    sys.modules.pop("tfnf.vae", None)
    with pytest.warns(DeprecationWarning, match="tfnf.vae is deprecated"):
        old = importlib.import_module("tfnf.vae")
    assert old.FlowVAE is FlowVAE and old.negative_log_likelihood is negative_log_likelihood
    with pytest.raises(AttributeError, match="has no attribute 'FlowVea'"):
        tfnf.models.FlowVea  # noqa: B018


@pytest.mark.parametrize(
    "options",
    [{"rank": 2, "variant": "orthogonal"}, {"variant": "householder"}, {"variant": "triangular"}],
)
def test_amortised_sylvester_posterior_is_its_per_example_chain_and_starts_diagonal(options):
    model = vae(num_layers=2, flow="sylvester", latent_size=3, flow_options=options, seed=9)
    x = binary_images(6, 12, seed=4)
    params = {k: v.numpy() for k, v in model.posterior_parameters(x).items()}
    base = tfd.MultivariateNormalDiag(params["loc"], params["scale"])
    z0 = base.sample(seed=[1, 2]).numpy()
    # R starts at zero: every map is the identity, q is the diagonal Gaussian
    np.testing.assert_allclose(
        model.posterior(x).log_prob(z0).numpy(), base.log_prob(z0).numpy(), atol=1e-12
    )
    randomise_posterior(model, seed=3, spread=0.4)
    params = {k: v.numpy() for k, v in model.posterior_parameters(x).items()}
    q = params["q"]
    np.testing.assert_allclose(
        np.swapaxes(q, -1, -2) @ q,
        np.broadcast_to(np.eye(q.shape[-1]), q.shape[:2] + (q.shape[-1],) * 2),
        atol=1e-10,
    )
    z, log_q = model.posterior_layer.sample_and_log_prob(
        {k: tf.constant(v) for k, v in params.items()}, seed=[5, 6]
    )
    for i in range(6):  # each image's q: its base through a tfb.Chain of its two maps
        maps = [
            tfnf.bijectors.Sylvester(
                q=params["q"][k, i],
                r=params["r"][k, i],
                r_tilde=params["r_tilde"][k, i],
                b=params["b"][k, i],
            )
            for k in range(2)
        ]
        chain = tfd.TransformedDistribution(
            tfd.MultivariateNormalDiag(params["loc"][i], params["scale"][i]), tfb.Chain(maps[::-1])
        )
        np.testing.assert_allclose(
            log_q.numpy()[i], chain.log_prob(tf.constant(z.numpy()[i])).numpy(), rtol=1e-9
        )
    assert model.train_on_batch(x, return_dict=True)["loss"] > 0
    assert FlowVAE.from_config(model.get_config()).flow_options == options


def test_importance_weighted_training_minimises_minus_the_iwae_bound():
    from scipy.special import logsumexp as scipy_logsumexp

    model = vae(num_layers=2, importance_samples=5, seed=10)
    randomise_posterior(model)
    x = binary_images(8, 12, seed=5)
    # the terms of the first step's five draws per image, seed (10, 0)
    log_px_z, log_pz, log_q = (t.numpy() for t in model.log_weight_terms(x, [10, 0], (5,)))
    log_w = log_px_z + log_pz - log_q  # [5, 8]
    trained = model.train_on_batch(x, return_dict=True)
    iwae = scipy_logsumexp(log_w, axis=0) - np.log(5)
    assert trained["loss"] == pytest.approx(-np.mean(iwae), rel=1e-6)  # float32 metrics
    assert trained["elbo"] == pytest.approx(np.mean(log_w), rel=1e-6)
    assert -trained["loss"] > trained["elbo"]  # the bound is tighter than the ELBO
    assert FlowVAE.from_config(model.get_config()).importance_samples == 5
    with pytest.raises(ValueError, match="no KL term to warm up or anneal"):
        FlowVAE(latent_size=2, hidden_units=4, data_size=8, importance_samples=5, kl_warmup=10)
