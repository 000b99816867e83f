"""tfnf: variational inference with normalizing flows in TensorFlow Probability and Keras.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from tfnf import bijectors, datasets, diagnostics, layers, models, targets, vae
from tfnf.models import NonFiniteLossError, NormalizingFlow

__version__ = "0.1.0"

__all__ = ["bijectors", "datasets", "diagnostics", "layers", "models", "targets", "vae", "NormalizingFlow", "NonFiniteLossError"]
