"""Flows as posteriors of TFP models: joint-distribution targets, tfp.vi surrogates, Bayesian
linear regression.
"""

import math

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfnf
from tfnf import diagnostics, targets

tfd = tfp.distributions
tfb = tfp.bijectors


def regression(dim=2, points=20, seed=0, dtype="float64"):
    x, y, _ = targets.correlated_regression_data(points, dim, correlation=0.95, seed=seed)
    return targets.BayesianLinearRegression(x.astype(dtype), y.astype(dtype))


# -- JointTarget ------------------------------------------------------------------


def structured_model(x, y):
    """Regression with a 2x2 weight matrix, a positive noise scale and a 3-vector offset: three
    named latents.
    """

    @tfd.JointDistributionCoroutineAutoBatched
    def model():
        weights = yield tfd.Normal(tf.zeros([2, 2], tf.float64), 1.0, name="weights")
        noise = yield tfd.HalfNormal(tf.constant(1.0, tf.float64), name="noise")
        offset = yield tfd.Normal(tf.zeros([3], tf.float64), 2.0, name="offset")
        mean = tf.reduce_sum(tf.linalg.matvec(weights, x), -1) + tf.reduce_sum(offset)
        yield tfd.Normal(mean, noise, name="y")

    return model.experimental_pin(y=y)


def flat_to_structure(z):
    """The change of variables written out by hand: HalfNormal's support is (0, inf), reached by
    softplus.
    """
    return {
        "weights": tf.reshape(z[..., :4], tf.concat([tf.shape(z)[:-1], [2, 2]], 0)),
        "noise": tf.math.softplus(z[..., 4]),
        "offset": z[..., 5:8],
    }


@pytest.fixture(scope="module")
def pinned():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(15, 2))
    return structured_model(x, rng.normal(size=15))


def test_joint_target_is_the_models_density_under_the_change_of_variables(pinned):
    target = targets.JointTarget(pinned)
    assert target.event_size == 4 + 1 + 3 and target.dtype == tf.float64
    z = tf.constant(np.random.default_rng(1).normal(size=(6, 8)))
    values = flat_to_structure(z)
    # The log-det of the map z -> (weights, noise, offset), by an autodiff Jacobian of the
    # hand-written map.
    log_det = []
    for row in tf.unstack(z):
        with tf.GradientTape() as tape:
            tape.watch(row)
            parts = flat_to_structure(row)
            flat = tf.concat(
                [tf.reshape(parts["weights"], [-1]), parts["noise"][None], parts["offset"]], 0
            )
        log_det.append(np.linalg.slogdet(tape.jacobian(flat, row).numpy())[1])
    expected = pinned.unnormalized_log_prob(**values).numpy() + np.array(log_det)
    np.testing.assert_allclose(target(z).numpy(), expected, rtol=1e-12, atol=1e-10)
    # The model's own structure and support come back from the bijector.
    structured = target.bijector.forward(z)
    assert structured._fields == ("weights", "noise", "offset")
    for name in ("weights", "noise", "offset"):
        np.testing.assert_allclose(
            getattr(structured, name).numpy(), values[name].numpy(), rtol=1e-14
        )


def test_a_flow_over_a_joint_target_gives_the_posterior_in_the_models_structure(pinned):
    target = targets.JointTarget(pinned)
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=target.event_size,
        num_layers=2,
        target_log_prob=target,
        dtype="float64",
        flow_options={"start_at_identity": False},
        seed=0,
    )  # maps away from the identity
    posterior = target.posterior(model.distribution)
    draws = posterior.sample(5, seed=1)
    assert (
        draws.weights.shape == (5, 2, 2)
        and draws.noise.shape == (5,)
        and draws.offset.shape == (5, 3)
    )
    assert np.all(draws.noise.numpy() > 0)
    # Its density is q's at the flat point, less the change of variables' log-det.
    z = target.bijector.inverse(draws)
    expected = model.distribution.log_prob(z) - target.bijector.forward_log_det_jacobian(
        z, event_ndims=1
    )
    np.testing.assert_allclose(posterior.log_prob(draws).numpy(), expected.numpy(), rtol=1e-10)


