"""The names a user picks from, without importing TensorFlow: for the command's help and checks.

Each tuple is the key set of a registry that lives with its code; a test checks they agree.
"""

__all__ = ["AMORTIZED_FLOWS", "FLOWS", "TARGETS"]

TARGETS = ("U1", "U2", "U3", "U4")  # tfnf.targets.names()
FLOWS = ("nice", "planar", "radial")  # tfnf.layers.FLOWS
AMORTIZED_FLOWS = ("planar", "radial")  # tfnf.layers.AmortizedFlow.families
