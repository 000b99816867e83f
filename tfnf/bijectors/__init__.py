"""TFP bijectors for the paper's flows; no Keras here, so a TFP user can take one alone."""

from tfnf.bijectors.planar import Planar, PlanarFlow
from tfnf.bijectors.radial import Radial, RadialFlow
from tfnf.bijectors.stack import Stack
from tfnf.bijectors.sylvester import Sylvester, householder_q, orthonormal_q, permutation_q

__all__ = [
    "PlanarFlow",
    "RadialFlow",
    "Stack",
    "Sylvester",
    "householder_q",
    "orthonormal_q",
    "permutation_q",
    "Planar",
    "Radial",
]
