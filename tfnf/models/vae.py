"""The deep latent Gaussian model (a VAE) with a flow posterior, and its likelihood by IS.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
    sections 4.2, 6 (annealed free energy) and 6.2 (MNIST, Table 2).
"""

import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import _checks
from tfnf._checks import positive_int
from tfnf.layers import AmortizedFlow, HamiltonianFlow
from tfnf.models.objectives import annealed_free_energy, paper_annealing
from tfnf.models.training import GuardedTraining
from tfnf.sampling import diagonal_normal_draw, push_forward, replica_rows

__all__ = [
    "FlowVAE",
    "Maxout",
    "NegativeLogLikelihood",
    "bernoulli_log_prob",
    "kl_warmup_schedule",
    "negative_log_likelihood",
]

tfd = tfp.distributions

# flow_options of the Hamiltonian flow's dynamics (`layers.HamiltonianFlow`); "planar_layers"
# warps the amortised base instead. Its first step size is smaller than the 2-D default: the
# decoder's log-likelihood of 784 pixels curves far more sharply than a 2-D energy.
HAMILTONIAN_OPTIONS = ("step_size", "initial_beta", "tempering")
HAMILTONIAN_STEP_SIZE = 0.01


def bernoulli_log_prob(x: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """log p(x | z) of independent Bernoulli pixels: x, logits [..., P] -> [...], x in [0, 1]."""
    x = tf.broadcast_to(x, tf.shape(logits))
    return -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=-1)


