"""The objective both models minimise and the schedules of its inverse temperature.

References:
    Rezende & Mohamed (2015), section 6 (annealed free energy) and eq. 13.
"""

import keras
import tensorflow as tf

__all__ = ["Schedule", "annealed_free_energy", "beta_at", "paper_annealing", "reverse_kl"]

Schedule = float | keras.optimizers.schedules.LearningRateSchedule


def paper_annealing() -> keras.optimizers.schedules.LearningRateSchedule:
    """The paper's inverse temperature beta_t = min(1, 0.01 + t / 10000) (section 6).

    It is exactly Keras' linear `PolynomialDecay` from 0.01 to 1 over 9900 steps.
    """
    return keras.optimizers.schedules.PolynomialDecay(
        0.01, decay_steps=9900, end_learning_rate=1.0, power=1.0
    )


def beta_at(schedule: Schedule, step, dtype) -> tf.Tensor:
    """The inverse temperature at `step` (the schedule's value, or the constant): a scalar."""
    return tf.cast(schedule(step) if callable(schedule) else schedule, dtype)


def annealed_free_energy(log_q: tf.Tensor, log_p: tf.Tensor, beta=1.0) -> tf.Tensor:
    """ln q(z) - beta ln p~(z) at each sample, whose mean is the annealed objective (section 6).

    Arguments:
        log_q, log_p: [n] log-densities of the flow and the (unnormalised) target at n samples of q.
        beta: inverse temperature, scalar.
    Returns:
        [n].
    """
    return log_q - beta * log_p


def reverse_kl(log_q: tf.Tensor, log_p: tf.Tensor, beta=1.0):
    """The annealed objective mean(log q - beta log p) and the bound mean(log q - log p).

    Arguments:
        log_q, log_p: [n] log-densities of the flow and the (unnormalised) target at n samples of q.
        beta: inverse temperature, scalar.
    Returns:
        (loss, bound), scalars. bound + ln Z = KL(q || p) >= 0.
    """
    return tf.reduce_mean(annealed_free_energy(log_q, log_p, beta)), tf.reduce_mean(log_q - log_p)
