"""The names a user picks from, without importing TensorFlow: for the command's help and checks.

Each tuple is the key set of a registry that lives with its code; a test checks they agree.
"""

__all__ = ["AMORTIZED_FLOWS", "FLOWS", "TABLE_1", "TARGETS"]

TARGETS = ("U1", "U2", "U3", "U4", "hexagon", "triangle")  # tfnf.targets.names()
TABLE_1 = ("U1", "U2", "U3", "U4")  # the paper's energies, Figure 3's rows
FLOWS = ("nice", "planar", "radial", "sylvester")  # tfnf.layers.FLOWS
AMORTIZED_FLOWS = ("planar", "radial", "sylvester")  # tfnf.layers.AmortizedFlow.families
