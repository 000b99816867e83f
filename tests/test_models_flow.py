"""NormalizingFlow: distribution, training by reverse KL, Keras fit loop, saving, bad input."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import FLOWS

import tfnf
from tfnf import diagnostics, targets

tfd = tfp.distributions
LOG_Z_U1 = 1.8775  # PAPER.md; test_targets checks it by independent quadrature


def make(num_layers=2, flow="planar", target="U1", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = tfnf.NormalizingFlow(
        event_size=2,
        num_layers=num_layers,
        flow=flow,
        target_log_prob=target,
        seed=seed,
        dtype=kwargs.pop("dtype", "float64"),
        **kwargs,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), jit_compile=kwargs.get("jit_compile", False)
    )
    return model


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_distribution_is_the_base_pushed_through_the_chain(flow):
    model = make(num_layers=3, flow=flow)
    q = model.distribution
    assert isinstance(q, tfd.TransformedDistribution)
    z0 = np.random.default_rng(0).normal(size=(50, 2))
    z, log_q = z0, model.base.distribution().log_prob(z0).numpy()
    layer = model.flow_layer
    weights_ = [getattr(layer, name).numpy() for name in layer.parameter_ranks]
    assert all(w.shape[0] == 3 for w in weights_)
    for k in range(3):  # eq. 13 written out map by map, log-dets by autodiff
        f = layer.bijector_class(*[w[k] for w in weights_])
        x = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f.forward(x)
        log_q = log_q - tf.linalg.slogdet(tape.batch_jacobian(y, x))[1].numpy()
        z = y.numpy()
    np.testing.assert_allclose(q.log_prob(tf.constant(z)).numpy(), log_q, rtol=0, atol=1e-9)


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_flow_density_integrates_to_one(flow):
    # Quadrature of exp(q.log_prob) through the exact inverse: wrong log-dets or a
    # wrong inverse would move the mass away from 1.
    model = make(num_layers=4, flow=flow)
    model.fit(steps=30, batch_size=256, verbose=0)
    q = model.distribution
    log_mass = diagnostics.log_normalizer_2d(q.log_prob, extent=(-12, 12), num=600)
    assert log_mass == pytest.approx(0.0, abs=1e-4)


def test_training_u1_covers_both_modes():
    model = make(num_layers=8)
    q = model.distribution
    before, _ = diagnostics.bound(q, targets.get("U1"), num_samples=20_000, seed=1)
    history = model.fit(steps=500, batch_size=512, verbose=0)
    after, error = diagnostics.bound(
        model.distribution, targets.get("U1"), num_samples=20_000, seed=1
    )
    assert after < before - 1.0
    assert history.history["bound"][-1] < history.history["bound"][0]
    # KL(q || p) exactly, by quadrature of q.log_prob (through the inverse) on a
    # square holding all the mass, and by Monte Carlo as bound + ln Z: they agree.
    # A flow on one of U1's two equal modes has KL close to ln 2 = 0.69 nats;
    # below ln 2 / 2 both modes carry mass.
    kl, mass = diagnostics.kl_2d(model.distribution, targets.get("U1"), extent=(-6, 6), num=400)
    assert mass == pytest.approx(1.0, abs=1e-3)
    assert kl == pytest.approx(after + LOG_Z_U1, abs=4 * error + 2e-3)
    assert kl < 0.5 * math.log(2.0), kl
    assert error < 0.01


def test_gaussian_target_is_matched_by_the_base_alone():
    # A Gaussian target is reached exactly (KL = 0) by the base's affine family;
    # with normalised log p the bound is KL itself.
    target = tfd.MultivariateNormalDiag(
        loc=tf.constant([1.0, -2.0], tf.float64), scale_diag=tf.constant([0.5, 1.5], tf.float64)
    )
    model = make(num_layers=2, target=target)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    model.fit(steps=600, batch_size=512, verbose=0)
    kl, error = diagnostics.bound(model.distribution, target.log_prob, num_samples=20_000, seed=3)
    assert -3 * error < kl < 0.01


def test_every_trainable_weight_receives_a_gradient():
    model = make(num_layers=3)
    model.fit(
        steps=2, batch_size=64, verbose=0
    )  # off the identity start, where b has no effect yet
    with tf.GradientTape() as tape:
        z, log_q = model.distribution.experimental_sample_and_log_prob(64, seed=[1, 2])
        loss, _ = tfnf.models.reverse_kl(log_q, targets.get("U1")(z))
    grads = tape.gradient(loss, model.trainable_variables)
    assert [tuple(v.shape) for v in model.trainable_variables] == [(2,), (2,), (3, 2), (3, 2), (3,)]
    for v, g in zip(model.trainable_variables, grads, strict=True):
        assert g is not None and np.all(np.abs(g.numpy()) > 0), v.path


def test_fixed_standard_normal_base_has_no_trainable_base_weights():
    model = make(num_layers=2, trainable_base=False)
    assert [v.path for v in model.trainable_variables] == ["planar/u", "planar/w", "planar/b"]
    model.fit(steps=5, batch_size=64, verbose=0)
    np.testing.assert_array_equal(model.base.distribution().mean().numpy(), [0.0, 0.0])


def test_eager_graph_and_several_steps_per_execution_reach_the_same_weights():
    results = []
    for options in (
        {"run_eagerly": True},
        {"jit_compile": False},
        {"jit_compile": False, "steps_per_execution": 3},
    ):
        model = make(num_layers=2, seed=7)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), **options)
        model.fit(steps=6, batch_size=128, verbose=0)
        results.append(weights(model))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "dtype, rtol, unroll, columns",
    [("float64", 1e-11, 1, True), ("float32", 2e-5, 1, True), ("float64", 1e-11, 1, False)],
)
def test_closed_form_backward_trains_to_the_weights_of_the_tape(
    monkeypatch, dtype, rtol, unroll, columns
):
    # The planar Stack backpropagates in closed form, recovering each map's input from its
    # output, with the batch as columns (stack.COLUMNS) or as rows; the tape that re-runs each
    # map on the rows (checked against autodiff through a TFP Chain in test_bijectors) is the
    # reference: after 20 steps under XLA the weights agree to round-off.
    # With 3 maps per loop iteration, K = 8 runs two looped blocks and two maps unrolled.
    from tfnf.bijectors import stack

    monkeypatch.setattr(stack, "UNROLL", unroll)
    monkeypatch.setattr(stack, "COLUMNS", columns)

    def trained():
        model = make(num_layers=8, seed=3, dtype=dtype)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
        model.fit(steps=20, batch_size=256, verbose=0)
        return weights(model)

    ours = trained()
    monkeypatch.setattr(stack, "COLUMNS", False)
    monkeypatch.setattr(stack, "_reversible_sweep", stack._sweep)
    for a, b in zip(ours, trained(), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_xla_execution_of_several_steps_matches_one_compiled_step_at_a_time():
    # Under XLA, fit runs each execution's steps in one compiled loop; the reference
    # is the step itself compiled alone and called once per step (Keras' own scheme).
    fused = make(num_layers=3, seed=11)
    fused.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=5, jit_compile=True)
    history = fused.fit(steps=20, steps_per_epoch=10, batch_size=64, verbose=0).history
    reference = make(num_layers=3, seed=11)
    reference.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    reference.batch_size = 64
    step = tf.function(reference.train_step, jit_compile=True)
    for i in range(20):
        if i % 10 == 0:
            reference.reset_metrics()  # fit resets the trackers every epoch
        step(None)
    assert int(fused.optimizer.iterations) == 20
    for a, b in zip(weights(fused), weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        history["loss"][-1], float(reference.loss_tracker.result()), rtol=1e-12
    )
    assert history["loss"][0] != history["loss"][-1]
    # The compiled loop itself: one call runs an execution's 5 steps and needs no data
    # (Keras' own train function would need an iterator).
    fused.train_function(None)
    assert int(fused.optimizer.iterations) == 25


@pytest.mark.parametrize("flow", ["planar", "radial", "nice"])
def test_training_draws_carry_the_log_density_of_q(flow):
    # The training step's one forward sweep (Philox base draw, eq. 13) against
    # q.log_prob through the exact inverse, and the base draw against loc + scale * eps.
    model = make(num_layers=3, flow=flow)
    model.fit(steps=3, batch_size=64, verbose=0)  # off the identity start
    z, log_q = model.sample_and_log_prob(500, seed=[5, 6])
    np.testing.assert_allclose(
        log_q.numpy(), model.distribution.log_prob(z).numpy(), rtol=0, atol=1e-9
    )
    z0, _ = model.base.sample_and_log_prob(500, seed=[5, 6])
    eps = tf.random.stateless_normal([500, 2], seed=[5, 6], dtype=tf.float64, alg="philox")
    base = model.base.distribution()
    np.testing.assert_allclose(z0.numpy(), (base.mean() + base.stddev() * eps).numpy(), rtol=1e-14)


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_eager_function_and_xla_agree_on_objective_and_gradients(flow):
    # XLA picks its own stateless RNG algorithm, so compare on fixed points of q
    # (drawn once) rather than on training runs.
    model = make(num_layers=3, flow=flow)
    points = model.distribution.sample(256, seed=[4, 2])

    def objective():
        with tf.GradientTape() as tape:
            q = model.distribution
            loss, _ = tfnf.models.reverse_kl(q.log_prob(points), targets.get("U1")(points))
        return [loss, *tape.gradient(loss, model.trainable_variables)]

    eager = objective()
    for compiled in (tf.function(objective), tf.function(objective, jit_compile=True)):
        for a, b in zip(eager, compiled(), strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_history_reports_loss_bound_and_beta_per_epoch():
    model = make(num_layers=2, beta_schedule=tfnf.models.paper_annealing())
    history = model.fit(steps=40, steps_per_epoch=20, batch_size=64, verbose=0).history
    assert sorted(history) == ["beta", "bound", "loss"]
    # beta_t = min(1, 0.01 + t / 10000), averaged over the steps t of each epoch.
    expected = [np.mean(0.01 + np.arange(0, 20) / 1e4), np.mean(0.01 + np.arange(20, 40) / 1e4)]
    np.testing.assert_allclose(history["beta"], expected, rtol=1e-5)  # Keras metrics are float32


def test_loss_equals_bound_without_annealing():
    history = make(num_layers=2).fit(steps=10, batch_size=64, verbose=0).history
    assert history["loss"] == history["bound"] and history["beta"] == [1.0]


def test_progress_bar_shows_the_tracked_metrics(capsys):
    history = make(num_layers=1).fit(steps=4, steps_per_epoch=2, batch_size=32, verbose=1)
    printed = capsys.readouterr().out
    assert "Epoch 2/2" in printed
    # Keras prints the trackers' values; an untracked loss would show as 0.0000.
    shown = [float(x) for x in re.findall(r" bound: (-?[\d.e+-]+)", printed)]
    assert shown and shown[-1] == pytest.approx(history.history["bound"][-1], rel=1e-3)


def test_steps_are_split_into_epochs_for_callbacks():
    history = make(num_layers=1).fit(steps=250, batch_size=32, verbose=0)
    assert len(history.history["loss"]) == 5  # epochs of 50, the largest divisor of 250 up to 100
    assert int(history.model.optimizer.iterations) == 250  # exactly the steps asked for


def test_save_and_load_round_trip_bit_for_bit(tmp_path):
    model = make(num_layers=3, flow="radial", beta_schedule=tfnf.models.paper_annealing())
    model.fit(steps=10, batch_size=64, verbose=0)
    path = str(tmp_path / "flow.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, tfnf.NormalizingFlow)
    assert loaded.get_config() == model.get_config()
    z = np.random.default_rng(0).normal(size=(100, 2)) * 3
    np.testing.assert_array_equal(
        loaded.distribution.log_prob(z).numpy(), model.distribution.log_prob(z).numpy()
    )
    assert loaded.target_log_prob is targets.get("U1")
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.fit(steps=2, batch_size=64, verbose=0)  # and it trains on


def test_a_callable_target_is_not_saved_and_must_be_set_again(tmp_path):
    model = make(num_layers=1, target=lambda z: -0.5 * tf.reduce_sum(z**2, -1))
    path = str(tmp_path / "flow.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.target_log_prob is None
    with pytest.raises(ValueError, match="needs a target"):
        loaded.fit(steps=1, batch_size=8, verbose=0)
    loaded.target_log_prob = "U2"
    loaded.fit(steps=1, batch_size=8, verbose=0)


def test_early_stopping_checkpoint_and_backup_callbacks(tmp_path):
    model = make(num_layers=2)
    checkpoint = str(tmp_path / "best.keras")
    stop = keras.callbacks.EarlyStopping(monitor="bound", mode="min", min_delta=100.0, patience=1)
    history = model.fit(
        steps=1000,
        steps_per_epoch=10,
        batch_size=64,
        verbose=0,
        callbacks=[stop, keras.callbacks.ModelCheckpoint(checkpoint)],
    )
    assert len(history.history["loss"]) == 2  # no epoch improves by 100 nats: stop after patience
    np.testing.assert_array_equal(
        keras.models.load_model(checkpoint).distribution.log_prob([[0.5, 0.5]]),
        model.distribution.log_prob([[0.5, 0.5]]),
    )


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_backup_and_restore_resumes_to_the_uninterrupted_weights(tmp_path):
    straight = make(num_layers=2, seed=3)
    straight.fit(steps=40, steps_per_epoch=10, batch_size=64, verbose=0)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make(num_layers=2, seed=3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(
            steps=40,
            steps_per_epoch=10,
            batch_size=64,
            verbose=0,
            callbacks=[backup, _Interrupt(1)],
        )
    resumed = make(num_layers=2, seed=3)
    history = resumed.fit(
        steps=40, steps_per_epoch=10, batch_size=64, verbose=0, callbacks=[backup]
    )
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    for a, b in zip(weights(straight), weights(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _poisoned_u1(model, bad_step):
    """U1, but NaN from optimizer step `bad_step` (0-based) on."""

    def log_prob(z):
        poison = tf.where(
            model.optimizer.iterations >= bad_step, tf.constant(math.nan, z.dtype), 0.0
        )
        return targets.get("U1")(z) + poison

    return log_prob


class _Snapshots(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if math.isfinite(logs["loss"]):
            self.last_good = weights(self.model)


def test_non_finite_loss_stops_names_the_step_and_keeps_the_last_good_weights():
    model = make(num_layers=2)
    model.target_log_prob = _poisoned_u1(model, bad_step=3)
    snapshots = _Snapshots()
    with pytest.raises(
        tfnf.NonFiniteLossError, match="training step 4: .* weights are those after step 3"
    ):
        model.fit(steps=10, batch_size=32, verbose=0, callbacks=[snapshots])
    assert int(model.optimizer.iterations) == 3
    for a, b in zip(weights(model), snapshots.last_good, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(w)) for w in weights(model))


def test_non_finite_loss_inside_a_multi_step_execution_keeps_the_last_good_weights():
    model = make(num_layers=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=4, jit_compile=True)
    model.target_log_prob = _poisoned_u1(model, bad_step=5)
    reference = make(num_layers=2)
    reference.compile(
        optimizer=keras.optimizers.Adam(1e-2), jit_compile=True
    )  # XLA draws its own random numbers
    reference.fit(steps=5, batch_size=32, verbose=0)
    with pytest.raises(tfnf.NonFiniteLossError, match="training step 6"):
        model.fit(steps=12, batch_size=32, verbose=0)
    assert int(model.optimizer.iterations) == 5
    for a, b in zip(weights(model), weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_terminate_on_nan_stops_quietly_with_the_step_named():
    model = make(num_layers=2)
    model.target_log_prob = _poisoned_u1(model, bad_step=2)
    with pytest.warns(RuntimeWarning, match="training step 3"):
        model.fit(steps=10, batch_size=32, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert int(model.optimizer.iterations) == 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_layers": -1}, ValueError, "num_layers must be an integer >= 0, got -1"),
        ({"num_layers": 2.5}, ValueError, "num_layers must be an integer >= 0, got 2.5"),
        (
            {"base": "cholesky"},
            ValueError,
            "base must be one of diagonal, full_rank, got 'cholesky'",
        ),
        ({"event_size": 0}, ValueError, "event_size must be a positive integer"),
        (
            {"flow": "householder"},
            ValueError,
            "Unknown flow 'householder'; known flows: hamiltonian, nice, planar, radial, sylvester",
        ),
        (
            {"target_log_prob": "U7"},
            ValueError,
            "Unknown target 'U7'; known targets: U1, U2, U3, U4",
        ),
        ({"event_size": 3}, ValueError, "U1 is defined for event_size 2"),
        ({"target_log_prob": lambda z: z}, ValueError, r"returned shape \(7, 2\), expected \(7,\)"),
        (
            {"target_log_prob": lambda z: tf.reduce_sum(z)},
            ValueError,
            r"returned shape \(\), expected \(7,\)",
        ),
        (
            {"target_log_prob": lambda z: tf.zeros(tf.shape(z)[:-1], tf.int32)},
            TypeError,
            "for float32 z it returned int32",
        ),
        # Outputs a probe of 3 rows would have passed: a fixed shape, a batch of 3 targets.
        (
            {"target_log_prob": lambda z: np.zeros(3, "float32")},
            ValueError,
            r"returned shape \(3,\), expected \(7,\)",
        ),
        (
            {"target_log_prob": tfd.MultivariateNormalDiag(loc=np.zeros((3, 2), "float32"))},
            ValueError,
            r"failed on z of shape \(7, 2\)",
        ),
        (
            {"target_log_prob": lambda z: tf.cast(tf.reduce_sum(z, -1), tf.float64)},
            TypeError,
            "for float32 z it returned float64",
        ),
        ({"trainable_base": "no"}, TypeError, "trainable_base must be True or False, got 'no'"),
        ({"beta_schedule": "x"}, TypeError, "beta_schedule must be a number >= 0 or a schedule"),
        ({"beta_schedule": -0.5}, ValueError, "beta_schedule must be >= 0, got -0.5"),
        ({"beta_schedule": math.nan}, ValueError, "beta_schedule must be a finite number"),
        ({"seed": 2**32}, ValueError, r"seed must be None or an integer in \[0, 2\*\*31 - 1\]"),
        ({"seed": -1}, ValueError, "seed must be None or an integer"),
        ({"seed": "abc"}, ValueError, "seed must be None or an integer"),
        ({"seed": 3.5}, ValueError, "seed must be None or an integer"),
        (
            {"target_log_prob": tfd.MultivariateNormalDiag(loc=[0.0, 0.0, 0.0])},
            ValueError,
            r"event_shape \(3,\) does not match event_size=2",
        ),
        ({"dtype": "int32"}, TypeError, "dtype must be float32 or float64, got 'int32'"),
        ({"dtype": "mixed_float16"}, TypeError, "dtype must be float32 or float64"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    arguments = {"event_size": 2, "num_layers": 2, "target_log_prob": "U1", "dtype": "float32"}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        tfnf.NormalizingFlow(**arguments)


def test_fit_refuses_data_and_bad_batch_sizes():
    model = make(num_layers=1)
    with pytest.raises(ValueError, match="takes no data"):
        model.fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        model.fit(steps=1, batch_size=0)
    model.compile(optimizer="adam", steps_per_execution=3)
    with pytest.raises(
        ValueError,
        match=r"steps \(5\) must be a multiple of the compiled steps_per_execution \(3\)",
    ):
        model.fit(steps=5, batch_size=8)
    with pytest.raises(
        ValueError,
        match=r"steps_per_epoch \(5\) must be a multiple of the compiled steps_per_execution \(3\)",
    ):
        model.fit(epochs=1, steps_per_epoch=5, batch_size=8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": -5}, "steps must be a positive integer, got -5"),
        ({"steps": "10"}, "steps must be a positive integer, got '10'"),
        (
            {"steps": 7, "steps_per_epoch": 5},
            r"steps \(7\) must be a multiple of steps_per_epoch \(5\)",
        ),
        ({"steps": 4, "class_weight": {0: 1.0}}, "does not take `class_weight`"),
        ({"steps": 4, "validation_data": np.zeros((2, 2))}, "does not take `validation_data`"),
        ({"steps": 4, "validation_split": 0.1}, "does not take `validation_split`"),
    ],
)
def test_fit_refuses_bad_arguments_before_any_step(kwargs, match):
    model = make(num_layers=1)
    before = weights(model)
    with pytest.raises(ValueError, match=match):
        model.fit(batch_size=8, verbose=0, **kwargs)
    assert int(model.optimizer.iterations) == 0
    for a, b in zip(weights(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("steps, per_execution", [(150, 1), (7, 1), (150, 10), (230, 10)])
def test_fit_runs_exactly_the_steps_asked_for(steps, per_execution):
    model = make(num_layers=1)
    model.compile(optimizer="adam", steps_per_execution=per_execution, jit_compile=False)
    model.fit(steps=steps, batch_size=8, verbose=0)
    assert int(model.optimizer.iterations) == steps


def test_numpy_integers_are_integers():
    model = tfnf.NormalizingFlow(
        event_size=np.int64(2), num_layers=np.int32(2), target_log_prob="U1"
    )
    assert model.event_size == 2 and model.num_layers == 2 and type(model.num_layers) is int
    model.compile(optimizer="adam", jit_compile=False)
    model.fit(steps=np.int64(3), batch_size=np.int64(8), verbose=0)
    assert int(model.optimizer.iterations) == 3


def test_evaluate_is_refused_with_the_way_to_measure_a_flow():
    with pytest.raises(ValueError, match="tfnf.diagnostics.bound"):
        make(num_layers=1).evaluate()


def test_a_batch_larger_than_memory_is_refused_before_compiling_and_the_model_still_trains():
    model = make(num_layers=4, dtype="float32")
    model.fit(steps=3, batch_size=64, verbose=0)
    before = weights(model)
    with pytest.raises(ValueError, match=r"batch_size=1000000000000 needs at least .* GiB"):
        model.fit(steps=1, batch_size=10**12, verbose=0)
    assert model.train_function is not None and int(model.optimizer.iterations) == 3
    for a, b in zip(weights(model), before, strict=True):
        np.testing.assert_array_equal(a, b)
    model.fit(steps=2, batch_size=64, verbose=0)
    assert int(model.optimizer.iterations) == 5
    uncompiled = tfnf.NormalizingFlow(event_size=2, num_layers=1, target_log_prob="U1")
    with pytest.raises(ValueError, match="compile"):
        uncompiled.fit(steps=1)


@pytest.mark.parametrize("decay", [True, False])
def test_fit_flow_decays_the_rate_along_a_cosine_over_exactly_the_steps_run(decay):
    model = tfnf.models.fit_flow(
        "U1",
        num_layers=1,
        steps=25,
        batch_size=32,
        steps_per_execution=10,
        learning_rate=0.02,
        decay=decay,
    )
    assert int(model.optimizer.iterations) == 30  # rounded up to whole executions
    rate = model.optimizer._learning_rate
    for t in (0, 15, 30):  # 0.02 (alpha + (1 - alpha)(1 + cos(pi t / T)) / 2), alpha = 0.1, T = 30
        expected = 0.02 * (0.1 + 0.9 * (1 + math.cos(math.pi * t / 30)) / 2) if decay else 0.02
        value = rate(t) if callable(rate) else rate
        assert float(value) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("flow", FLOWS)
def test_log_prob_is_minus_infinity_where_the_density_is_zero_and_tfps_elsewhere(flow, dtype):
    model = make(num_layers=3, flow=flow, dtype=dtype)
    model.fit(steps=3, batch_size=64, verbose=0)
    q = model.distribution
    huge = 1e30 if dtype == "float32" else 1e200  # |z|^2 overflows
    far = np.array([[np.inf, 0.0], [-np.inf, np.inf], [0.0, huge]], dtype)
    near = np.random.default_rng(0).normal(size=(20, 2)).astype(dtype)
    log_prob = q.log_prob(tf.constant(np.concatenate([far, near]))).numpy()
    assert np.all(log_prob[: len(far)] == -np.inf)
    assert np.isnan(q.log_prob(tf.constant([[np.nan, 0.0]], dtype)).numpy()).all()  # no answer
    plain = tfd.TransformedDistribution(q.distribution, q.bijector)  # TFP's own, no guard
    # The same numbers up to the last bit of float32 (here the rows went through in another batch).
    expected = plain.log_prob(tf.constant(near)).numpy()
    np.testing.assert_allclose(
        log_prob[len(far) :], expected, rtol=1e-6 if dtype == "float32" else 1e-15
    )
    assert isinstance(q, tfd.TransformedDistribution)


def test_load_model_names_a_truncated_file_where_keras_says_file_not_found(tmp_path):
    model = make(num_layers=2)
    model.fit(steps=2, batch_size=16, verbose=0)
    whole, cut = tmp_path / "flow.keras", tmp_path / "cut.keras"
    model.save(whole)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    restored = tfnf.models.load_model(whole)
    for a, b in zip(weights(restored), weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"cut.keras is not a complete .keras archive"):
        tfnf.models.load_model(cut)
    with pytest.raises(FileNotFoundError, match="missing.keras: no such file"):
        tfnf.models.load_model(tmp_path / "missing.keras")
    with pytest.raises(
        Exception, match="(?i)not found"
    ):  # what Keras alone says: the reason for this
        keras.saving.load_model(cut)


# -- the annealing path from N(0, I) and the box restriction (fit_flow's recipe) ----------------


def first_step_samples(model, n):
    """The samples of the model's first training step: its sampler's seed at step 0."""
    return model.sample_and_log_prob(n, seed=tf.constant([model._sampler_seed, 0]))


def numpy_u2(z):
    return -0.5 * ((z[:, 1] - np.sin(np.pi * z[:, 0] / 2)) / 0.4) ** 2


def test_annealing_from_the_standard_normal_follows_the_geometric_path():
    model = make(num_layers=2, beta_schedule=0.3, anneal_from="standard_normal")
    model.compile(optimizer=keras.optimizers.Adam(0.0), jit_compile=False)  # weights stay
    z, log_q = (t.numpy() for t in first_step_samples(model, 64))
    history = model.fit(steps=1, batch_size=64, verbose=0).history
    log_p = targets.get("U1")(tf.constant(z)).numpy()
    log_r = -0.5 * (z**2).sum(-1) - math.log(2 * math.pi)  # N(0, I) in 2-D
    assert history["loss"][0] == pytest.approx(np.mean(log_q - 0.3 * log_p - 0.7 * log_r), 1e-5)
    assert history["bound"][0] == pytest.approx(np.mean(log_q - log_p), rel=1e-5)


def test_a_box_restricts_the_fitted_target_and_its_bound():
    model = make(num_layers=2, target="U2", box=(-1.0, 1.5))
    model.compile(optimizer=keras.optimizers.Adam(0.0), jit_compile=False)
    z, log_q = (t.numpy() for t in first_step_samples(model, 64))
    history = model.fit(steps=1, batch_size=64, verbose=0).history
    outside = np.maximum(-1.0 - z, 0) + np.maximum(z - 1.5, 0)
    log_p = numpy_u2(z) - 0.5 * (outside**2).sum(-1)
    assert (outside > 0).any()  # some samples fall outside: the tails are tested
    assert history["bound"][0] == pytest.approx(np.mean(log_q - log_p), rel=1e-5)
    assert model.target_log_prob is targets.get("U2")  # the user's target, unrestricted


def test_annealing_reference_and_box_survive_save_and_load(tmp_path):
    model = make(num_layers=2, target="U2", anneal_from="standard_normal", box=(-4, 4))
    path = str(tmp_path / "flow.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.anneal_from == "standard_normal" and loaded.box == (-4.0, 4.0)
    z = tf.constant(np.random.default_rng(5).uniform(-6, 6, (50, 2)))
    np.testing.assert_array_equal(loaded._fitted_log_prob(z), model._fitted_log_prob(z))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"anneal_from": "flat"}, "anneal_from must be None or 'standard_normal', got 'flat'"),
        ({"box": (2, 1)}, r"box must be a pair \(lo, hi\) of finite numbers with lo < hi"),
    ],
)
def test_bad_annealing_reference_or_box_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        tfnf.NormalizingFlow(event_size=2, num_layers=1, target_log_prob="U2", **options)


def test_paper_annealing_reaches_one_at_its_duration():
    schedule = tfnf.models.paper_annealing(400)
    for t in (0, 100, 396, 400, 1000):
        assert float(schedule(t)) == pytest.approx(min(1.0, 0.01 + t / 400), rel=1e-6)


@pytest.mark.parametrize(
    "target, box",
    [("U2", targets.BOX), ("U4", targets.BOX), ("U1", None), ("hexagon", None)],
)
def test_fit_flow_restricts_only_targets_that_are_not_normalisable(target, box):
    model = tfnf.models.fit_flow(target, num_layers=1, steps=2, batch_size=16, seed=1)
    assert model.box == box and model.anneal_from == "standard_normal"
    schedule = model.beta_schedule  # the paper's, over the first half (1) of the 2 steps run
    assert float(schedule(5)) == pytest.approx(1.0) and float(schedule(0)) == pytest.approx(0.01)
    plain = tfnf.models.fit_flow(
        target, num_layers=1, steps=2, batch_size=16, anneal=False, box=None
    )
    assert plain.box is None and plain.anneal_from is None and plain.beta_schedule == 1.0


def test_fit_flow_covers_the_two_heaviest_modes_of_the_hexagon_mixture():
    # A small budget (about 5 s): K = 8, 1,000 steps of 512. Each of the two heaviest modes
    # (weights 0.30 and 0.22) must hold a mass within a factor 2 of its weight under q.
    spec = targets.mixture("hexagon")
    model = tfnf.models.fit_flow(
        "hexagon", num_layers=8, steps=1000, batch_size=512, seed=0, dtype="float64"
    )
    masses = diagnostics.mode_masses(model.distribution, spec.locs, num_samples=20_000, seed=[1, 2])
    assert diagnostics.covers_modes(masses[:2], spec.weights[:2]).all(), masses


def test_fit_flow_anneals_planar_and_radial_maps_but_not_nice_couplings():
    for flow, annealed in (("planar", True), ("radial", True), ("nice", False)):
        model = tfnf.models.fit_flow("U1", num_layers=1, flow=flow, steps=2, batch_size=16)
        assert (model.anneal_from == "standard_normal") == annealed
        assert (model.beta_schedule != 1.0) == annealed
