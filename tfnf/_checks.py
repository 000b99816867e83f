"""Argument checks shared across tfnf, each written once: a one-line error naming the argument."""

import math
import numbers

__all__ = ["box", "boolean", "integer_kind", "non_negative_number", "positive_int", "seed"]

MAX_SEED = 2**31 - 1  # the stateless step seed is a pair of int32


def positive_int(value, name: str, minimum: int = 1) -> int:
    """`value` as an int if it is an integer >= `minimum` (default 1); else a ValueError naming it.

    Any integral number passes (`int`, `numpy.int64`, ...); `bool`, floats and strings do not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {integer_kind(minimum)}, got {value!r}.")
    return int(value)


def integer_kind(minimum: int) -> str:
    """How `positive_int` names what it wants: "a positive integer", "an integer >= 0"."""
    return "a positive integer" if minimum == 1 else f"an integer >= {minimum}"


def seed(value, name: str = "seed") -> int | None:
    """None, or an integer in [0, 2^31 - 1] as an int: larger seeds would wrap around silently."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= value <= MAX_SEED
    ):
        raise ValueError(f"{name} must be None or an integer in [0, 2**31 - 1], got {value!r}.")
    return int(value)


def boolean(value, name: str) -> bool:
    """`value` if it is True or False (numpy's too); else a TypeError: "no" is not False."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def non_negative_number(value, name: str) -> float:
    """`value` as a float if it is a finite real number >= 0; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")
    return float(value)


def box(value, name: str) -> tuple[float, float]:
    """(lo, hi) as floats, lo < hi, or a one-line ValueError naming `name`."""
    try:
        lo, hi = (float(edge) for edge in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi) of numbers, got {value!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"{name} must be a pair (lo, hi) of finite numbers with lo < hi, got {value!r}."
        )
    return lo, hi
