"""What tfnf's models share: the guarded reverse-KL update, step seeds, XLA, the non-finite stop.

References:
    Rezende & Mohamed (2015), section 6 (annealed free energy).
"""

import json
import math
import pathlib
import random
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfnf import _checks
from tfnf.models.objectives import annealed_free_energy, beta_at
from tfnf.sampling import ReplicaRows

__all__ = [
    "GuardedTraining",
    "KeepBest",
    "NonFiniteLossError",
    "StopOnNonFinite",
    "TimeBudget",
    "Update",
]


class NonFiniteLossError(FloatingPointError):
    """Training met a non-finite loss or gradient; the offending update was not applied."""


class Update(NamedTuple):
    """What one guarded update computed, for the trackers."""

    finite: tf.Tensor  # whether the update was applied (loss and gradients finite)
    beta: tf.Tensor  # the inverse temperature of the step
    log_q: tf.Tensor  # [n] ln q at the step's samples
    log_p: tf.Tensor  # [n] ln p~ there
    per_sample: tf.Tensor  # [n] ln q - beta ln p~ - (1 - beta) ln r
    loss: tf.Tensor  # mean of per_sample
    bound: tf.Tensor  # mean(ln q - ln p~)


def multi_worker(strategy) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy running with several workers."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )  # as Keras' own test before reducing


def available_memory() -> int | None:
    """Bytes of memory free for a step on this machine's CPU; None where unknown (or on a GPU)."""
    if tf.config.list_logical_devices("GPU"):
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def under_strategy(model: keras.Model) -> bool:
    """Whether the model was made, or is used, under a `tf.distribute` strategy."""
    return getattr(model, "_distribute_strategy", None) is not None or tf.distribute.has_strategy()


