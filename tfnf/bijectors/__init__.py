"""TFP bijectors for the paper's flows; no Keras here, so a TFP user can take one alone."""

from tfnf.bijectors.hamiltonian import Hamiltonian, quadratic_tempering
from tfnf.bijectors.planar import Planar, PlanarFlow
from tfnf.bijectors.radial import Radial, RadialFlow
from tfnf.bijectors.stack import Stack
from tfnf.bijectors.sylvester import Sylvester, householder_q, orthonormal_q, permutation_q

__all__ = [
    "Hamiltonian",
    "PlanarFlow",
    "RadialFlow",
    "Stack",
    "Sylvester",
    "householder_q",
    "quadratic_tempering",
    "orthonormal_q",
    "permutation_q",
    "Planar",
    "Radial",
]