def test_joint_target_names_what_is_wrong():
    with pytest.raises(TypeError, match="model must be a TFP joint distribution"):
        targets.JointTarget(lambda z: z)


# -- tfp.vi surrogate ---------------------------------------------------------------


def test_surrogate_variables_are_the_keras_weights_and_tfp_vi_trains_the_model():
    problem = regression()
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=2, target_log_prob=problem, dtype="float64", seed=0
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    surrogate = model.surrogate_posterior()
    assert [id(v) for v in surrogate.trainable_variables] == [
        id(w.value) for w in model.trainable_weights
    ]
    exact = problem.posterior
    before = diagnostics.bound(model.distribution, exact.log_prob, 20_000, seed=1)[0]
    losses = tfp.vi.fit_surrogate_posterior(
        problem,
        surrogate,
        model.optimizer,
        num_steps=300,
        sample_size=256,
        seed=(2, 3),
        jit_compile=True,
    )
    after = diagnostics.bound(model.distribution, exact.log_prob, 20_000, seed=1)[0]
    assert int(model.optimizer.iterations) == 300  # TFP's loop stepped the model's own optimizer
    assert (
        before > 10 and after < 0.1
    )  # KL(q || exact posterior) of the Keras model fell from 44 nats
    # TFP's loss is the negative ELBO: KL - ln p(y), at its last step (256 draws: within a few
    # tenths).
    assert abs(float(losses[-1]) - (after - float(problem.log_evidence))) < 0.3
    z = tf.constant(np.random.default_rng(4).normal(size=(5, 2)))
    np.testing.assert_allclose(
        surrogate.log_prob(z).numpy(), model.distribution.log_prob(z).numpy(), rtol=1e-12
    )


def test_tfp_vi_importance_weighted_loss_runs_on_the_surrogate_and_is_the_iwae_bound():
    # fit_surrogate_posterior(importance_sample_size=k) with the surrogate: TFP's loss at a fixed
    # seed equals minus the IWAE bound recomputed from the surrogate's own draws.
    problem = regression()
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=2, target_log_prob=problem, dtype="float64", seed=0
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    surrogate = model.surrogate_posterior()
    losses = tfp.vi.fit_surrogate_posterior(
        problem,
        surrogate,
        model.optimizer,
        num_steps=50,
        sample_size=64,
        importance_sample_size=8,
        seed=(4, 5),
    )
    assert int(model.optimizer.iterations) == 50 and np.all(np.isfinite(losses.numpy()))
    # TFP's draws: 64 x 8 in one batch from the first half of the split seed, read as [64, 8]
    from scipy.special import logsumexp as scipy_logsumexp
    from tensorflow_probability.python.internal import samplers

    z = surrogate.sample(512, seed=samplers.split_seed((6, 7), 2)[0])
    log_w = (problem(z) - surrogate.log_prob(z)).numpy().reshape(64, 8)

    iwae = np.mean(scipy_logsumexp(log_w, axis=1) - np.log(8))
    loss = tfp.vi.monte_carlo_variational_loss(
        problem, surrogate, sample_size=64, importance_sample_size=8, seed=(6, 7)
    )
    np.testing.assert_allclose(float(loss), -iwae, rtol=1e-10)
    # tighter than the ELBO on the same draws (Jensen), up to float round-off
    assert -float(loss) >= np.mean(log_w) - 1e-12


