"""The objective both models minimise and the schedules of its inverse temperature.

References:
    Rezende & Mohamed (2015), section 6 (annealed free energy) and eq. 13.
"""

import math

import keras
import tensorflow as tf

from tfnf import _checks

__all__ = [
    "ANNEALING_REFERENCES",
    "Schedule",
    "annealed_free_energy",
    "beta_at",
    "paper_annealing",
    "reverse_kl",
    "standard_normal_log_prob",
]

Schedule = float | keras.optimizers.schedules.LearningRateSchedule


def paper_annealing(duration: int = 10000) -> keras.optimizers.schedules.LearningRateSchedule:
    """The paper's inverse temperature beta_t = min(1, 0.01 + t / duration) (section 6).

    `duration` is 10,000 in the paper; `fit_flow` uses half its steps. It is
    exactly Keras' linear `PolynomialDecay` from 0.01 to 1 over 0.99 * duration steps.
    """
    duration = _checks.positive_int(duration, "duration")
    return keras.optimizers.schedules.PolynomialDecay(
        0.01, decay_steps=max(1, round(0.99 * duration)), end_learning_rate=1.0, power=1.0
    )


def standard_normal_log_prob(z: tf.Tensor) -> tf.Tensor:
    """ln N(z; 0, I): z [..., D] -> [...]."""
    size = tf.cast(tf.shape(z)[-1], z.dtype)
    return -0.5 * (tf.reduce_sum(tf.square(z), -1) + size * math.log(2 * math.pi))


# Where annealing starts: None is the paper's flat start (p~^beta); "standard_normal" is the
# geometric path N(0, I)^(1 - beta) p~^beta, which starts at the flow's initial q.
ANNEALING_REFERENCES = {None: None, "standard_normal": standard_normal_log_prob}


def beta_at(schedule: Schedule, step, dtype) -> tf.Tensor:
    """The inverse temperature at `step` (the schedule's value, or the constant): a scalar."""
    return tf.cast(schedule(step) if callable(schedule) else schedule, dtype)


def annealed_free_energy(
    log_q: tf.Tensor, log_p: tf.Tensor, beta=1.0, log_reference: tf.Tensor | None = None
) -> tf.Tensor:
    """ln q(z) - beta ln p~(z) - (1 - beta) ln r(z) at each sample: the annealed objective.

    Its mean is the reverse KL to the tempered target p~^beta r^(1 - beta). Without a
    reference r this is the paper's annealed free energy (section 6), whose target
    at small beta is nearly flat; with r = N(0, I) (the flow's initial q) it is the
    geometric path from r to p~, so the first steps start at their optimum.

    Arguments:
        log_q, log_p: [n] log-densities of the flow and the (unnormalised) target at n samples of q.
        beta: inverse temperature, scalar.
        log_reference: [n] ln r at the samples, or None (the paper's flat start).
    Returns:
        [n].
    """
    if log_reference is None:
        return log_q - beta * log_p
    return log_q - beta * log_p - (1 - beta) * log_reference


def reverse_kl(log_q: tf.Tensor, log_p: tf.Tensor, beta=1.0):
    """The annealed objective mean(log q - beta log p) and the bound mean(log q - log p).

    Arguments:
        log_q, log_p: [n] log-densities of the flow and the (unnormalised) target at n samples of q.
        beta: inverse temperature, scalar.
    Returns:
        (loss, bound), scalars. bound + ln Z = KL(q || p) >= 0.
    """
    return tf.reduce_mean(annealed_free_energy(log_q, log_p, beta)), tf.reduce_mean(log_q - log_p)
