"""Quality numbers for a fitted flow: functions of tensors and distributions, no models.

References:
    Rezende & Mohamed (2015), section 6: the bound E_q[log q - log p~] and its
    relation KL(q || p) = bound + ln Z.
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "bound",
    "importance_weighted_bound",
    "grid_2d",
    "log_normalizer_2d",
    "kl_2d",
    "importance_log_normalizer",
    "ImportanceEstimate",
    "pareto_khat",
    "mode_masses",
    "covers_modes",
]


def bound(
    q: tfp.distributions.Distribution,
    target_log_prob: Callable,
    num_samples: int = 100_000,
    seed=None,
) -> tuple[float, float]:
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


def importance_weighted_bound(
    q: tfp.distributions.Distribution,
    target_log_prob: Callable,
    importance_samples: int,
    num_bounds: int = 10_000,
    seed=None,
) -> tuple[float, float]:
    """The importance-weighted lower bound on ln Z (Burda et al. 2016) with k samples of q,
    and its standard error: the mean over `num_bounds` independent groups of

        logsumexp_{i <= k} [ln p~(z_i) - ln q(z_i)] - ln k,  z_i ~ q.

    At k = 1 it is minus `bound`; it rises with k towards ln Z.

    Returns:
        (mean, standard error) in nats.
    """
    k = int(importance_samples)
    if k < 1:
        raise ValueError(
            f"importance_samples must be a positive integer, got {importance_samples!r}."
        )
    z, log_q = q.experimental_sample_and_log_prob([num_bounds, k], seed=seed)
    log_w = tf.cast(target_log_prob(z), tf.float64) - tf.cast(log_q, tf.float64)
    bounds = (tf.reduce_logsumexp(log_w, axis=1) - math.log(k)).numpy()
    return float(bounds.mean()), float(bounds.std(ddof=1) / math.sqrt(num_bounds))


def grid_2d(extent: Sequence[float], num: int, dtype=np.float64) -> tuple[np.ndarray, float]:
    """Cell centres of a num x num grid over the square [lo, hi]^2.

    Returns:
        (z [num, num, 2], cell area).
    """
    lo, hi = extent
    width = (hi - lo) / num
    axis = lo + width * (np.arange(num) + 0.5)
    z1, z2 = np.meshgrid(axis, axis, indexing="xy")
    return np.stack([z1, z2], axis=-1).astype(dtype), width * width


def log_normalizer_2d(
    log_prob: Callable, extent: Sequence[float] = (-6.0, 6.0), num: int = 1000
) -> float:
    """ln of the integral of exp(log_prob) over a square, by the midpoint rule in log space.

    Arguments:
        log_prob: z [..., 2] -> [...].
        extent: (lo, hi) of the square; it must hold essentially all the mass.
    """
    z, area = grid_2d(extent, num)
    values = tf.convert_to_tensor(log_prob(tf.constant(z)), tf.float64)
    return float(tf.reduce_logsumexp(values)) + math.log(area)


def kl_2d(
    q: tfp.distributions.Distribution,
    target_log_prob: Callable,
    extent: Sequence[float] = (-6.0, 6.0),
    num: int = 400,
) -> tuple[float, float]:
    """KL(q_B || p_B) by midpoint quadrature, q and p restricted to the square B, renormalised.

    When B holds essentially all the mass of both (U1 on (-6, 6)^2) this is the
    exact KL(q || p), with ln Z by the same quadrature. For U2..U4, which are not
    normalisable over R^2, it is the KL against the density restricted to the
    box, the quality number PAPER.md asks for on (-4, 4)^2. q's density comes
    from `q.log_prob`, through the flow's exact inverse.

    Returns:
        (KL in nats, the mass q puts in B).
    """
    z, area = grid_2d(extent, num, q.dtype.as_numpy_dtype)
    log_q = tf.cast(q.log_prob(tf.constant(z)), tf.float64)
    log_p = tf.cast(target_log_prob(tf.constant(z)), tf.float64)
    log_area = math.log(area)
    log_q_box = log_q - (tf.reduce_logsumexp(log_q) + log_area)
    log_p_box = log_p - (tf.reduce_logsumexp(log_p) + log_area)
    kl = tf.reduce_sum(tf.exp(log_q_box) * (log_q_box - log_p_box)) * area
    return float(kl), float(tf.exp(tf.reduce_logsumexp(log_q) + log_area))


class ImportanceEstimate(NamedTuple):
    log_z: float  # ln of the importance-sampling estimate of Z
    standard_error: float  # of log_z, by the delta method
    ess: float  # effective sample size, as a fraction of the samples
    khat: float  # Pareto k-hat of the weights' tail (`pareto_khat`); < 0.7: reliable


def pareto_khat(log_weights) -> float:
    """The Pareto k-hat of importance weights: the shape of a generalised Pareto fitted to
    their tail (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto Smoothed Importance
    Sampling", 2015/2024; Yao, Vehtari, Simpson & Gelman 2018 for q as a proposal).

    The tail is the largest M = min(S / 5, 3 sqrt(S)) of S weights, less the next
    largest; its shape is the posterior-mean estimate of Zhang & Stephens (2009) with
    the PSIS paper's weak prior (10 pseudo-observations at k = 0.5). k-hat < 0.5: the
    weights have finite variance; below 0.7 importance sampling (and q as an
    approximation of p) is reliable; above it, not. Scale-free: log_weights may be
    shifted by any constant.

    Arguments:
        log_weights: [S] ln p~(z_s) - ln q(z_s), z_s ~ q; S >= 10.
    Returns:
        k-hat, a float; inf if the tail is all ties (no spread to fit).
    """
    log_w = np.sort(np.asarray(log_weights, dtype=np.float64).ravel())
    if log_w.size < 10 or not np.all(np.isfinite(log_w)):
        raise ValueError(
            f"pareto_khat: log_weights must be >= 10 finite numbers, got {log_w.size} values"
            + ("" if np.all(np.isfinite(log_w)) else " with non-finite ones")
            + "."
        )
    size = log_w.size
    tail_size = int(min(size / 5, 3 * math.sqrt(size)))
    weights = np.exp(log_w - log_w[-1])  # the largest is 1
    tail = weights[-tail_size:] - weights[-tail_size - 1]  # exceedances over the cutoff
    if tail[-1] <= 0:
        return math.inf
    return _generalised_pareto_shape(tail)


def _generalised_pareto_shape(x: np.ndarray) -> float:
    """Zhang & Stephens' (2009) posterior-mean shape of a generalised Pareto fitted to the
    sorted exceedances x > 0, with the PSIS prior on the shape."""
    n = x.size
    grid = 30 + int(math.sqrt(n))
    quartile = x[max(0, int(n / 4 + 0.5) - 1)]
    # candidate values of theta = -k / sigma, spread as the paper prescribes
    theta = 1 / x[-1] + (1 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5))) / (3 * quartile)
    k = np.log1p(-theta[:, None] * x).mean(axis=1)  # the profile MLE of the shape at each theta
    log_likelihood = n * (np.log(-theta / k) - k - 1)
    weights = np.exp(log_likelihood - log_likelihood.max())  # each theta's posterior weight
    weights /= weights.sum()
    keep = weights >= 10 * np.finfo(float).eps
    theta, weights = theta[keep], weights[keep] / weights[keep].sum()
    shape = np.log1p(-(theta * weights).sum() * x).mean()
    return float((n * shape + 10 * 0.5) / (n + 10))


def importance_log_normalizer(
    q: tfp.distributions.Distribution,
    target_log_prob: Callable,
    num_samples: int = 100_000,
    seed=None,
) -> ImportanceEstimate:
    """ln Z by importance sampling with q as the proposal, q's effective sample size and k-hat.

    w_i = p~(z_i) / q(z_i); Z ~ mean(w); ESS = (sum w)^2 / sum w^2 (Kish), in log space;
    khat = `pareto_khat(ln w)`.
    """
    z, log_q = q.experimental_sample_and_log_prob(num_samples, seed=seed)
    log_w = tf.cast(target_log_prob(z), tf.float64) - tf.cast(log_q, tf.float64)
    log_sum = tf.reduce_logsumexp(log_w)
    log_z = float(log_sum) - math.log(num_samples)
    w = tf.exp(log_w - log_sum)  # normalised weights
    ess = 1.0 / float(tf.reduce_sum(w * w))
    relative_sd = math.sqrt(max(num_samples * float(tf.reduce_sum(w * w)) - 1.0, 0.0))
    return ImportanceEstimate(
        log_z,
        relative_sd / math.sqrt(num_samples),
        ess / num_samples,
        pareto_khat(log_w.numpy()),
    )


def mode_masses(
    q: tfp.distributions.Distribution,
    locs,
    num_samples: int = 200_000,
    seed=None,
) -> np.ndarray:
    """The fraction of q's samples nearest to each mode: q's mass in each mode's Voronoi cell.

    Arguments:
        q: event [D].
        locs: [M, D] the modes' centres (e.g. `tfnf.targets.mixture("hexagon").locs`).
    Returns:
        [M], summing to 1.
    """
    locs = np.asarray(locs)
    z = q.sample(num_samples, seed=seed).numpy()
    distances = ((z[:, np.newaxis, :] - locs[np.newaxis].astype(z.dtype)) ** 2).sum(-1)
    return np.bincount(np.argmin(distances, axis=1), minlength=len(locs)) / num_samples


def covers_modes(masses, weights, factor: float = 2.0) -> np.ndarray:
    """Which modes q covers: its mass within `factor` of the true mass, either way: [M] bool."""
    masses, weights = np.asarray(masses), np.asarray(weights)
    return (masses > weights / factor) & (masses < weights * factor)