def test_structured_surrogate_fits_a_pinned_model_in_its_own_structure():
    problem = regression()
    pinned = problem.joint_distribution()
    target = targets.JointTarget(pinned)
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2,
        num_layers=2,
        target_log_prob=target,
        dtype="float64",
        seed=0,
        base="full_rank",
    )
    surrogate = model.surrogate_posterior(target.bijector)
    tfp.vi.fit_surrogate_posterior(
        pinned.unnormalized_log_prob,
        surrogate,
        keras.optimizers.Adam(3e-2),
        num_steps=300,
        sample_size=256,
        seed=(5, 6),
        jit_compile=True,
    )
    draws = surrogate.sample(50_000, seed=7)
    exact = problem.posterior
    np.testing.assert_allclose(draws.theta.numpy().mean(0), exact.mean().numpy(), atol=0.05)
    np.testing.assert_allclose(np.cov(draws.theta.numpy().T), exact.covariance().numpy(), atol=0.05)


# -- Bayesian linear regression -------------------------------------------------------


def test_exact_posterior_and_evidence_agree_with_quadrature():
    problem = regression()
    log_z = diagnostics.log_normalizer_2d(problem, extent=(-8.0, 8.0), num=1000)
    assert abs(log_z - float(problem.log_evidence)) < 1e-6
    z, area = diagnostics.grid_2d((-8.0, 8.0), 1000)
    density = np.exp(problem(tf.constant(z)).numpy() - log_z)
    mean = (density[..., None] * z).sum((0, 1)) * area
    centred = z - mean
    covariance = np.einsum("ij,ijk,ijl->kl", density, centred, centred) * area
    np.testing.assert_allclose(mean, problem.posterior.mean().numpy(), atol=1e-6)
    np.testing.assert_allclose(covariance, problem.posterior.covariance().numpy(), atol=1e-6)
    # The joint-distribution form is the same density.
    points = tf.constant(np.random.default_rng(0).normal(size=(7, 2)))
    np.testing.assert_allclose(
        targets.JointTarget(problem.joint_distribution())(points).numpy(),
        problem(points).numpy(),
        rtol=1e-12,
    )


def test_correlated_features_have_the_asked_correlation():
    x, y, theta = targets.correlated_regression_data(
        20_000, 3, correlation=0.9, noise_scale=0.5, seed=1
    )
    correlation = np.corrcoef(x.T)
    assert np.allclose(correlation[np.triu_indices(3, 1)], 0.9, atol=0.01)
    assert abs(np.std(y - x @ theta) - 0.5) < 0.01


def mean_field_optimum_kl(precision):
    """min over diagonal Gaussians of KL(q || N(m, precision^-1))
    = (sum ln diag(P) - ln det P) / 2.
    """
    return 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])


def test_reduced_budget_mean_field_planar_and_full_rank_against_the_exact_posterior():
    problem = regression()
    exact = problem.posterior
    precision = np.linalg.inv(exact.covariance().numpy())

    def kl(**options):
        model = tfnf.models.fit_flow(
            problem,
            event_size=2,
            steps=400,
            batch_size=512,
            learning_rate=5e-2,
            dtype="float64",
            seed=0,
            **options,
        )
        return model, diagnostics.bound(model.distribution, exact.log_prob, 100_000, seed=1)

    _, (mean_field, se) = kl(num_layers=0)
    assert (
        abs(mean_field - mean_field_optimum_kl(precision)) < 0.02 + 3 * se
    )  # the closed-form optimum, 0.82 nats
    _, (planar, _) = kl(num_layers=8)
    assert planar < mean_field / 5
    model, (full_rank, _) = kl(num_layers=2, base="full_rank")
    assert full_rank < 0.01
    draws = model.distribution.sample(200_000, seed=2).numpy()
    sd = np.sqrt(np.diag(exact.covariance().numpy()))
    assert np.max(np.abs(draws.mean(0) - exact.mean().numpy()) / sd) < 0.02
    cov = exact.covariance().numpy()
    assert np.linalg.norm(np.cov(draws.T) - cov) / np.linalg.norm(cov) < 0.02


def test_regression_names_bad_input():
    with pytest.raises(ValueError, match=r"features must be \[N, D\] and observations \[N\]"):
        targets.BayesianLinearRegression(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="noise_scale must be positive, got 0"):
        targets.BayesianLinearRegression(np.zeros((5, 2)), np.zeros(5), noise_scale=0)
    with pytest.raises(ValueError, match=r"correlation must be in \[0, 1\), got 1.0"):
        targets.correlated_regression_data(5, 2, correlation=1.0)