class GuardedTraining:
    """Mixed into a `keras.Model` (before it): XLA on, stateless seeds, non-finite steps skipped.

    The model calls `_init_training(seed)` in `__init__`, and its `train_step`
    calls `_guarded_update` with a function that draws the step's samples and
    `_track` with what the trackers should see. `fit` resets the non-finite
    record and stops on the first non-finite step (`StopOnNonFinite`).
    `beta_schedule` (a float, or a Keras schedule of the step) anneals the target.
    """

    beta_schedule = 1.0

    def _float_policy(self):
        """The model's dtype policy, if float32 or float64 throughout; else a TypeError."""
        policy = self.dtype_policy
        if (
            policy.compute_dtype not in ("float32", "float64")
            or policy.variable_dtype != policy.compute_dtype
        ):
            raise TypeError(
                f"{type(self).__name__}: dtype must be float32 or float64, got {policy.name!r}."
            )
        return policy

    def _init_training(self, seed: int | None):
        # The sampler's seed at step t is (seed, t): stateless, so a run restored by
        # BackupAndRestore (which restores the optimizer's step) draws what it would have.
        seed = _checks.seed(seed)
        self._sampler_seed = seed if seed is not None else random.randrange(_checks.MAX_SEED + 1)
        # Under a tf.distribute strategy every replica records the same step (the
        # finiteness test is all-reduced), so the first replica's write stands.
        self.first_non_finite_step = keras.Variable(
            -1,
            dtype="int64",
            trainable=False,
            name="first_non_finite_step",
            aggregation="only_first_replica",
        )

    def _step_seed(self) -> tf.Tensor:
        return tf.stack(
            [
                tf.constant(self._sampler_seed, tf.int32),
                tf.cast(self.optimizer.iterations, tf.int32),
            ]
        )

    def _beta(self) -> tf.Tensor:
        return beta_at(self.beta_schedule, self.optimizer.iterations, self.compute_dtype)

    # -- the update -------------------------------------------------------

    def _guarded_update(
        self,
        draw: Callable[[], tuple],
        rows: ReplicaRows | None,
        objective: Callable[..., tf.Tensor] | None = None,
    ) -> tuple:
        """One step on the annealed reverse KL, applied only if finite.

        The loss is mean(ln q - beta ln p~ - (1 - beta) ln r) (`annealed_free_energy`),
        or the mean of `objective(beta, *draw())` where one is given.

        Arguments:
            draw: () -> (ln q [n], ln p~ [n], ln r [n] or None, *more), run under the tape:
                the densities of the flow, of the (unnormalised) target and of the
                annealing's reference (None: the paper's flat start) at this step's n samples.
            rows: this replica's slice of the global batch (None on one device): the
                strategy sums the replicas' gradients, so each takes its share of the global mean.
            objective: None, or (beta, ln q, ln p~, ln r, *more) -> [n], the per-sample loss.
        Returns:
            (Update, *more).
        """
        beta = self._beta()
        with tf.GradientTape() as tape:
            log_q, log_p, log_reference, *more = draw()
            if objective is None:
                per_sample = annealed_free_energy(log_q, log_p, beta, log_reference)
            else:
                per_sample = objective(beta, log_q, log_p, log_reference, *more)
            loss = tf.reduce_mean(per_sample)
            share = (
                loss
                if rows is None
                else tf.reduce_sum(per_sample) / tf.cast(rows.total, loss.dtype)
            )
        variables = self.trainable_variables
        finite = self._apply_if_finite(loss, tape.gradient(share, variables), variables)
        return (
            Update(finite, beta, log_q, log_p, per_sample, loss, tf.reduce_mean(log_q - log_p)),
            *more,
        )

    def _apply_if_finite(self, loss: tf.Tensor, grads: list, variables: list) -> tf.Tensor:
        """Apply the update if loss and gradients are finite; returns that condition.

        A non-finite step, and every step after it, is skipped entirely (no
        moment updates either), so the weights stay those of the last good step
        even when several steps run per execution; `StopOnNonFinite` reads the
        recorded step and stops `fit`. Under a `tf.distribute` strategy the
        replicas agree: a step is skipped everywhere if it is not finite on one.
        """
        # A non-finite learning rate would write NaN from finite gradients: it skips the step too.
        rate = tf.cast(self.optimizer.learning_rate, loss.dtype)
        finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            + [tf.math.is_finite(loss), tf.math.is_finite(rate)]
        )
        replica = tf.distribute.get_replica_context()
        if (
            replica is not None and replica.num_replicas_in_sync > 1
        ):  # every replica takes the same branch
            finite = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.int32)) == 0
        apply = finite & (self.first_non_finite_step < 0)
        if (
            tf.distribute.has_strategy()
            and not tf.__internal__.distribute.strategy_supports_no_merge_call()
        ):
            # The optimizer's all-reduce is a merge_call, which no strategy allows inside a cond in
            # replica context: the cond moves to cross-replica context, as Keras'
            # LossScaleOptimizer does.
            def cross_replica(strategy, apply, grads):
                def update():
                    return strategy.extended.call_for_each_replica(
                        self.optimizer.apply, args=(grads, variables)
                    )

                tf.cond(strategy.experimental_local_results(apply)[0], update, lambda: None)

            replica.merge_call(cross_replica, args=(apply, grads))
        else:
            tf.cond(apply, lambda: self.optimizer.apply(grads, variables), lambda: None)
        self.first_non_finite_step.assign(
            tf.where(
                (self.first_non_finite_step < 0) & ~finite,
                tf.cast(self.optimizer.iterations, tf.int64),
                self.first_non_finite_step,
            )
        )
        return finite

    def _track(self, finite: tf.Tensor, values: dict) -> dict:
        """Update each tracker with its value (NaN where the step was skipped); their results.

        Arguments:
            finite: whether the step's update was applied.
            values: {tracker: tensor}; a tensor of per-sample values counts each sample once.
        """
        for tracker, value in values.items():
            tracker.update_state(tf.where(finite, value, tf.constant(math.nan, value.dtype)))
        return self._results()

    def _results(self) -> dict:
        """The trackers' results, as `train_step` returns them.

        A multi-worker strategy reduces them with `strategy.reduce(MEAN, axis=0)`,
        which needs a leading axis: there each is returned as shape [1].
        """
        results = {m.name: m.result() for m in self.metrics}
        if multi_worker(self.distribute_strategy):
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    # -- compile and fit --------------------------------------------------

    def compile(self, optimizer="rmsprop", *, jit_compile="auto", **kwargs):
        """As `keras.Model.compile`, except that "auto" means XLA on a CPU too, outside a strategy.

        Keras turns XLA off on CPU-only machines; for a flow, whose K maps run as
        one loop, XLA is several times faster there (benchmarks/RESULTS.md).
        Under a strategy the update is applied across replicas, which XLA cannot
        compile, so "auto" means no XLA there; nor for a target that says it
        compiles badly (`xla_friendly = False`, e.g. a `JointTarget` of an auto-batched model).
        """
        if jit_compile == "auto":
            jit_compile = not (
                kwargs.get("run_eagerly", False)
                or tf.distribute.has_strategy()
                or not self._xla_friendly()
            )
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        # The weights exist from __init__ on, so the optimizer's state can too: a
        # model saved before any fit then loads its optimizer without mismatch.
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def _xla_friendly(self) -> bool:
        """Whether XLA helps this model's step; one whose parts compile badly says no."""
        return True

    def compile_from_config(self, config):
        # Keras skips compile() on load when it is overridden; this one is safe to call.
        self.compile(**keras.saving.deserialize_keras_object(config))

    def _check_compiled(self):
        if getattr(self, "optimizer", None) is None:
            raise ValueError(f"{type(self).__name__}.fit: call compile(optimizer=...) first.")
        rate = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(
                f"{type(self).__name__}.fit: the optimizer's learning rate must be a finite "
                f"number >= 0, got {rate}."
            )

    # fit arguments without a meaning for the model, refused before any work
    unsupported_fit_arguments = {
        "class_weight": "the model has no classes",
        "sample_weight": "every sample counts once in the objective",
    }

    def _check_fit_arguments(self, kwargs: dict):
        for name, why in self.unsupported_fit_arguments.items():
            if kwargs.get(name) is not None:
                raise ValueError(f"{type(self).__name__}.fit does not take `{name}`: {why}.")

    def _state(self) -> list:
        """Every variable that training changes: weights, optimizer state, the non-finite record."""
        unique = {id(v): v for v in [*self.variables, *self.optimizer.variables]}
        return list(unique.values())

    def fit(self, x=None, y=None, *, callbacks=None, **kwargs):
        """As `keras.Model.fit`, stopping at the first non-finite step; a failure loses nothing.

        If `fit` raises (a callback failing, ...), every weight and the optimizer's
        state are restored to what they were before the call, so the model is as it
        was; an interrupt (Ctrl-C) keeps the steps that finished. A failed XLA
        allocation cannot be undone (TF's variables are unusable after it): it is
        refused before compiling where the step's size is known
        (`NormalizingFlow.fit`), and otherwise reported with a note to reload.

        Raises:
            tfnf.models.NonFiniteLossError: a loss, gradient or learning rate was NaN or inf; the
                update was skipped and the weights are those after the last good step.
        """
        self._check_compiled()
        self._check_fit_arguments(kwargs)
        # Copies (not variables, which Keras would track as the model's own), set past
        # Keras' attribute tracking.
        snapshot = [np.array(v.numpy()) for v in self._state()]  # .numpy(): mirrored ones too
        object.__setattr__(self, "_fit_snapshot", snapshot)
        self.first_non_finite_step.assign(-1)
        try:
            return super().fit(x, y, callbacks=[*(callbacks or []), StopOnNonFinite()], **kwargs)
        except (NonFiniteLossError, KeyboardInterrupt):
            raise
        except tf.errors.ResourceExhaustedError as error:
            # A failed XLA allocation leaves the variables' buffers unusable: even reading
            # them to restore can crash, so the user is told to reload rather than trust them.
            if hasattr(error, "add_note"):
                error.add_note(
                    f"tfnf: {type(self).__name__}'s variables cannot be trusted after a failed "
                    "allocation; load the model from its last saved file."
                )
            raise
        except Exception as error:
            self._restore_snapshot()
            if hasattr(error, "add_note"):
                error.add_note(
                    f"tfnf: {type(self).__name__}'s weights and optimizer state were restored "
                    "to those before this fit."
                )
            raise
        finally:
            object.__setattr__(self, "_fit_snapshot", None)

    def _restore_snapshot(self):
        snapshot = getattr(self, "_fit_snapshot", None)
        for variable, value in zip(self._state(), snapshot or [], strict=snapshot is not None):
            variable.assign(value)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite loss and names the step.

    With Keras' `TerminateOnNaN` among the callbacks the run stops quietly, as
    Keras users expect; otherwise it raises `NonFiniteLossError`.
    """

    def on_train_batch_end(self, batch, logs=None):
        # 1-based; 0 means none. (int() of a mirrored variable raises; .numpy() reads the
        # first replica's, which all share.)
        step = int(self.model.first_non_finite_step.numpy()) + 1
        if step == 0:
            return
        message = (
            f"Non-finite loss, gradient or learning rate at training step {step}: the update "
            f"was skipped and the weights are those after step {step - 1}."
        )
        weights = self.model.trainable_variables
        if not all(np.all(np.isfinite(w.numpy())) for w in weights):
            # An earlier update wrote non-finite weights from finite inputs (an overflow):
            # nothing after the fit began can be trusted, so it is undone.
            self.model._restore_snapshot()
            message = (
                f"Non-finite weights after training step {step - 1} (an update overflowed): "
                "the weights and optimizer state are restored to those before this fit."
            )
        if self.model.stop_training:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return
        self.model.stop_training = True
        raise NonFiniteLossError(message)


class KeepBest(keras.callbacks.Callback):
    """Early stopping with the best weights kept on disk: `EarlyStopping(restore_best_weights=True)`
    that survives an interruption.

    At the end of each epoch it compares `logs[monitor]` with the best so far;
    an improvement writes the weights to `directory/best.weights.h5` and its
    record (best value, its epoch, epochs since) to `directory/best.json`. After
    `patience` epochs without one it stops training. When training ends, for
    whatever reason, the best weights are loaded back. A run restarted with the
    same `directory` (beside `keras.callbacks.BackupAndRestore`, which resumes the
    weights, optimizer and epoch) picks up the record, so its best and its
    patience carry on where they were. A non-finite value never counts as better.

    Arguments:
        directory: where the best weights and their record live (made if missing).
        monitor: the logged number to watch, e.g. "val_elbo" (with validation data).
        mode: "max" or "min".
        patience: epochs without improvement before stopping; None never stops.
    """

    def __init__(self, directory, monitor: str = "val_elbo", mode: str = "max", patience=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        if patience is not None:
            patience = _checks.positive_int(patience, "patience")
        self.directory = pathlib.Path(directory)
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, None, 0, None

    @property
    def _weights_path(self) -> pathlib.Path:
        return self.directory / "best.weights.h5"

    @property
    def _record_path(self) -> pathlib.Path:
        return self.directory / "best.json"

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stopped_epoch = None
        if self._record_path.exists():
            record = json.loads(self._record_path.read_text())
            self.best, self.best_epoch, self.wait = record["best"], record["epoch"], record["wait"]
        else:
            self.best, self.best_epoch, self.wait = None, None, 0

    def stopped_before(self) -> bool:
        """Whether the record in `directory` says an earlier run already ran out of patience."""
        if self.patience is None or not self._record_path.exists():
            return False
        return json.loads(self._record_path.read_text())["wait"] >= self.patience

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.monitor not in logs:
            raise KeyError(
                f"KeepBest: the logs have no {self.monitor!r} (they have "
                f"{', '.join(sorted(logs or {})) or 'nothing'}); pass validation data for val_ "
                "metrics."
            )
        value = float(logs[self.monitor])
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.model.save_weights(str(self._weights_path))
        else:
            self.wait += 1
        record = {"best": self.best, "epoch": self.best_epoch, "wait": self.wait}
        partial = self._record_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(record) + "\n")
        partial.replace(self._record_path)  # the record changes all at once
        if self.patience is not None and self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._weights_path.exists():
            self.model.load_weights(str(self._weights_path))


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` before its wall-clock time passes a budget, counted across restarts.

    Each epoch's end adds the time since training began (or the last epoch
    end) to the total; if another epoch as long as the last one would take the
    total past `seconds`, training stops there, so a run never overruns its budget
    by a partial epoch. With a `directory` the total and the epochs done are kept
    in `directory/clock.json` (beside `keras.callbacks.BackupAndRestore` and
    `KeepBest`), so a run restarted after an interruption spends only what is left.
    The time counts everything `fit` does between epochs' starts and ends,
    validation included.

    Arguments:
        seconds: the budget, > 0; None only keeps the clock.
        directory: where the clock's record lives (made if missing), or None.
    Attributes:
        seconds_spent: the total so far, restarts included.
        epochs_done: epochs finished, restarts included.
        spent: whether training stopped because the budget ran out.
    """

    def __init__(self, seconds: float | None = None, directory=None):
        super().__init__()
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"TimeBudget: seconds must be a finite number > 0, got {seconds!r}.")
        self.seconds = seconds
        self.directory = None if directory is None else pathlib.Path(directory)
        self.seconds_spent, self.epochs_done, self.spent = 0.0, 0, False
        self._mark = None
        if self._record_path is not None and self._record_path.exists():
            self._read()

    @property
    def _record_path(self) -> pathlib.Path | None:
        return None if self.directory is None else self.directory / "clock.json"

    def _read(self):
        record = json.loads(self._record_path.read_text())
        self.seconds_spent, self.epochs_done = record["seconds"], record["epochs"]
        self.spent = record["spent"]

    def exhausted(self) -> bool:
        """Whether the recorded total already leaves no room for another epoch."""
        return self.spent

    def on_train_begin(self, logs=None):
        if self._record_path is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._record_path.exists():
                self._read()
        self._mark = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        last, self._mark = now - self._mark, now
        self.seconds_spent += last
        self.epochs_done = epoch + 1
        if self.seconds is not None and self.seconds_spent + last > self.seconds:
            self.spent = True
            self.model.stop_training = True
        if self._record_path is not None:
            record = {
                "seconds": self.seconds_spent,
                "epochs": self.epochs_done,
                "spent": self.spent,
            }
            partial = self._record_path.with_suffix(".json.partial")
            partial.write_text(json.dumps(record) + "\n")
            partial.replace(self._record_path)
