"""Deprecated: the DLGM moved to `tfnf.models` (`tfnf.models.FlowVAE`); this module goes in 0.3."""

import warnings

from tfnf.models.vae import (
    FlowVAE,
    Maxout,
    NegativeLogLikelihood,
    bernoulli_log_prob,
    negative_log_likelihood,
)

__all__ = [
    "FlowVAE",
    "Maxout",
    "NegativeLogLikelihood",
    "bernoulli_log_prob",
    "negative_log_likelihood",
]

warnings.warn(
    "tfnf.vae is deprecated and will be removed in tfnf 0.3: import FlowVAE and "
    "negative_log_likelihood from tfnf.models.",
    DeprecationWarning,
    stacklevel=2,
)