# -- bases and the funnel ---------------------------------------------------------------


def test_full_rank_base_is_tfps_multivariate_normal_and_draws_match_its_density():
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=3,
        num_layers=0,
        target_log_prob=lambda z: -tf.reduce_sum(z**2, -1),
        base="full_rank",
        dtype="float64",
        seed=0,
    )
    raw = np.random.default_rng(0).normal(size=6)
    model.base.raw_scale_tril.assign(raw)
    model.base.loc.assign([1.0, -2.0, 0.5])
    scale_tril = tfb.FillScaleTriL(diag_bijector=tfb.Softplus(), diag_shift=None).forward(raw)
    reference = tfd.MultivariateNormalTriL([1.0, -2.0, 0.5], scale_tril)
    z, log_q = model.sample_and_log_prob(1000, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(log_q.numpy(), reference.log_prob(z).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        model.distribution.log_prob(z).numpy(), reference.log_prob(z).numpy(), rtol=1e-12
    )
    draws = model.sample_and_log_prob(200_000, seed=tf.constant([3, 4]))[0].numpy()
    np.testing.assert_allclose(np.cov(draws.T), reference.covariance().numpy(), atol=0.05)


def test_full_rank_model_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=1, target_log_prob="U1", base="full_rank", dtype="float64", seed=0
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(steps=5, batch_size=32, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.base_kind == "full_rank"
    z = np.random.default_rng(0).normal(size=(4, 2))
    np.testing.assert_allclose(
        loaded.distribution.log_prob(z).numpy(), model.distribution.log_prob(z).numpy()
    )


def test_funnel_is_neals_density():
    z = np.random.default_rng(0).normal(size=(20, 4)) * [3.0, 1.0, 2.0, 5.0]
    expected = scipy.stats.norm(0, 3).logpdf(z[:, 0]) + scipy.stats.norm(
        0, np.exp(z[:, :1] / 2)
    ).logpdf(z[:, 1:]).sum(1)
    np.testing.assert_allclose(targets.funnel(tf.constant(z)).numpy(), expected, rtol=1e-12)
    assert math.isclose(
        math.exp(9 / 4), 9.487735836358526
    )  # the x marginals' sd quoted in the docstring


def test_auto_batched_targets_train_without_xla_and_batch_aware_ones_with_it(pinned):
    # The auto-batched model's gradient under XLA took 2 s a step (tfnf/targets.py): "auto" leaves
    # XLA off.
    auto_batched = tfnf.NormalizingFlow(
        event_size=8, num_layers=1, target_log_prob=targets.JointTarget(pinned), dtype="float64"
    )
    auto_batched.compile(optimizer="adam")
    assert targets.JointTarget(pinned).xla_friendly is False and auto_batched.jit_compile is False
    root = tfd.JointDistributionCoroutine.Root

    @tfd.JointDistributionCoroutine
    def batch_aware():
        theta = yield root(
            tfd.Independent(tfd.Normal(tf.zeros(2, tf.float64), 1.0), 1, name="theta")
        )
        yield tfd.Independent(tfd.Normal(theta, 1.0), 1, name="y")

    target = targets.JointTarget(
        batch_aware.experimental_pin(y=tf.constant([0.5, -1.0], tf.float64))
    )
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=1, target_log_prob=target, dtype="float64"
    )
    model.compile(optimizer="adam")
    assert target.xla_friendly is True and model.jit_compile is True
    z = tf.constant([[0.1, 0.2], [1.0, -3.0]], tf.float64)
    expected = scipy.stats.norm.logpdf(z.numpy()).sum(1) + scipy.stats.norm.logpdf(
        [0.5, -1.0], z.numpy()
    ).sum(1)
    np.testing.assert_allclose(target(z).numpy(), expected, rtol=1e-12)
