"""tfnf: variational inference with normalizing flows in TensorFlow Probability and Keras.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from tfnf import bijectors, datasets, diagnostics, layers, models, sampling, targets
from tfnf.models import FlowVAE, NonFiniteLossError, NormalizingFlow

__version__ = "0.2.0"

__all__ = [
    "FlowVAE",
    "NonFiniteLossError",
    "NormalizingFlow",
    "bijectors",
    "datasets",
    "diagnostics",
    "layers",
    "models",
    "sampling",
    "targets",
]
