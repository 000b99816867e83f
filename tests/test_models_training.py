"""The machinery both models share: the guard's learning-rate checks; a failure loses nothing.

Each test runs a short fit of both models and checks the weights against copies taken
before (or a run stopped at the same step), so what "loses nothing" means is a number.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import weights

import tfnf


def flow_model(**kwargs):
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2, num_layers=2, target_log_prob="U1", seed=0, dtype="float64"
    )
    model.compile(jit_compile=False, **{"optimizer": keras.optimizers.Adam(1e-2), **kwargs})
    return model


def vae_model(**kwargs):
    keras.utils.set_random_seed(0)
    model = tfnf.FlowVAE(
        latent_size=2, hidden_units=6, num_layers=2, data_size=12, seed=0, dtype="float64"
    )
    model.compile(jit_compile=False, **{"optimizer": keras.optimizers.Adam(1e-2), **kwargs})
    return model


def images(n=8):
    return (np.random.default_rng(0).random((n, 12)) < 0.5).astype("float32")


def fit(model, steps, **kwargs):
    if isinstance(model, tfnf.NormalizingFlow):
        return model.fit(steps=steps, batch_size=16, verbose=0, **kwargs)
    return model.fit(images(4 * steps), batch_size=4, shuffle=False, verbose=0, **kwargs)


MODELS = {"flow": flow_model, "vae": vae_model}


@pytest.mark.parametrize("rate", [math.nan, math.inf, -1e-3])
@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_a_bad_learning_rate_is_refused_before_any_step(make, rate):
    model = make(optimizer=keras.optimizers.Adam(rate))
    before = weights(model)
    with pytest.raises(
        ValueError, match="the optimizer's learning rate must be a finite number >= 0"
    ):
        fit(model, 2)
    assert int(model.optimizer.iterations) == 0
    for a, b in zip(weights(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


class _NanAfter(keras.optimizers.schedules.LearningRateSchedule):
    """1e-2 for the first `steps` updates, NaN after: a rate that no check before fit can see."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, step):
        return keras.ops.where(step < self.steps, 1e-2, math.nan)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_a_rate_turning_nan_mid_run_stops_there_and_the_message_is_true(make):
    model = make(optimizer=keras.optimizers.Adam(_NanAfter(3)))
    with pytest.raises(tfnf.NonFiniteLossError, match="at training step 4: .* after step 3"):
        fit(model, 6)
    reference = make()
    fit(reference, 3)  # the same run stopped after step 3
    for a, b in zip(weights(model), weights(reference), strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


class _Explodes(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise RuntimeError("a callback failed")


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_a_failure_during_fit_restores_the_weights_and_optimizer_state(make):
    model = make()
    fit(model, 2)
    before = weights(model) + [v.numpy().copy() for v in model.optimizer.variables]
    with pytest.raises(RuntimeError, match="a callback failed") as raised:
        fit(model, 4, callbacks=[_Explodes()])
    assert any(
        "restored to those before this fit" in note
        for note in getattr(raised.value, "__notes__", [""])
    )
    after = weights(model) + [v.numpy().copy() for v in model.optimizer.variables]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations) == 2


def test_weights_that_overflowed_are_restored_and_said_to_be():
    # Finite loss, gradients (1e30) and rate (1e10), but an update that overflows float32.
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=2,
        num_layers=2,
        target_log_prob=lambda z: 1e30 * keras.ops.sum(z, axis=-1),
        seed=0,
        dtype="float32",
    )
    model.compile(optimizer=keras.optimizers.SGD(1e10), jit_compile=False)
    before = weights(model)
    with pytest.raises(tfnf.NonFiniteLossError, match="restored to those before this fit"):
        model.fit(steps=5, batch_size=16, verbose=0)
    for a, b in zip(weights(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_class_and_sample_weights_are_refused(make):
    model = make()
    with pytest.raises(ValueError, match="does not take `class_weight`: the model has no classes"):
        fit(model, 1, class_weight={0: 1.0})
    assert int(model.optimizer.iterations) == 0


# -- KeepBest: early stopping whose best weights survive an interruption ------------------------

SCORES = [3.0, 1.0, 2.0, 0.5, 4.0, 5.0, 6.0, 7.0, 8.0]  # the best is epoch 3's


class _Score(keras.callbacks.Callback):
    """Writes SCORES[epoch] into the logs (callbacks share them) and keeps each epoch's weights."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = SCORES[epoch]
        self.weights[epoch] = weights(self.model)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 4:
            raise KeyboardInterrupt


def flow(seed=2):
    keras.utils.set_random_seed(seed)
    model = tfnf.NormalizingFlow(2, 2, target_log_prob="U1", seed=seed, dtype="float64")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    return model


def test_keep_best_stops_after_patience_and_restores_the_best_epochs_weights(tmp_path):
    model, score = flow(), _Score()
    keep = tfnf.models.KeepBest(tmp_path / "best", monitor="score", mode="min", patience=3)
    history = model.fit(
        steps=90, steps_per_epoch=10, batch_size=32, verbose=0, callbacks=[score, keep]
    )
    assert len(history.history["loss"]) == 7  # epochs 4, 5, 6 do not improve on epoch 3
    assert (keep.best, keep.best_epoch, keep.stopped_epoch) == (0.5, 3, 6)
    for restored, best in zip(weights(model), score.weights[3], strict=True):
        np.testing.assert_array_equal(restored, best)


def test_keep_best_resumes_its_record_after_an_interruption(tmp_path):
    straight, score = flow(), _Score()
    keep = tfnf.models.KeepBest(tmp_path / "a", monitor="score", mode="min", patience=3)
    straight.fit(steps=90, steps_per_epoch=10, batch_size=32, verbose=0, callbacks=[score, keep])

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    keep = tfnf.models.KeepBest(tmp_path / "b", monitor="score", mode="min", patience=3)
    with pytest.raises(KeyboardInterrupt):
        flow().fit(
            steps=90,
            steps_per_epoch=10,
            batch_size=32,
            verbose=0,
            callbacks=[_Score(), backup, keep, _Interrupt()],
        )
    resumed = flow()
    keep = tfnf.models.KeepBest(tmp_path / "b", monitor="score", mode="min", patience=3)
    history = resumed.fit(
        steps=90, steps_per_epoch=10, batch_size=32, verbose=0, callbacks=[_Score(), backup, keep]
    )
    assert len(history.history["loss"]) == 2  # epochs 5 and 6: patience ran on from epoch 4
    assert (keep.best, keep.best_epoch, keep.stopped_epoch) == (0.5, 3, 6)
    for a, b in zip(weights(resumed), score.weights[3], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_keep_best_names_a_missing_metric_and_bad_arguments(tmp_path):
    with pytest.raises(KeyError, match="the logs have no 'val_elbo'"):
        flow().fit(steps=10, batch_size=8, verbose=0, callbacks=[tfnf.models.KeepBest(tmp_path)])
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'up'"):
        tfnf.models.KeepBest(tmp_path, mode="up")
    with pytest.raises(ValueError, match="patience"):
        tfnf.models.KeepBest(tmp_path, patience=0)


class _Ticks(keras.callbacks.Callback):
    """A fake clock for TimeBudget: every epoch takes `seconds[epoch]`."""

    def __init__(self, monkeypatch, seconds):
        super().__init__()
        self.now, self.seconds = 0.0, seconds
        monkeypatch.setattr(tfnf.models.training.time, "perf_counter", lambda: self.now)

    def on_epoch_begin(self, epoch, logs=None):
        self.now += self.seconds[epoch]


def test_time_budget_stops_before_an_epoch_would_overrun_and_resumes_its_clock(
    tmp_path, monkeypatch
):
    ticks = _Ticks(monkeypatch, [3.0] * 20)
    budget = tfnf.models.TimeBudget(10.0, tmp_path / "clock")
    history = flow().fit(
        steps=200, steps_per_epoch=10, batch_size=8, verbose=0, callbacks=[ticks, budget]
    )
    # 3 epochs spend 9 s; a fourth of 3 s would end at 12 s > 10 s
    assert len(history.history["loss"]) == 3
    assert (budget.seconds_spent, budget.epochs_done, budget.spent) == (9.0, 3, True)

    # a run interrupted after 2 epochs (6 s) resumes with 6 s spent: 1 more epoch fits a 10 s budget
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    ticks = _Ticks(monkeypatch, [3.0] * 20)
    clock = tfnf.models.TimeBudget(10.0, tmp_path / "resumed")
    flow().fit(
        steps=20, steps_per_epoch=10, batch_size=8, verbose=0, callbacks=[ticks, backup, clock]
    )
    assert (clock.seconds_spent, clock.spent) == (6.0, False)
    again = tfnf.models.TimeBudget(10.0, tmp_path / "resumed")
    assert (again.seconds_spent, again.epochs_done, again.exhausted()) == (6.0, 2, False)
    history = flow().fit(
        steps=200, steps_per_epoch=10, batch_size=8, verbose=0, callbacks=[ticks, backup, again]
    )
    assert len(history.history["loss"]) == 1
    assert (again.seconds_spent, again.epochs_done, again.spent) == (9.0, 3, True)
    assert tfnf.models.TimeBudget(10.0, tmp_path / "resumed").exhausted()
    with pytest.raises(ValueError, match="seconds must be a finite number > 0, got 0"):
        tfnf.models.TimeBudget(0)


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_the_traced_step_runs_no_autograph_conversion_of_tfnf_code(make, jit_compile, monkeypatch):
    # AutoGraph's source-to-source conversion of the step's functions took 3 s of the
    # 4.9 s of tracing a K = 32 flow's first step (profiled, benchmarks/RESULTS.md); tfnf's
    # step is plain graph code and is traced as it is.
    from tensorflow.python.autograph.impl import api

    converted = []
    convert = api._convert_actual

    def recording(entity, program_ctx):
        converted.append(getattr(entity, "__module__", "") or "")
        return convert(entity, program_ctx)

    monkeypatch.setattr(api, "_convert_actual", recording)

    @tf.function
    def probe(x):  # the probe sees AutoGraph at work
        return x + 1 if x.shape.rank else x

    probe(tf.constant(1.0))
    assert converted == [__name__], converted
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    fit(model, 2)
    if isinstance(model, tfnf.FlowVAE):
        model.evaluate(images(8), batch_size=4, verbose=0)
    assert not [m for m in converted if m.startswith("tfnf")], converted
