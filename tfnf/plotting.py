"""Pictures of targets and flows; the only module that imports matplotlib."""

import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import targets
from tfnf.diagnostics import grid_2d

__all__ = [
    "density_on_grid",
    "target_and_flow",
    "figure3",
    "bound_vs_flow_length",
    "samples_and_reconstructions",
]


def density_on_grid(
    log_prob: Callable, extent: Sequence[float] = targets.BOX, num: int = 200, dtype=np.float32
) -> np.ndarray:
    """exp(log_prob) at the cell centres of a num x num grid: [num, num], rows along z2.

    For a flow pass `q.log_prob`: the density is evaluated through the exact
    inverse, not by pushing a grid through the forward map.
    """
    z, _ = grid_2d(extent, num, dtype)
    return np.exp(np.asarray(log_prob(tf.constant(z))))


def target_and_flow(
    target_log_prob: Callable,
    q: tfp.distributions.Distribution,
    extent: Sequence[float] = targets.BOX,
    num: int = 200,
    title: str = "",
) -> plt.Figure:
    """The unnormalised target density beside the flow's density q, on the same grid."""
    dtype = q.dtype.as_numpy_dtype if q.dtype is not None else np.float32
    panels = [
        ("target exp(-U)", density_on_grid(target_log_prob, extent, num, dtype)),
        ("flow q_K", density_on_grid(q.log_prob, extent, num, dtype)),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
    for ax, (name, density) in zip(axes, panels, strict=True):
        ax.imshow(density, origin="lower", extent=(*extent, *extent), cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    if title:
        fig.suptitle(title)
    return fig


def figure3(
    flows: Mapping[tuple[str, int], tfp.distributions.Distribution],
    extent: Sequence[float] = targets.BOX,
    num: int = 200,
    kls: Mapping[tuple[str, int], float] | None = None,
    caption: str | None = None,
) -> plt.Figure:
    """The paper's Figure 3: rows U1..U4, columns the exact density, then q_K for each K.

    Arguments:
        flows: {(target name, K): fitted q}; rows and columns follow the keys' order.
        extent: the square every panel shows, `tfnf.targets.BOX` by default.
        kls: {(target name, K): KL in nats}, written under each q's panel.
        caption: text under the figure (say there which KL `kls` holds, and on which box).
    """
    names = list(dict.fromkeys(name for name, _ in flows))
    ks = list(dict.fromkeys(k for _, k in flows))
    fig, axes = plt.subplots(
        len(names),
        len(ks) + 1,
        figsize=(2.2 * (len(ks) + 1), 2.2 * len(names) + (0.5 if caption else 0.0)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, name in zip(axes, names, strict=True):
        panels = [(density_on_grid(targets.get(name), extent, num), f"{name}: exp(-U)", None)]
        panels += [
            (
                density_on_grid(flows[name, k].log_prob, extent, num),
                f"K = {k}",
                None if kls is None else f"KL {kls[name, k]:.3f}",
            )
            for k in ks
        ]
        for ax, (density, title, label) in zip(row, panels, strict=True):
            ax.imshow(density, origin="lower", extent=(*extent, *extent), cmap="viridis")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if label:
                ax.set_xlabel(label, fontsize=8)
    if caption:
        fig.supxlabel(textwrap.fill(caption, 110), fontsize=7)
    return fig


def bound_vs_flow_length(rows: Iterable[Mapping]) -> plt.Figure:
    """The paper's Figure 3(d): the bound (nats) against K, a line per flow, error bars over seeds.

    Arguments:
        rows: records with keys "target", "flow", "K", "bound" (one per seed).
    """
    rows = list(rows)
    names = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(
        1, len(names), figsize=(4 * len(names), 3.2), squeeze=False, constrained_layout=True
    )
    for ax, name in zip(axes[0], names, strict=True):
        for flow in dict.fromkeys(r["flow"] for r in rows):
            mine = [r for r in rows if r["target"] == name and r["flow"] == flow]
            ks = sorted({r["K"] for r in mine})
            values = [np.array([r["bound"] for r in mine if r["K"] == k]) for k in ks]
            ax.errorbar(
                ks,
                [v.mean() for v in values],
                yerr=[v.std(ddof=1) if v.size > 1 else 0.0 for v in values],
                marker="o",
                capsize=3,
                label=flow,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("flow length K")
        ax.set_ylabel("bound E_q[log q + U] (nats)")
        ax.set_title(name)
        ax.legend()
    return fig


def _tiles(images: np.ndarray, columns: int) -> np.ndarray:
    """Images [N, 784] as one picture, `columns` 28 x 28 tiles a row, with a 2-pixel grey border."""
    rows = -(-len(images) // columns)
    canvas = np.full((rows * 30 + 2, columns * 30 + 2), 0.5)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[2 + 30 * r : 30 * r + 30, 2 + 30 * c : 30 * c + 30] = image.reshape(28, 28)
    return canvas


def samples_and_reconstructions(model, images: np.ndarray, seed: int = 0) -> plt.Figure:
    """A FlowVAE's mean images at 64 prior samples, and 32 images beside their reconstructions.

    Arguments:
        model: a FlowVAE on 28 x 28 images.
        images: [N >= 32, 784] in [0, 1].
        seed: stateless seeds (seed, 1) for the prior and (seed, 2) for q(z | x).
    """
    z = model.prior.sample(64, seed=(seed, 1))
    samples = tf.sigmoid(model.decode(z)).numpy()
    x = images[:32].astype(model.compute_dtype)
    z_x = model.sample_posterior(x, seed=(seed, 2))
    recon = tf.sigmoid(model.decode(z_x)).numpy()
    pairs = np.stack([x, recon], axis=1).reshape(
        -1, x.shape[1]
    )  # image, its reconstruction, next image, ...
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.8), constrained_layout=True)
    for ax, picture, title in (
        (axes[0], _tiles(samples, 8), "samples: x ~ p(x | z), z ~ p(z)"),
        (axes[1], _tiles(pairs, 8), "test images | reconstructions"),
    ):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    return figure
