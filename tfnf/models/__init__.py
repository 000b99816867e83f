"""The Keras models and what they are trained with.

`flow`: `NormalizingFlow`, q_K fitted to a target without data, and `fit_flow`.
`vae`: `FlowVAE`, the paper's DLGM, and its importance-sampled likelihood.
`training`: the machinery both share (guarded update, step seeds, XLA, non-finite stop).
`objectives`: the annealed reverse KL and its schedules.
`saving`: `load_model`, Keras' loader with errors that name what is wrong with the file.
"""

from tfnf.models.flow import NormalizingFlow, fit_flow
from tfnf.models.objectives import annealed_free_energy, beta_at, paper_annealing, reverse_kl
from tfnf.models.saving import load_model
from tfnf.models.training import (
    GuardedTraining,
    KeepBest,
    NonFiniteLossError,
    StopOnNonFinite,
    TimeBudget,
)
from tfnf.models.vae import (
    FlowVAE,
    Maxout,
    NegativeLogLikelihood,
    kl_warmup_schedule,
    negative_log_likelihood,
)

__all__ = [
    "FlowVAE",
    "GuardedTraining",
    "KeepBest",
    "Maxout",
    "NegativeLogLikelihood",
    "NonFiniteLossError",
    "NormalizingFlow",
    "StopOnNonFinite",
    "TimeBudget",
    "annealed_free_energy",
    "beta_at",
    "fit_flow",
    "kl_warmup_schedule",
    "load_model",
    "negative_log_likelihood",
    "paper_annealing",
    "reverse_kl",
]
