"""Pictures of targets and flows; the only module that imports matplotlib."""

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf.diagnostics import grid_2d

__all__ = ["density_on_grid", "target_and_flow"]


def density_on_grid(log_prob: Callable, extent: Sequence[float] = (-4.0, 4.0), num: int = 200,
                    dtype=np.float32) -> np.ndarray:
    """exp(log_prob) at the cell centres of a num x num grid: [num, num], rows along z2.

    For a flow pass `q.log_prob`: the density is evaluated through the exact
    inverse, not by pushing a grid through the forward map.
    """
    z, _ = grid_2d(extent, num, dtype)
    return np.exp(np.asarray(log_prob(tf.constant(z))))


def target_and_flow(target_log_prob: Callable, q: tfp.distributions.Distribution,
                    extent: Sequence[float] = (-4.0, 4.0), num: int = 200, title: str = "") -> plt.Figure:
    """The unnormalised target density beside the flow's density q, on the same grid."""
    dtype = q.dtype.as_numpy_dtype if q.dtype is not None else np.float32
    panels = [("target exp(-U)", density_on_grid(target_log_prob, extent, num, dtype)),
              ("flow q_K", density_on_grid(q.log_prob, extent, num, dtype))]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
    for ax, (name, density) in zip(axes, panels):
        ax.imshow(density, origin="lower", extent=(*extent, *extent), cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    if title:
        fig.suptitle(title)
    return fig