@keras.saving.register_keras_serializable(package="tfnf")
class Maxout(keras.layers.Layer):
    """Maxout (Goodfellow et al. 2013): Dense(units * pieces), then the max over each window.

    Unit j is the max of outputs j * pieces ... (j + 1) * pieces - 1 of the Dense
    layer: [..., H] -> [..., units].
    """

    def __init__(self, units: int, pieces: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.units, self.pieces = positive_int(units, "units"), positive_int(pieces, "pieces")
        self.dense = keras.layers.Dense(units * pieces, dtype=self.dtype_policy, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        y = self.dense(x)
        return tf.reduce_max(
            tf.reshape(y, tf.concat([tf.shape(y)[:-1], [self.units, self.pieces]], 0)), axis=-1
        )

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces}


def kl_warmup_schedule(steps: int):
    """beta_t = min(1, (t + 1) / steps), the linear KL warm-up; the constant 1 if steps is 0."""
    steps = positive_int(steps, "steps", minimum=0)
    if steps <= 1:
        return 1.0
    return keras.optimizers.schedules.PolynomialDecay(
        1.0 / steps, decay_steps=steps - 1, end_learning_rate=1.0, power=1.0
    )


def _warmed_up_kl(beta, log_q, log_p, log_reference, log_px_z, log_pz) -> tf.Tensor:
    """beta (ln q - ln p(z)) - ln p(x | z) per image: the KL warm-up's loss."""
    del log_p, log_reference  # ln p(x, z), and no reference: the same terms, split
    return beta * (log_q - log_pz) - log_px_z


def _iwae(beta, log_q, log_p, log_reference, log_px_z, log_pz) -> tf.Tensor:
    """-(logsumexp_s [ln p(x, z_s) - ln q(z_s | x)] - ln S) per image: minus the importance-
    weighted bound of Burda et al. (2016) over the S samples on the leading axis."""
    del beta, log_reference, log_px_z, log_pz
    samples = tf.cast(tf.shape(log_q)[0], log_q.dtype)
    return -(tf.reduce_logsumexp(log_p - log_q, axis=0) - tf.math.log(samples))


@keras.saving.register_keras_serializable(package="tfnf")
class FlowVAE(GuardedTraining, keras.Model):
    """The paper's DLGM: x -> q_K(z | x) (a diagonal Gaussian through K amortised maps) -> p(x | z).

    Encoder and decoder are MLPs of maxout layers; the decoder's last layer gives
    Bernoulli logits of the pixels; the prior is N(0, I). `fit(x)` minimises the
    negative ELBO with one sample z ~ q(z | x) per image; with `anneal` the
    inverse temperature beta_t = min(1, 0.01 + t / 10000) multiplies
    ln p(x, z) = ln p(x | z) + ln p(z) (section 6):

        loss = mean( ln q_K(z | x) - beta_t ln p(x, z) ),  elbo = mean( ln p(x, z) - ln q_K(z | x)
        ).

    With `kl_warmup` = W > 0 the KL term is warmed up instead (Bowman et al. 2016,
    Sonderby et al. 2016; the Sylvester-flow recipe): beta_t = min(1, (t + 1) / W)
    multiplies ln q_K(z | x) - ln p(z) only, so the first updates fit the
    reconstruction and the posterior is pulled to the prior gradually:

        loss = mean( beta_t (ln q_K(z | x) - ln p(z)) - ln p(x | z) ).

    Training reports `loss`, `elbo`, `reconstruction` = mean ln p(x | z) and
    `kl` = mean( ln q_K(z | x) - ln p(z) ), so elbo = reconstruction - kl,
    averaged over the images of the epoch; `evaluate` reports the same at beta = 1.

    Under a `tf.distribute` strategy (Mirrored or MultiWorkerMirrored; create
    and compile the model in its scope) each replica draws its rows of the noise
    one device would draw for the global batch and takes its share of the
    global mean, so training matches one device (README, "Several devices").

    Arguments:
        latent_size: D, the number of latent variables (40 in the paper).
        hidden_units: units of each maxout layer (400).
        num_layers: K >= 0 flow maps; 0 is the diagonal-Gaussian DLGM.
        flow: "planar", "radial", "sylvester" or "hamiltonian": num_layers = L tempered
            leapfrog steps on ln p(x, z) of each image (`layers.HamiltonianFlow`, the HVAE of
            Caterini et al. 2018) after a diagonal Gaussian, or after `planar_layers`
            amortised planar maps (flow_options); its step sizes, mass and tempering are
            learned and shared by all images, and ln q is that of (z, rho) less
            ln N(rho; 0, M), so the ELBO is the extended space's (see `_move`).
        data_size: pixels per image, P (784).
        hidden_layers: maxout layers in the encoder and in the decoder.
        maxout_pieces: window of each maxout unit (4).
        scale: "softplus" or "exp", the base's scale parameterisation.
        anneal: multiply ln p(x, z) by the paper's beta_t (`tfnf.models.paper_annealing`, then
            `beta_schedule`), as the paper trains; off by default, so that loss = -elbo.
        kl_warmup: W >= 0 training steps of linear KL warm-up (0: none); not with `anneal`.
        importance_samples: S >= 1; S > 1 trains on the importance-weighted bound (IWAE, Burda
            et al. 2016) with S samples of q per image: loss = -mean(logsumexp_s w_s - ln S),
            and `elbo`, `reconstruction`, `kl` average over the S samples.
        flow_options: options of `layers.AmortizedFlow` for the flow, e.g. {"rank": 8,
            "variant": "householder"} for "sylvester", or {"head_units": 64} for heads that
            read the encoder's features through 64 shared units (6x cheaper at K = 80); for
            "hamiltonian", `planar_layers`, `step_size` (0.01), `initial_beta` and `tempering`.
        encoder_noise: sigma >= 0; in training, the encoder sees x + sigma * N(0, I) while the
            decoder reconstructs x (the denoising VAE of Im et al. 2017, a regulariser of the
            amortised posterior, Shu et al. 2018); evaluation and -ln p(x) encode x itself.
        seed: training step t draws z with the stateless seed (seed, t); `evaluate`
            draws every batch with the seed of the next training step.

    References:
        Rezende & Mohamed (2015), sections 4.2, 6 and 6.2.
    """

    def __init__(
        self,
        latent_size: int = 40,
        hidden_units: int = 400,
        num_layers: int = 0,
        flow: str = "planar",
        *,
        data_size: int = 784,
        hidden_layers: int = 1,
        maxout_pieces: int = 4,
        scale: str = "softplus",
        anneal: bool = False,
        kl_warmup: int = 0,
        encoder_noise: float = 0.0,
        flow_options: dict | None = None,
        importance_samples: int = 1,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        dtype = self._float_policy()
        self.latent_size = positive_int(latent_size, "latent_size")
        self.hidden_units = positive_int(hidden_units, "hidden_units")
        self.num_layers = positive_int(num_layers, "num_layers", minimum=0)
        self.data_size = positive_int(data_size, "data_size")
        self.hidden_layers = positive_int(hidden_layers, "hidden_layers")
        self.maxout_pieces = positive_int(maxout_pieces, "maxout_pieces")
        self.flow, self.scale = flow, scale
        self.anneal = _checks.boolean(anneal, "anneal")
        self.kl_warmup = positive_int(kl_warmup, "kl_warmup", minimum=0)
        self.encoder_noise = _checks.non_negative_number(encoder_noise, "encoder_noise")
        self.importance_samples = positive_int(importance_samples, "importance_samples")
        if self.importance_samples > 1 and (self.anneal or self.kl_warmup):
            raise ValueError(
                "FlowVAE: importance_samples > 1 trains the importance-weighted bound, which has "
                "no KL term to warm up or anneal; set kl_warmup=0 and anneal=False."
            )
        if self.anneal and self.kl_warmup:
            raise ValueError(
                "FlowVAE: anneal and kl_warmup are two schedules of the same beta; choose one."
            )

        def maxouts(prefix):
            return [
                Maxout(hidden_units, maxout_pieces, dtype=dtype, name=f"{prefix}_{i}")
                for i in range(hidden_layers)
            ]

        self.encoder = keras.Sequential(maxouts("encoder_maxout"), name="encoder")
        self.flow_options = dict(flow_options or {})
        if flow != "hamiltonian" and flow not in AmortizedFlow.families:
            raise ValueError(
                f"FlowVAE: unknown flow {flow!r}; amortised flows: "
                f"{', '.join(AmortizedFlow.families)}, and hamiltonian."
            )
        options, self.dynamics = dict(self.flow_options), None
        amortized_flow, amortized_layers = flow, num_layers
        if flow == "hamiltonian":
            if not num_layers:
                raise ValueError(
                    "num_layers: the Hamiltonian flow needs at least one leapfrog step, got 0."
                )
            dynamics = {k: options.pop(k) for k in HAMILTONIAN_OPTIONS if k in options}
            dynamics.setdefault("step_size", HAMILTONIAN_STEP_SIZE)
            # The amortised part is the base, warped by planar_layers planar maps of x; the
            # dynamics' step sizes, mass and tempering are shared by every image.
            amortized_flow, amortized_layers = "planar", options.pop("planar_layers", 0)
            self.dynamics = HamiltonianFlow(num_layers, dtype=dtype, name="dynamics", **dynamics)
            self.dynamics.build((latent_size,))
        self.posterior_layer = AmortizedFlow(
            latent_size,
            amortized_layers,
            flow=amortized_flow,
            scale=scale,
            dtype=dtype,
            name="posterior",
            **options,
        )
        logits = keras.layers.Dense(data_size, dtype=dtype, name="logits")
        self.decoder = keras.Sequential([*maxouts("decoder_maxout"), logits], name="decoder")
        self.encoder.build((None, data_size))
        self.posterior_layer.build((None, hidden_units))
        self.decoder.build((None, latent_size))
        self._init_training(seed)
        self.beta_schedule = (
            paper_annealing() if self.anneal else kl_warmup_schedule(self.kl_warmup)
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.built = True

    # -- the model --------------------------------------------------------

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) = N(0, I), event shape [D]."""
        return tfd.MultivariateNormalDiag(loc=tf.zeros([self.latent_size], self.compute_dtype))

    def posterior_parameters(self, x) -> dict:
        """The parameters of q_K(z | x) for images x: [B, P] (`layers.AmortizedFlow.call`)."""
        return self.posterior_layer(self.encoder(tf.cast(x, self.compute_dtype)))

    def posterior(self, x) -> tfd.TransformedDistribution:
        """q_K(z | x) for images x: [B, P]; batch shape [B], event shape [D].

        For the Hamiltonian flow, the joint q(z, rho | x), event [2D] = concat(z, rho),
        with its exact density: the amortised base and rho ~ N(0, M / beta_0), moved by the
        dynamics on ln p(x, z) of each image. Its marginal q(z | x) has no closed form.
        """
        base = self.posterior_layer.distribution_from(self.posterior_parameters(x))
        if self.dynamics is None:
            return base
        scale = self.dynamics.momentum_scale(at_start=True)
        momentum = tfd.MultivariateNormalDiag(
            scale_diag=tf.broadcast_to(scale, [tf.shape(x)[0], self.latent_size])
        )
        return tfd.TransformedDistribution(
            tfd.Blockwise([base, momentum]), self.dynamics.bijector(self._joint_log_prob(x))
        )

    def _joint_log_prob(self, x):
        """z [..., B, D] -> ln p(x, z) [..., B] for the images x [B, P]: the dynamics' target."""
        x = tf.cast(x, self.compute_dtype)
        return lambda z: bernoulli_log_prob(x, self.decode(z)) + self.prior.log_prob(z)

    def decode(self, z) -> tf.Tensor:
        """Bernoulli logits of the pixels: z [..., D] -> [..., P]."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        logits = self.decoder(
            tf.reshape(z, [-1, self.latent_size])
        )  # a Sequential takes [N, D] only
        return tf.reshape(logits, tf.concat([tf.shape(z)[:-1], [self.data_size]], 0))

    def sample_posterior(self, x, seed=None) -> tf.Tensor:
        """One z ~ q_K(z | x) per image: [B, P] -> [B, D] (for the Hamiltonian flow, z_L)."""
        z = self.posterior(x).sample(seed=seed)
        return z if self.dynamics is None else z[..., : self.latent_size]

    def call(self, x):
        """The mean image E[x | z] at one sample z ~ q(z | x): [B, P] -> [B, P]."""
        return tf.sigmoid(self.decode(self.sample_posterior(x)))

    def log_weight_terms(self, x, seed, sample_shape=(), rows=None, encoded=None) -> tuple:
        """(ln p(x | z), ln p(z), ln q_K(z | x)) at z ~ q_K(z | x), each `[*sample_shape, B]`.

        One forward sweep of the flow gives z and ln q (`AmortizedFlow.sample_and_log_prob`).

        Arguments:
            x: [B, P] images.
            seed: stateless seed, a pair of integers.
            sample_shape: samples per image.
            rows: None, or a `sampling.ReplicaRows`: x is that slice of the global batch,
                whose noise is drawn as one device would.
            encoded: what the encoder sees in place of x ([B, P]), or None (x itself).
        """
        x = tf.cast(x, self.compute_dtype)
        encoded = x if encoded is None else tf.cast(encoded, self.compute_dtype)
        z, log_q = self.posterior_layer.sample_and_log_prob(
            self.posterior_parameters(encoded), seed, tuple(sample_shape), rows
        )
        if self.dynamics is not None:
            z, log_q = self._move(x, z, log_q, seed, rows)
        return bernoulli_log_prob(x, self.decode(z)), self.prior.log_prob(z), log_q

    def _move(self, x, z, log_q, seed, rows):
        """The Hamiltonian flow: z_L and ln q(z_L, rho_L | x) - ln N(rho_L; 0, M).

        With the momentum's reverse density folded into ln q, every bound and estimate
        built from (ln p(x | z), ln p(z), ln q) is that of the extended space, whose
        target p(x, z) N(rho; 0, M) integrates to p(x): the ELBO, the IWAE bound and the
        importance-sampled -ln p(x) keep their meaning.
        """
        scale = tf.broadcast_to(self.dynamics.momentum_scale(at_start=True), tf.shape(z))
        rho, log_r = diagonal_normal_draw(
            tf.zeros_like(z), scale, (), tf.random.experimental.stateless_fold_in(seed, 2), rows
        )
        moved, log_q = push_forward(
            self.dynamics.bijector(self._joint_log_prob(x)),
            tf.concat([z, rho], axis=-1),
            log_q + log_r,
        )
        z, rho = moved[..., : self.latent_size], moved[..., self.latent_size :]
        return z, log_q - self.dynamics.momentum_log_prob(rho)

    # -- training ---------------------------------------------------------

    @property
    def metrics(self):
        return [self.loss_tracker, self.elbo_tracker, self.reconstruction_tracker, self.kl_tracker]

    def _track_terms(self, finite, per_image_loss, log_px_z, log_pz, log_q) -> dict:
        # Per-image values: the trackers average over images, not batches, so a short last
        # batch (or one that a strategy splits unevenly between replicas) counts by its size.
        values = {
            self.loss_tracker: per_image_loss,
            self.elbo_tracker: log_px_z + log_pz - log_q,
            self.reconstruction_tracker: log_px_z,
            self.kl_tracker: log_q - log_pz,
        }
        return self._track(finite, values)

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        rows = replica_rows(tf.shape(x)[0])  # None on one device

        def draw():
            seed = self._step_seed()
            encoded = None
            if self.encoder_noise:
                x_ = tf.cast(x, self.compute_dtype)
                encoded, _ = diagonal_normal_draw(
                    x_,
                    tf.fill(tf.shape(x_), tf.constant(self.encoder_noise, x_.dtype)),
                    (),
                    tf.random.experimental.stateless_fold_in(seed, 1),
                    rows,
                )
            log_px_z, log_pz, log_q = self.log_weight_terms(
                x, seed, sample_shape=samples, rows=rows, encoded=encoded
            )
            return log_q, log_px_z + log_pz, None, log_px_z, log_pz

        samples = () if self.importance_samples == 1 else (self.importance_samples,)
        if samples and rows is not None:
            raise ValueError(
                "FlowVAE: importance_samples > 1 is not supported under a tf.distribute strategy."
            )
        objective = _warmed_up_kl if self.kl_warmup else _iwae if samples else None
        update, log_px_z, log_pz = self._guarded_update(draw, rows, objective)
        return self._track_terms(update.finite, update.per_sample, log_px_z, log_pz, update.log_q)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        log_px_z, log_pz, log_q = self.log_weight_terms(
            x, self._step_seed(), rows=replica_rows(tf.shape(x)[0])
        )
        return self._track_terms(
            True, annealed_free_energy(log_q, log_px_z + log_pz), log_px_z, log_pz, log_q
        )

    def _check_images(self, x, caller: str):
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, tuple) else spec
            shape = getattr(spec, "shape", None)
        elif x is None:
            raise ValueError(
                f"FlowVAE.{caller}: x must be images [B, {self.data_size}] or a dataset of them."
            )
        else:
            shape = getattr(x, "shape", None)
        if shape is not None and (len(shape) != 2 or shape[-1] not in (None, self.data_size)):
            raise ValueError(
                f"FlowVAE.{caller}: x must hold images of data_size={self.data_size} pixels, "
                f"shape [B, {self.data_size}]; got shape {tuple(shape)}."
            )

    def fit(self, x=None, y=None, batch_size=None, epochs=1, *, callbacks=None, **kwargs):
        """As `keras.Model.fit` on images x: [N, P] (or a dataset of [B, P] batches); y is ignored.

        Raises:
            tfnf.models.NonFiniteLossError: a loss or gradient was NaN or inf; the update was
                skipped and the weights are those after the last good step.
        """
        self._check_images(x, "fit")
        self._check_compiled()
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault(
                "shuffle", False
            )  # Keras cannot shuffle a dataset, and warns if asked to
        return super().fit(
            x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, **kwargs
        )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """As `keras.Model.evaluate`: loss = -elbo, elbo, reconstruction and kl at beta = 1."""
        self._check_images(x, "evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    # -- saving -----------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "latent_size": self.latent_size,
            "hidden_units": self.hidden_units,
            "num_layers": self.num_layers,
            "flow": self.flow,
            "data_size": self.data_size,
            "hidden_layers": self.hidden_layers,
            "maxout_pieces": self.maxout_pieces,
            "scale": self.scale,
            "anneal": self.anneal,
            "kl_warmup": self.kl_warmup,
            "encoder_noise": self.encoder_noise,
            "flow_options": self.flow_options,
            "importance_samples": self.importance_samples,
            "seed": self._sampler_seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class NegativeLogLikelihood(NamedTuple):
    """-ln p(x) in nats: the mean over images, its standard error, and one value per image."""

    mean: float
    standard_error: float
    per_image: np.ndarray


def negative_log_likelihood(
    model: FlowVAE,
    images,
    num_samples: int = 200,
    *,
    batch_size: int = 100,
    samples_per_chunk: int | None = None,
    seed: int = 0,
    jit_compile: bool = True,
    verbose: bool = False,
) -> NegativeLogLikelihood:
    """-ln p(x) by importance sampling with q_K(z | x) as the proposal (section 6.2, 200 samples).

        ln p(x) ~ logsumexp_s [ ln p(x | z_s) + ln p(z_s) - ln q_K(z_s | x) ] - ln S,  z_s ~ q_K(z |
        x).

    An estimate of ln p(x) biased low (Jensen) by a margin that shrinks as S
    grows. Images go `batch_size` at a time and their samples `samples_per_chunk`
    at a time, so memory holds batch_size * samples_per_chunk decoder passes.

    Arguments:
        model: a FlowVAE.
        images: [N, P] array.
        num_samples: S samples of q per image.
        batch_size: images per pass.
        samples_per_chunk: samples per pass; by default as many as keep
            batch_size * samples_per_chunk near 10,000.
        seed: chunk c of the run draws with the stateless seed (seed, c).
        verbose: show a progress bar.
    Returns:
        NegativeLogLikelihood(mean, standard_error, per_image [N]), float64 nats.
    """
    seed = _checks.seed(seed)
    num_samples = positive_int(num_samples, "num_samples")
    batch_size = positive_int(batch_size, "batch_size")
    chunk = positive_int(samples_per_chunk or max(1, 10_000 // batch_size), "samples_per_chunk")
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[1] != model.data_size or len(images) == 0:
        raise ValueError(
            f"negative_log_likelihood: images must be [N, {model.data_size}] with N >= 1, "
            f"got shape {images.shape}."
        )
    # Equal chunks, so the compiled pass is traced once per batch shape.
    num_chunks = math.ceil(num_samples / chunk)
    chunk = math.ceil(num_samples / num_chunks)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def log_weights(x, first_chunk):
        @tf.autograph.experimental.do_not_convert  # plain tensor code; converting it only warned
        def one_chunk(c):
            log_px_z, log_pz, log_q = model.log_weight_terms(
                x, tf.stack([seed, c]), sample_shape=[chunk]
            )
            return log_px_z + log_pz - log_q

        chunks = tf.map_fn(
            one_chunk,
            first_chunk + tf.range(num_chunks),
            parallel_iterations=1,
            fn_output_signature=model.compute_dtype,
        )
        w = tf.reshape(chunks, [num_chunks * chunk, -1])[:num_samples]
        return tf.reduce_logsumexp(w, axis=0) - math.log(num_samples)

    progress = keras.utils.Progbar(len(images), unit_name="image") if verbose else None
    log_p = []
    for i, start in enumerate(range(0, len(images), batch_size)):
        x = tf.constant(images[start : start + batch_size], model.compute_dtype)
        log_p.append(
            log_weights(x, tf.constant(i * num_chunks, tf.int32)).numpy().astype(np.float64)
        )
        if progress is not None:
            progress.add(len(x))
    per_image = -np.concatenate(log_p)
    error = per_image.std(ddof=1) / math.sqrt(len(per_image)) if len(per_image) > 1 else math.nan
    return NegativeLogLikelihood(float(per_image.mean()), float(error), per_image)
