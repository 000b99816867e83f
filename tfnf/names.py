"""The names a user picks from, without importing TensorFlow: for the command's help and checks.

Each tuple is the key set of a registry that lives with its code; a test checks they agree.
"""

__all__ = ["AMORTIZED_FLOWS", "FLOWS", "TABLE_1", "TARGETS", "TARGET_INFORMED_FLOWS"]

TARGETS = ("U1", "U2", "U3", "U4", "hexagon", "triangle")  # tfnf.targets.names()
TABLE_1 = ("U1", "U2", "U3", "U4")  # the paper's energies, Figure 3's rows
# tfnf.layers.FLOWS: the flows with an exact density of z (the command's choices), and those
# on an extended space whose maps read the target (their marginal density of z has no closed form).
FLOWS = ("nice", "planar", "radial", "sylvester")
TARGET_INFORMED_FLOWS = ("hamiltonian",)
AMORTIZED_FLOWS = ("planar", "radial", "sylvester")  # tfnf.layers.AmortizedFlow.families
