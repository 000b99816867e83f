"""Argument checks shared across tfnf, each written once."""

import numbers

__all__ = ["positive_int"]


def positive_int(value, name: str, minimum: int = 1) -> int:
    """`value` as an int if it is an integer >= `minimum` (default 1); else a ValueError naming it.

    Any integral number passes (`int`, `numpy.int64`, ...); `bool`, floats and strings do not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    return int(value)
