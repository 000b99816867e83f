"""Quality numbers for a fitted flow: functions of tensors and distributions, no models.

References:
    Rezende & Mohamed (2015), section 6: the bound E_q[log q - log p~] and its
    relation KL(q || p) = bound + ln Z.
"""

import math
from typing import Callable, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["bound", "grid_2d", "log_normalizer_2d"]


def bound(q: tfp.distributions.Distribution, target_log_prob: Callable, num_samples: int = 100_000,
          seed=None) -> Tuple[float, float]:
    """Monte Carlo estimate of E_q[log q(z) - log p~(z)] and its standard error.

    Arguments:
        q: the variational distribution, event [D].
        target_log_prob: z [..., D] -> [...], unnormalised.
        num_samples: samples of q.
    Returns:
        (mean, standard error) in nats.
    """
    z, log_q = q.experimental_sample_and_log_prob(num_samples, seed=seed)
    gap = (log_q - target_log_prob(z)).numpy()
    return float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(num_samples))


def grid_2d(extent: Sequence[float], num: int, dtype=np.float64) -> Tuple[np.ndarray, float]:
    """Cell centres of a num x num grid over the square [lo, hi]^2.

    Returns:
        (z [num, num, 2], cell area).
    """
    lo, hi = extent
    width = (hi - lo) / num
    axis = lo + width * (np.arange(num) + 0.5)
    z1, z2 = np.meshgrid(axis, axis, indexing="xy")
    return np.stack([z1, z2], axis=-1).astype(dtype), width * width


def log_normalizer_2d(log_prob: Callable, extent: Sequence[float] = (-6.0, 6.0), num: int = 1000) -> float:
    """ln of the integral of exp(log_prob) over a square, by the midpoint rule in log space.

    Arguments:
        log_prob: z [..., 2] -> [...].
        extent: (lo, hi) of the square; it must hold essentially all the mass.
    """
    z, area = grid_2d(extent, num)
    values = tf.convert_to_tensor(log_prob(tf.constant(z)), tf.float64)
    return float(tf.reduce_logsumexp(values)) + math.log(area)
