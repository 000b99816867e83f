"""The Hamiltonian flow: tempered leapfrog on (z, rho), against autodiff and closed forms."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

import tfnf
from tfnf import bijectors, layers

tfd = tfp.distributions


def quartic(z):
    """A non-Gaussian log-density with a curved gradient, z [..., D] -> [...]."""
    return -0.25 * tf.reduce_sum(z**4, axis=-1) - 0.5 * tf.reduce_sum(z[..., 1:] * z[..., :-1], -1)


def random_dynamics(size=3, steps=4, tempered=True, seed=0):
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.7, 1.3, steps) if tempered else np.ones(steps)
    return bijectors.Hamiltonian(
        quartic,
        step_size=rng.uniform(0.05, 0.3, size),
        inverse_mass=rng.uniform(0.5, 2.0, size),
        tempering=alpha,
    )


def test_the_leapfrog_map_preserves_volume_up_to_the_tempering():
    dynamics = random_dynamics()
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 6)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = dynamics.forward(x)
    jacobian = tape.batch_jacobian(y, x)  # [5, 6, 6]
    _, log_det = np.linalg.slogdet(jacobian.numpy())
    expected = 3 * np.log(dynamics.tempering.numpy()).sum()
    np.testing.assert_allclose(log_det, expected, atol=1e-10)
    ldj = dynamics.forward_log_det_jacobian(x, event_ndims=1).numpy()
    np.testing.assert_allclose(np.broadcast_to(ldj, log_det.shape), log_det, atol=1e-10)


def test_the_leapfrog_map_is_time_reversible_and_its_inverse_exact():
    untempered = random_dynamics(tempered=False)
    x = np.random.default_rng(2).normal(size=(7, 6))
    y = untempered.forward(tf.constant(x)).numpy()
    flipped = np.concatenate([y[:, :3], -y[:, 3:]], axis=1)
    back = untempered.forward(tf.constant(flipped)).numpy()  # negated momentum: back to the start
    np.testing.assert_allclose(back, np.concatenate([x[:, :3], -x[:, 3:]], axis=1), atol=1e-10)
    tempered = random_dynamics(tempered=True)
    y = tempered.forward(tf.constant(x)).numpy()
    np.testing.assert_allclose(tempered.inverse(tf.constant(y.copy())).numpy(), x, atol=1e-10)
    assert np.abs(y - x).max() > 0.1  # the map moved the points far beyond the tolerance


def test_quadratic_tempering_ends_at_temperature_one():
    alpha = bijectors.quadratic_tempering(tf.constant(0.3, tf.float64), 5).numpy()
    root = [1 / ((1 - 1 / math.sqrt(0.3)) * k**2 / 25 + 1 / math.sqrt(0.3)) for k in range(6)]
    np.testing.assert_allclose(alpha, [root[k] / root[k + 1] for k in range(5)], rtol=1e-14)
    assert alpha.prod() == pytest.approx(math.sqrt(0.3), rel=1e-14)


def test_bad_parameters_are_named():
    with pytest.raises(TypeError, match="target_log_prob must be a callable"):
        bijectors.Hamiltonian(None, 0.1, 1.0, [1.0])
    with pytest.raises(ValueError, match="`tempering` must be"):
        bijectors.Hamiltonian(quartic, 0.1, 1.0, 1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`step_size` must be positive"):
        bijectors.Hamiltonian(quartic, -0.1, 1.0, [1.0], validate_args=True).forward([[0.0, 1.0]])
    with pytest.raises(ValueError, match="event is concat"):
        bijectors.Hamiltonian(quartic, 0.1, 1.0, [1.0]).forward(tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="initial_beta must lie in"):
        layers.HamiltonianFlow(num_layers=2, initial_beta=1.0)
    with pytest.raises(TypeError, match="tempering must be True or False, got 'no'"):
        layers.HamiltonianFlow(num_layers=2, tempering="no")
    with pytest.raises(ValueError, match="step_size must be a positive number"):
        layers.HamiltonianFlow(num_layers=2, step_size=0.0)
    with pytest.raises(ValueError, match="at least one leapfrog step"):
        tfnf.NormalizingFlow(event_size=2, num_layers=0, flow="hamiltonian", target_log_prob="U1")


# -- the model on the extended space -------------------------------------------------------------


def gaussian_model(steps=3, planar_layers=0):
    rng = np.random.default_rng(3)
    loc, tril = np.array([0.5, -1.0]), np.array([[1.2, 0.0], [0.6, 0.5]])
    target = tfd.MultivariateNormalTriL(tf.constant(loc), tf.constant(tril))
    model = tfnf.NormalizingFlow(
        event_size=2,
        num_layers=steps,
        flow="hamiltonian",
        target_log_prob=target,
        flow_options={"planar_layers": planar_layers, "step_size": 0.3},
        dtype="float64",
        seed=4,
    )
    flow = model.flow_layer
    flow.raw_step_size.assign(rng.uniform(-1.5, 0.0, 2))
    flow.log_inverse_mass.assign(rng.normal(0.0, 0.3, 2))
    flow.raw_beta.assign(-0.4)
    model.base.loc.assign([0.3, 0.1])
    model.base.raw_scale.assign([0.2, -0.3])
    return model, loc, tril @ tril.T


def affine_leapfrog(model, loc, cov):
    """The dynamics for a Gaussian target, x -> A x + c, composed in NumPy."""
    flow = model.flow_layer
    eps = tf.math.softplus(flow.raw_step_size).numpy()
    inverse_mass = flow.inverse_mass().numpy()
    alpha = flow.tempering_factors().numpy()
    precision = np.linalg.inv(cov)
    d = len(loc)
    a, c = np.eye(2 * d), np.zeros(2 * d)

    def then(m, shift):
        nonlocal a, c
        a, c = m @ a, m @ c + shift

    kick = np.eye(2 * d)
    kick[d:, :d] = -0.5 * eps[:, None] * precision
    kick_shift = np.concatenate([np.zeros(d), 0.5 * eps * (precision @ loc)])
    drift = np.eye(2 * d)
    drift[:d, d:] = np.diag(eps * inverse_mass)
    for k in range(flow.num_layers):
        then(kick, kick_shift)
        then(drift, np.zeros(2 * d))
        then(kick, kick_shift)
        then(np.diag(np.concatenate([np.ones(d), np.full(d, alpha[k])])), np.zeros(2 * d))
    return a, c


def test_for_a_gaussian_target_the_flows_density_is_the_closed_form_gaussian():
    model, loc, cov = gaussian_model()
    a, c = affine_leapfrog(model, loc, cov)
    scale = tf.math.softplus(model.base.raw_scale).numpy()
    beta = float(model.flow_layer.initial_beta_value())
    mass = 1 / model.flow_layer.inverse_mass().numpy()
    mean0 = np.concatenate([model.base.loc.numpy(), np.zeros(2)])
    cov0 = np.diag(np.concatenate([scale**2, mass / beta]))
    exact = stats.multivariate_normal(a @ mean0 + c, a @ cov0 @ a.T)
    x = exact.rvs(size=50, random_state=5)
    np.testing.assert_allclose(
        model.distribution.log_prob(tf.constant(x)).numpy(), exact.logpdf(x), atol=1e-10
    )
    # The training draws: exact joint densities of the points they reach.
    draws, log_q = model.sample_and_log_prob(200, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(log_q.numpy(), exact.logpdf(draws.numpy()), atol=1e-10)
    # ... and their positions follow the marginal, the Gaussian's top-left block.
    marginal = stats.multivariate_normal(exact.mean[:2], exact.cov[:2, :2])
    positions = model.call(20000).numpy()
    assert positions.shape == (20000, 2)
    error = np.sqrt(np.diag(marginal.cov) / 20000)
    np.testing.assert_allclose(positions.mean(0), marginal.mean, atol=4 * error.max())


def test_gradients_reach_the_step_sizes_mass_and_tempering():
    model, _, _ = gaussian_model(planar_layers=1)
    seed = tf.constant([7, 8])

    def loss():
        x, log_q = model.sample_and_log_prob(64, seed=seed)
        return tf.reduce_mean(log_q - model.extended_target_log_prob(x))

    flow = model.flow_layer
    params = [flow.raw_step_size, flow.log_inverse_mass, flow.raw_beta]
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, params)
    for variable, grad in zip(params, grads, strict=True):
        start = variable.numpy()
        flat = np.atleast_1d(start).astype(float)
        numeric = []
        for i in range(flat.size):
            steps = []
            for h in (1e-6, -1e-6):
                moved = flat.copy()
                moved[i] += h
                variable.assign(moved.reshape(np.shape(start)))
                steps.append(float(loss()))
            variable.assign(start)
            numeric.append((steps[0] - steps[1]) / 2e-6)
        np.testing.assert_allclose(np.atleast_1d(grad.numpy()), numeric, rtol=1e-5, atol=1e-8)
        assert np.abs(numeric).max() > 1e-3, variable.path  # the bound depends on it


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_gradients_reach_the_inputs_and_the_targets_variables(compiled):
    # The dynamics' backward pass recomputes the target's gradient (Hessian-vector products
    # in z, mixed derivatives in the target's variables): both against central differences.
    rng = np.random.default_rng(3)
    centre = tf.Variable(rng.normal(size=3), dtype=tf.float64)
    weight = tf.Variable(rng.uniform(0.5, 1.5, 3), dtype=tf.float64)

    def target(z):
        return quartic(weight * (z - centre))

    dynamics = bijectors.Hamiltonian(
        target,
        step_size=np.array([0.2, 0.1, 0.15]),
        inverse_mass=np.array([1.0, 0.7, 1.3]),
        tempering=np.array([0.9, 1.1, 1.0]),
    )
    x = tf.constant(rng.normal(size=(5, 6)))

    def loss(x):
        y = dynamics.forward(tf.identity(x))  # a new tensor: no cached answer
        return tf.reduce_sum(tf.sin(y) * tf.range(1.0, 7.0, dtype=tf.float64))

    def value_and_grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(x)
        return value, tape.gradient(value, [x, centre, weight])

    grads = (tf.function(value_and_grads, jit_compile=True) if compiled else value_and_grads)(x)[1]
    for source, grad in zip([x, centre, weight], grads, strict=True):
        start = source.numpy()
        flat = start.ravel().astype(float)
        numeric = []
        for i in range(flat.size):
            ends = []
            for h in (1e-6, -1e-6):
                moved = flat.copy()
                moved[i] += h
                if source is x:
                    ends.append(float(loss(tf.constant(moved.reshape(start.shape)))))
                else:
                    source.assign(moved.reshape(start.shape))
                    ends.append(float(loss(x)))
            if source is not x:
                source.assign(start)
            numeric.append((ends[0] - ends[1]) / 2e-6)
        np.testing.assert_allclose(grad.numpy().ravel(), numeric, rtol=1e-6, atol=1e-8)
        assert np.abs(numeric).max() > 1e-2  # the output depends on it


def test_the_steps_are_one_loop_with_the_gradients_of_the_unrolled_steps():
    # Unrolled, the backward passes of L steps fused under XLA into one kernel whose cost
    # grew as 2^L (U2 in the box: 1.1 s a step at L = 8). As one loop the target is traced
    # as often at L = 16 as at L = 1, and the gradients are those of plain autodiff through
    # the steps written out (nested tapes), in float64, under XLA.
    rng = np.random.default_rng(5)
    centre = tf.Variable(rng.normal(size=2), dtype=tf.float64)
    traces = []

    def target(z):
        traces.append(1)
        z = z - centre
        ring = -0.5 * tf.square((tf.norm(z, axis=-1) - 2.0) / 0.4)
        return ring + tf.sin(z[..., 0]) * z[..., 1]  # coordinates read by slicing

    x = tf.constant(rng.normal(size=(7, 4)))
    eps, inverse_mass = np.array([0.12, 0.09]), np.array([1.1, 0.8])

    def gradients(steps):
        alpha = np.linspace(0.9, 1.1, steps)
        dynamics = bijectors.Hamiltonian(target, eps, inverse_mass, alpha)

        @tf.function(jit_compile=True)
        def value_and_grads(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = dynamics.forward(tf.identity(x))
                value = tf.reduce_sum(tf.cos(y) * tf.range(1.0, 5.0, dtype=tf.float64))
            return tape.gradient(value, [x, centre])

        del traces[:]
        grads = value_and_grads(x)
        return [g.numpy() for g in grads], len(traces)

    def unrolled(steps):
        alpha = np.linspace(0.9, 1.1, steps)

        def grad_u(z):
            with tf.GradientTape() as inner:
                inner.watch(z)
                value = target(z)
            return -inner.gradient(value, z)

        with tf.GradientTape() as tape:
            tape.watch(x)
            z, rho = x[:, :2], x[:, 2:]
            for k in range(steps):
                rho = rho - 0.5 * eps * grad_u(z)
                z = z + eps * inverse_mass * rho
                rho = (rho - 0.5 * eps * grad_u(z)) * alpha[k]
            y = tf.concat([z, rho], -1)
            value = tf.reduce_sum(tf.cos(y) * tf.range(1.0, 5.0, dtype=tf.float64))
        return [g.numpy() for g in tape.gradient(value, [x, centre])]

    (one, traced_one), (many, traced_many) = gradients(1), gradients(16)
    assert traced_many == traced_one
    for steps, grads in ((1, one), (16, many)):
        for got, want in zip(grads, unrolled(steps), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
            assert np.abs(want).max() > 1e-2


def test_a_short_fit_tightens_the_extended_bound_on_u1():
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=4, flow="hamiltonian", target_log_prob="U1", seed=0
    )
    model.compile(optimizer="adam")
    before, _ = tfnf.diagnostics.bound(
        model.distribution, model.extended_target_log_prob, 20000, seed=[1, 2]
    )
    model.fit(steps=200, batch_size=256, verbose=0)
    after, error = tfnf.diagnostics.bound(
        model.distribution, model.extended_target_log_prob, 20000, seed=[1, 2]
    )
    log_z = tfnf.diagnostics.log_normalizer_2d(tfnf.targets.get("U1"), (-6, 6), 600)
    assert after < before - 0.3, (before, after)
    assert after > -log_z - 4 * error  # a bound: E[ln q - ln p~ - ln r] >= -ln Z


# -- the Hamiltonian VAE ---------------------------------------------------------------------------


def hamiltonian_vae(**options):
    model = tfnf.models.FlowVAE(
        latent_size=2,
        hidden_units=6,
        num_layers=3,
        flow="hamiltonian",
        data_size=12,
        flow_options={"step_size": 0.2, **options},
        dtype="float64",
        seed=0,
    )
    model.compile(optimizer="adam", jit_compile=False)
    return model


def test_the_vaes_training_draws_have_the_exact_density_of_the_extended_posterior():
    model = hamiltonian_vae(planar_layers=2)
    x = tf.constant((np.random.default_rng(0).random((5, 12)) < 0.5).astype("float64"))
    seed = tf.constant([3, 4])
    log_px_z, log_pz, log_q = model.log_weight_terms(x, seed)
    # The same draw by hand: the amortised base, the momentum, the dynamics on ln p(x, z).
    z0, log_q0 = model.posterior_layer.sample_and_log_prob(model.posterior_parameters(x), seed)
    posterior = model.posterior(x)  # the joint q(z, rho | x), through TFP's inverse
    scale = model.dynamics.momentum_scale(at_start=True)
    rho0, _ = tfnf.sampling.diagonal_normal_draw(
        tf.zeros_like(z0),
        tf.broadcast_to(scale, tf.shape(z0)),
        (),
        tf.random.experimental.stateless_fold_in(seed, 2),
    )
    moved = posterior.bijector.forward(tf.concat([z0, rho0], -1)).numpy()
    z, rho = moved[:, :2], moved[:, 2:]
    joint = posterior.log_prob(tf.constant(moved.copy())).numpy()
    reverse = stats.norm(0, 1 / np.sqrt(model.dynamics.inverse_mass().numpy())).logpdf(rho).sum(1)
    np.testing.assert_allclose(log_q.numpy(), joint - reverse, atol=1e-9)
    np.testing.assert_allclose(log_pz.numpy(), stats.norm.logpdf(z).sum(1), atol=1e-12)
    logits = model.decode(tf.constant(z)).numpy()
    expected = (x.numpy() * logits - np.logaddexp(0, logits)).sum(1)
    np.testing.assert_allclose(log_px_z.numpy(), expected, atol=1e-10)
    assert np.abs(z - z0.numpy()).max() > 1e-2  # the dynamics moved the draws


def test_a_short_vae_fit_moves_the_dynamics_and_saves(tmp_path):
    model = hamiltonian_vae()
    x = (np.random.default_rng(1).random((64, 12)) < 0.5).astype("float64")
    start = [w.numpy().copy() for w in model.dynamics.weights]
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    for before, w in zip(start, model.dynamics.weights, strict=True):
        assert np.abs(w.numpy() - before).max() > 1e-4, w.path  # the ELBO's gradient reached it
    model.save(tmp_path / "hvae.keras")
    again = tfnf.models.load_model(tmp_path / "hvae.keras")
    seed = tf.constant([5, 6])
    for a, b in zip(
        again.log_weight_terms(x[:4], seed), model.log_weight_terms(x[:4], seed), strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_the_flow_saves_and_loads_with_its_warp_and_dynamics(tmp_path):
    model = tfnf.NormalizingFlow(
        event_size=2,
        num_layers=2,
        flow="hamiltonian",
        target_log_prob="U1",
        flow_options={"planar_layers": 2, "initial_beta": 0.3},
        dtype="float64",
        seed=1,
    )
    model.compile(optimizer="adam")
    model.fit(steps=3, batch_size=32, verbose=0)
    model.save(tmp_path / "hamiltonian.keras")
    again = tfnf.models.load_model(tmp_path / "hamiltonian.keras")
    assert again.flow_layer.planar_layers == 2 and again.flow_layer.initial_beta == 0.3
    seed = tf.constant([2, 3])
    for a, b in zip(
        again.sample_and_log_prob(50, seed), model.sample_and_log_prob(50, seed), strict=True
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
