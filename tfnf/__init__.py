"""tfnf: variational inference with normalizing flows in TensorFlow Probability and Keras.

The modules and the names below load on first use, so that `import tfnf` (and the
command's `--help`) does not import TensorFlow until something needs it.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

import importlib
from typing import TYPE_CHECKING

from tfnf import _xla_cache, _xla_loops

__version__ = "0.2.0"

_xla_loops.enable()  # first: the cache's store is keyed by the flags
_xla_cache.enable()  # before TensorFlow's first compilation reads TF_XLA_FLAGS

_MODULES = ("bijectors", "datasets", "diagnostics", "layers", "models", "sampling", "targets")
_NAMES = {
    "FlowVAE": "tfnf.models",
    "NonFiniteLossError": "tfnf.models",
    "NormalizingFlow": "tfnf.models",
}

__all__ = sorted([*_NAMES, *_MODULES])

if TYPE_CHECKING:  # what linters and IDEs see: the same names, imported plainly
    from tfnf import bijectors as bijectors
    from tfnf import datasets as datasets
    from tfnf import diagnostics as diagnostics
    from tfnf import layers as layers
    from tfnf import models as models
    from tfnf import sampling as sampling
    from tfnf import targets as targets
    from tfnf.models import FlowVAE as FlowVAE
    from tfnf.models import NonFiniteLossError as NonFiniteLossError
    from tfnf.models import NormalizingFlow as NormalizingFlow


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"tfnf.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'tfnf' has no attribute {name!r}")


def __dir__() -> list:
    return sorted({*globals(), *__all__})
