"""The flow model: q_K, K maps of a base, fitted to a target by reverse KL without data.

References:
    Rezende & Mohamed (2015), sections 4 and 6, eq. 13.
"""

import math
from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import _checks, layers, sampling, targets
from tfnf._checks import positive_int
from tfnf.models.objectives import ANNEALING_REFERENCES, Schedule, paper_annealing
from tfnf.models.training import GuardedTraining, available_memory, under_strategy

__all__ = ["NormalizingFlow", "fit_flow"]

tfd = tfp.distributions
tfb = tfp.bijectors


@keras.saving.register_keras_serializable(package="tfnf")
class NormalizingFlow(GuardedTraining, keras.Model):
    """q_K = K flow maps applied to a base q0, fitted to a target by reverse KL.

    `distribution` is a `tfd.TransformedDistribution` built from the current
    weights. `fit` needs no data: each step draws `batch_size` samples of q and
    minimises mean(log q - beta_t log p~) (section 6).

    Arguments:
        event_size: D, the dimension of z.
        num_layers: K >= 0, the number of maps; they live in one layer, `flow_layer`
            (None for K = 0, where q is the base: the mean-field or full-rank Gaussian).
        flow: "planar", "radial", "sylvester", "nice" or "hamiltonian" (see
            `tfnf.layers.FLOWS`). "hamiltonian" is target-informed: L = num_layers tempered
            leapfrog steps along the target's gradient on the extended space (z, rho)
            (`tfnf.layers.HamiltonianFlow`; `flow_options={"planar_layers": K}` warps the
            base by K planar maps first); it trains on the ELBO of the extended space.
        target_log_prob: a name from `tfnf.targets.names()`, a callable z [..., D] -> [...],
            or a `tfd.Distribution`. Only registry names survive `save`; after
            `load_model` assign `model.target_log_prob` to train a model whose
            target was a callable.
        trainable_base: learn the base mean and scale (default) or keep N(0, I).
        base: "diagonal", N(loc, diag(scale^2)) (the paper's), or "full_rank", N(loc, L L^T)
            by TFP's Shift o ScaleMatvecTriL (`tfnf.layers.FullRankNormal`).
        beta_schedule: inverse temperature, a float or a Keras schedule of the
            step (e.g. `paper_annealing()`); 1.0 by default.
        anneal_from: where annealing starts: None, the paper's p~^beta (nearly flat
            at small beta), or "standard_normal", the geometric path
            N(0, I)^(1 - beta) p~^beta from the flow's initial q to the target
            (`objectives.annealed_free_energy`). Nothing changes at beta = 1.
        box: None, or (lo, hi): fit the target restricted to [lo, hi]^D with Gaussian
            tails outside (`tfnf.targets.Restricted`), for targets that are not
            normalisable. `loss` and `bound` are then those of the restricted target.
        flow_options: keyword arguments of the flow layer, e.g.
            `{"initializer": "random_normal", "start_at_identity": False}`.
        seed: seed of the sampler; step t draws with the stateless seed (seed, t),
            so runs repeat exactly and resume exactly after BackupAndRestore.
    """

    def __init__(
        self,
        event_size: int,
        num_layers: int,
        flow: str = "planar",
        target_log_prob=None,
        trainable_base: bool = True,
        beta_schedule: Schedule = 1.0,
        flow_options: dict | None = None,
        seed: int | None = None,
        base: str = "diagonal",
        anneal_from: str | None = None,
        box=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        dtype = self._float_policy()
        self.event_size = positive_int(event_size, "event_size")
        self.num_layers = positive_int(num_layers, "num_layers", minimum=0)
        self.flow = flow
        self.trainable_base = _checks.boolean(trainable_base, "trainable_base")
        self.flow_options = dict(flow_options or {})
        flow_class = layers.get_flow(flow)
        if base not in layers.BASES:
            raise ValueError(
                f"base must be one of {', '.join(sorted(layers.BASES))}, got {base!r}."
            )
        self.base_kind = base
        self.base = layers.BASES[base](trainable=self.trainable_base, dtype=dtype, name="base")
        self.base.build((event_size,))
        self.flow_layer = None
        if flow == "hamiltonian" and not num_layers:
            raise ValueError(
                "num_layers: the Hamiltonian flow needs at least one leapfrog step, got 0."
            )
        if num_layers:
            self.flow_layer = flow_class(
                num_layers=num_layers, dtype=dtype, name=flow, **self.flow_options
            )
            self.flow_layer.build((event_size,))
        self._init_training(seed)
        self.beta_schedule = _checked_schedule(beta_schedule)
        if anneal_from not in ANNEALING_REFERENCES:
            raise ValueError(f"anneal_from must be None or 'standard_normal', got {anneal_from!r}.")
        self.anneal_from = anneal_from
        self.box = None if box is None else _checks.box(box, "box")
        self.target_log_prob = target_log_prob
        self.batch_size = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.bound_tracker = keras.metrics.Mean(name="bound")
        self.beta_tracker = keras.metrics.Mean(name="beta")
        self.built = True

    # -- the distribution -------------------------------------------------

    @property
    def extended(self) -> bool:
        """True for a flow on the extended space (z, rho), the Hamiltonian flow."""
        return isinstance(self.flow_layer, layers.HamiltonianFlow)

    @property
    def bijector(self) -> tfb.Bijector:
        """f_K o ... o f_1 built from the current weights.

        For planar and radial flows a `tfnf.bijectors.Stack`: the same map as
        `tfb.Chain([f_K, ..., f_1])`, traced as one loop so tracing and
        compiling do not grow with K.
        """
        if self.extended:
            return self.flow_layer.bijector(self._dynamics_target())
        return self.flow_layer.bijector() if self.flow_layer is not None else tfb.Identity()

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """q_K, a `tfd.TransformedDistribution` of the base under the flow (eq. 13).

        For the Hamiltonian flow, the joint q(z, rho) over the extended space, event
        [2D] = concat(z, rho), with its exact density: the position's distribution and
        rho ~ N(0, M / beta_0) side by side (`tfd.Blockwise`), under the dynamics. Its
        marginal q(z) has no closed form; `extended_target_log_prob` is the matching
        target, so `tfnf.diagnostics.bound(model.distribution, model.extended_target_log_prob)`
        is the bound the flow is trained on.
        """
        if self.extended:
            joint = tfd.Blockwise(
                [self._position_distribution(), self.flow_layer.momentum_distribution(True)]
            )
            return tfd.TransformedDistribution(joint, self.bijector)
        return sampling.FlowDistribution(self.base.distribution(), self.bijector)

    def _position_distribution(self) -> tfd.Distribution:
        """The Hamiltonian flow's q0(z): the base, warped by its planar maps if it has any."""
        warp = self.flow_layer.warp
        base = self.base.distribution()
        return base if warp is None else sampling.FlowDistribution(base, warp.bijector())

    def _dynamics_target(self) -> Callable:
        if self._fitted_log_prob is None:
            raise ValueError(
                "target_log_prob: the Hamiltonian flow moves along the target's gradient and "
                "needs a target before it can sample or evaluate a density."
            )
        return self._fitted_log_prob

    def extended_target_log_prob(self, x: tf.Tensor) -> tf.Tensor:
        """ln p~(z) + ln N(rho; 0, M), the Hamiltonian flow's target on x = concat(z, rho).

        Its normaliser is the target's: E_q[extended - ln q(z, rho)] <= ln Z.
        """
        z, rho = self._split(x)
        return self._dynamics_target()(z) + self.flow_layer.momentum_log_prob(rho)

    def _split(self, x: tf.Tensor) -> tuple:
        return x[..., : self.event_size], x[..., self.event_size :]

    def surrogate_posterior(self, bijector: tfb.Bijector | None = None) -> tf.Module:
        """q_K for `tfp.vi`: rebuilt from this model's weights at each use, holding them.

        A `tfp.experimental.util.DeferredModule`: it forwards every method
        (`sample`, `log_prob`, ...) to `distribution` built afresh, and its
        `trainable_variables` are this model's Keras weights, so
        `tfp.vi.fit_surrogate_posterior(target, model.surrogate_posterior(), optimizer, ...)`
        trains the model itself (with a Keras optimizer such as `model.optimizer`).
        It is not an instance of `tfd.Distribution` (TFP's own deferred
        surrogates are not either); `distribution` is, but holds tensors.

        Arguments:
            bijector: a map applied to q_K, e.g. `tfnf.targets.JointTarget.bijector`, so
                that samples come in a joint model's structure and support.
        """

        def build(*_):  # the weights are read through the model; passing them makes them tracked
            q = self.distribution
            return q if bijector is None else tfd.TransformedDistribution(q, bijector)

        return tfp.experimental.util.DeferredModule(
            build, *[w.value for w in self.trainable_weights]
        )

    def sample_and_log_prob(self, n: int, seed, rows=None) -> tuple:
        """n draws z of q_K and ln q_K(z), in one forward sweep: what `train_step` uses.

        The same pair as `distribution.experimental_sample_and_log_prob`, with
        the base drawn by its own `sample_and_log_prob` (Philox) and pushed through
        the maps by `sampling.push_forward` (eq. 13).

        Arguments:
            n: number of draws.
            seed: stateless seed, a pair of integers.
            rows: None, or a `sampling.ReplicaRows`: the n draws are that slice of the
                global batch's draw (one replica's share under a strategy).
        Returns:
            (z [n, D], ln q_K(z) [n]); for the Hamiltonian flow (x [n, 2D], ln q(x) [n]),
            x = concat(z, rho) on the extended space.
        """
        if not self.extended:
            return sampling.push_forward(
                self.bijector, *self.base.sample_and_log_prob(n, seed, rows)
            )
        z, log_q = self.base.sample_and_log_prob(n, seed, rows)
        if self.flow_layer.warp is not None:
            z, log_q = sampling.push_forward(self.flow_layer.warp.bijector(), z, log_q)
        scale = self.flow_layer.momentum_scale(at_start=True)
        momentum_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        rho, log_r = sampling.diagonal_normal_draw(
            tf.zeros_like(scale), scale, [n], momentum_seed, rows
        )
        return sampling.push_forward(self.bijector, tf.concat([z, rho], -1), log_q + log_r)

    def call(self, n):
        """Draw n samples of q_K: [n, D] (for the Hamiltonian flow, the positions z_L)."""
        sample = self.distribution.sample(n)
        return self._split(sample)[0] if self.extended else sample

    # -- the target -------------------------------------------------------

    @property
    def target_log_prob(self) -> Callable | None:
        return self._target_log_prob

    @target_log_prob.setter
    def target_log_prob(self, target):
        self._target_spec = target if isinstance(target, str) else _registered_name(target)
        self._target_log_prob = None if target is None else self._checked_target(target)
        self._fitted_log_prob = self._target_log_prob
        if self.box is not None and target is not None:
            self._fitted_log_prob = targets.Restricted(self._target_log_prob, self.box)

    def _checked_target(self, target) -> Callable:
        if isinstance(target, tfd.Distribution):
            event_shape = target.event_shape
            if event_shape.rank is not None and event_shape != [self.event_size]:
                raise ValueError(
                    f"target_log_prob: the distribution's event_shape {event_shape} does not "
                    f"match event_size={self.event_size}."
                )
        log_prob = targets.as_log_prob(target)
        # Two batch sizes no user picks, so a fixed-size output or a batch of distributions shows.
        for rows in PROBE_ROWS:
            probe = tf.zeros([rows, self.event_size], self.compute_dtype)
            try:
                out = tf.convert_to_tensor(log_prob(probe))
            except Exception as error:
                raise ValueError(
                    f"target_log_prob failed on z of shape {tuple(probe.shape)} "
                    f"(event_size={self.event_size}): {error}"
                ) from error
            if out.shape != [rows]:
                raise ValueError(
                    f"target_log_prob must map z [..., D] to [...]; for z of shape "
                    f"{tuple(probe.shape)} it returned shape {tuple(out.shape)}, "
                    f"expected ({rows},)."
                )
            if out.dtype != probe.dtype:
                raise TypeError(
                    f"target_log_prob must return log-densities of the model's dtype: for "
                    f"{probe.dtype.name} z it returned {out.dtype.name}."
                )
        return log_prob

    # -- training ---------------------------------------------------------

    def _xla_friendly(self) -> bool:
        return bool(getattr(self._target_log_prob, "xla_friendly", True))

    @property
    def metrics(self):
        return [self.loss_tracker, self.bound_tracker, self.beta_tracker]

    def train_step(self, data):
        replica = tf.distribute.get_replica_context()
        n = self.batch_size // (replica.num_replicas_in_sync if replica is not None else 1)
        rows = sampling.replica_rows(n)  # None on one device

        reference = ANNEALING_REFERENCES[self.anneal_from]

        def draw():
            x, log_q = self.sample_and_log_prob(n, seed=self._step_seed(), rows=rows)
            if not self.extended:
                return log_q, self._fitted_log_prob(x), None if reference is None else reference(x)
            # On (z, rho): the target and the reference each times the momentum's N(0, M).
            z, rho = self._split(x)
            log_r = self.flow_layer.momentum_log_prob(rho)
            log_ref = None if reference is None else reference(z) + log_r
            return log_q, self._fitted_log_prob(z) + log_r, log_ref

        update, *_ = self._guarded_update(draw, rows)
        self.beta_tracker.update_state(update.beta)
        return self._track(
            update.finite, {self.loss_tracker: update.loss, self.bound_tracker: update.bound}
        )

    def make_train_function(self, force=False):
        """Keras' train function; under XLA on one device, an execution's steps as one XLA program.

        The step reads no data, so under XLA the loop over the steps of an
        execution can run inside the compiled program, sparing the iterator and
        tf.cond through which Keras' own loop calls each step (benchmarks/RESULTS.md).
        The steps, their order and their random draws are the same either way.
        Under a `tf.distribute` strategy, or without XLA, Keras' loop is used.
        """
        if self.train_function is not None and not force:
            return self.train_function
        if not self.jit_compile or self.run_eagerly or under_strategy(self):
            return super().make_train_function(force)
        num_steps = self.steps_per_execution or 1

        # autograph=False: the step is plain graph code, and AutoGraph's conversion of the
        # functions it calls took 3 of the first step's 4.9 s of tracing (benchmarks/RESULTS.md).
        @tf.function(jit_compile=True, autograph=False)
        def execution():
            # The trackers' results carry the structure; each step's results replace them.
            return tf.while_loop(
                lambda i, _: i < num_steps,
                lambda i, _: (i + 1, self.train_step(None)),
                (tf.constant(0), self._results()),
                maximum_iterations=num_steps,
            )[1]

        self.train_function = lambda iterator: (
            execution()
        )  # the data are the dummy rows `fit` makes
        return self.train_function

    def fit(
        self,
        x=None,
        y=None,
        batch_size: int = 4096,
        epochs: int = 1,
        *,
        steps: int | None = None,
        steps_per_epoch: int | None = None,
        callbacks=None,
        **kwargs,
    ):
        """Train by reverse KL on samples of q; no data.

        Either `steps` (total updates, split into epochs of `steps_per_epoch`,
        100 by default, so epoch-level callbacks get to act) or the Keras pair
        `epochs` and `steps_per_epoch`.

        Arguments:
            batch_size: samples of q per update (the global batch under a `tf.distribute` strategy,
                a multiple of its replicas, which draw an equal share each).
            steps: total number of updates, run exactly: by default in epochs of the
                largest divisor of `steps` up to 100 that is a multiple of steps_per_execution.
            steps_per_epoch: updates per epoch (100 if neither it nor `steps` is given).
            callbacks, **kwargs: as for `keras.Model.fit` (verbose, initial_epoch, ...).
        Raises:
            tfnf.models.NonFiniteLossError: a loss or gradient was NaN or inf; the weights are
                those after the last good step.
        """
        if x is not None or y is not None:
            raise ValueError(
                "NormalizingFlow.fit trains on samples of q and takes no data: x and y must be "
                "None."
            )
        if self._target_log_prob is None:
            raise ValueError(
                "NormalizingFlow.fit needs a target: set `target_log_prob` "
                "(a target name, a callable or a tfd.Distribution)."
            )
        self._check_compiled()
        self._check_fit_arguments(kwargs)
        batch_size = positive_int(batch_size, "batch_size")
        if steps is not None:
            steps = positive_int(steps, "steps")
        if steps_per_epoch is not None:
            steps_per_epoch = positive_int(steps_per_epoch, "steps_per_epoch")
        epochs = positive_int(epochs, "epochs")
        replicas = self.distribute_strategy.num_replicas_in_sync
        if batch_size % replicas:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the strategy's {replicas} "
                "replicas: "
                f"each replica draws batch_size / {replicas} samples."
            )
        per_execution = self.steps_per_execution or 1
        if steps is not None:
            steps_per_epoch = steps_per_epoch or _epoch_length(steps, per_execution)
            if steps % steps_per_epoch:
                raise ValueError(
                    f"steps ({steps}) must be a multiple of steps_per_epoch ({steps_per_epoch}): "
                    "fit runs whole epochs, and runs exactly the steps asked for."
                )
            epochs = steps // steps_per_epoch
        steps_per_epoch = steps_per_epoch or 100
        if steps_per_epoch % per_execution:
            raise ValueError(
                f"steps_per_epoch ({steps_per_epoch}) must be a multiple of the compiled "
                f"steps_per_execution ({per_execution}); Keras would run extra steps otherwise."
            )
        self._check_memory(batch_size)
        if batch_size != self.batch_size:
            self.batch_size = batch_size
            self.train_function = None  # the sample count is baked into the traced step
        # One dummy row per replica (a strategy splits each element between the replicas).
        no_data = tf.data.Dataset.from_tensors(tf.zeros([replicas])).repeat()
        kwargs.setdefault("shuffle", False)
        return super().fit(
            no_data, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks, **kwargs
        )

    def _check_memory(self, batch_size: int):
        """Refuse a batch whose step cannot fit in this machine's memory, before compiling it.

        An XLA step that fails to allocate leaves TF's variables unusable (upstream, with or
        without tfnf), so the batch is refused from a lower bound on the one buffer XLA
        allocates for the step: batch * (D (K + 4) + 2) numbers (benchmarks/RESULTS.md).
        """
        available = available_memory()
        itemsize = tf.as_dtype(self.compute_dtype).size
        needed = batch_size * itemsize * (self.event_size * (self.num_layers + 4) + 2)
        if available is not None and needed > available:
            raise ValueError(
                f"batch_size={batch_size} needs at least {needed / 2**30:.1f} GiB for one step "
                f"(K = {self.num_layers}, D = {self.event_size}), more than the "
                f"{available / 2**30:.1f} GiB this machine has free: use a smaller batch_size."
            )

    unsupported_fit_arguments = {
        **GuardedTraining.unsupported_fit_arguments,
        **{
            name: "the flow trains on its own samples, not on data; "
            "measure it with tfnf.diagnostics.bound"
            for name in (
                "validation_data",
                "validation_split",
                "validation_steps",
                "validation_batch_size",
                "validation_freq",
            )
        },
    }

    def evaluate(self, *args, **kwargs):
        """Not defined: a flow has no data to evaluate on. Use `tfnf.diagnostics.bound`."""
        raise ValueError(
            "NormalizingFlow.evaluate is not defined (there is no data): estimate the bound on "
            "fresh samples with tfnf.diagnostics.bound(model.distribution, target_log_prob)."
        )

    # -- saving -----------------------------------------------------------

    def get_config(self):
        schedule = self.beta_schedule
        if not isinstance(schedule, (int, float)):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            **super().get_config(),
            "event_size": self.event_size,
            "num_layers": self.num_layers,
            "flow": self.flow,
            "target_log_prob": self._target_spec,
            "trainable_base": self.trainable_base,
            "beta_schedule": schedule,
            "flow_options": keras.saving.serialize_keras_object(self.flow_options),
            "seed": self._sampler_seed,
            "base": self.base_kind,
            "anneal_from": self.anneal_from,
            "box": self.box,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("beta_schedule", "flow_options"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


PROBE_ROWS = (7, 11)


def _checked_schedule(schedule) -> Schedule:
    """A float inverse temperature >= 0, or a callable of the step (a Keras schedule)."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, str) or not isinstance(schedule, (int, float)):
        raise TypeError(
            "beta_schedule must be a number >= 0 or a schedule of the step (a callable such as "
            f"paper_annealing()), got {schedule!r}."
        )
    return _checks.non_negative_number(schedule, "beta_schedule")


def _epoch_length(steps: int, per_execution: int) -> int:
    """The largest divisor of `steps` up to 100 that is a multiple of `per_execution`."""
    lengths = [n for n in range(per_execution, max(per_execution, 100) + 1, per_execution)]
    lengths = [n for n in lengths if steps % n == 0]
    if not lengths:
        raise ValueError(
            f"steps ({steps}) must be a multiple of the compiled steps_per_execution "
            f"({per_execution}), so that fit runs exactly the steps asked for."
        )
    return lengths[-1]


def _registered_name(target) -> str | None:
    """The registry name of a built-in target, so it can be saved; None for anything else."""
    for name in targets.names():
        if targets.get(name) is target:
            return name
    return None


# The flows fit_flow anneals by default: measured to gain from it (benchmarks/RESULTS.md).
ANNEALED_FLOWS = ("planar", "radial")


def fit_flow(
    target,
    *,
    num_layers: int,
    event_size: int = 2,
    flow: str = "planar",
    steps: int = 20000,
    batch_size: int = 4096,
    learning_rate: float = 1e-2,
    decay: bool = True,
    anneal: bool | None = None,
    box="auto",
    seed: int = 0,
    dtype: str = "float32",
    steps_per_execution: int = 10,
    base: str = "diagonal",
    flow_options: dict | None = None,
    **fit_kwargs,
) -> NormalizingFlow:
    """Build, compile and fit a NormalizingFlow on a target: the default recipe, which the
    commands and notebooks run.

    - Adam from `learning_rate` (1e-2, as in the seed scripts); with `decay` the
      rate falls along a cosine to a tenth of it by the last step, so that the
      late steps stop jittering about the optimum.
    - With `anneal` (None: on for planar and radial maps, off for NICE couplings,
      which the annealing leaves stuck at N(0, I): KL 3.2 nats on U1 at K = 2
      after 20,000 steps, where without it they fit), the paper's inverse temperature
      beta_t = min(1, 0.01 + t / (steps / 2)) (at 20,000 steps exactly the paper's
      t / 10000) along the geometric path
      from N(0, I), the flow's initial q, to the target (`anneal_from="standard_normal"`):
      it keeps every mode of a multi-modal target without letting q spread.
    - `box`: "auto" restricts a registered target that is not normalisable (U2..U4) to
      `tfnf.targets.BOX`, the square it is plotted and judged on (`targets.Restricted`);
      None never restricts; a pair (lo, hi) always does.

    benchmarks/RESULTS.md measures what each ingredient buys. `steps` is rounded up
    to a multiple of `steps_per_execution`. `num_layers` may be 0 (q is the base);
    `base` is "diagonal" or "full_rank" and `flow_options` the flow layer's options
    (see `NormalizingFlow`).
    """
    seed = _checks.seed(seed)
    steps = positive_int(steps, "steps")
    anneal = flow in ANNEALED_FLOWS if anneal is None else _checks.boolean(anneal, "anneal")
    if isinstance(box, str) and box == "auto":
        normalizable = not isinstance(target, str) or targets.is_normalizable(target)
        box = None if normalizable else targets.BOX
    if seed is not None:
        keras.utils.set_random_seed(seed)
    per_execution = max(1, min(steps_per_execution, steps))
    total = per_execution * math.ceil(steps / per_execution)
    model = NormalizingFlow(
        event_size=event_size,
        num_layers=num_layers,
        flow=flow,
        target_log_prob=target,
        beta_schedule=paper_annealing(max(1, total // 2)) if anneal else 1.0,
        anneal_from="standard_normal" if anneal else None,
        box=box,
        seed=seed,
        dtype=dtype,
        base=base,
        flow_options=flow_options,
    )
    rate = (
        keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total, alpha=0.1)
        if decay
        else learning_rate
    )
    model.compile(optimizer=keras.optimizers.Adam(rate), steps_per_execution=per_execution)
    model.fit(
        steps=total,
        batch_size=batch_size,
        **{"verbose": 0, **fit_kwargs},
    )
    return model
