"""Argument checks shared by the public functions: one clear ValueError per mistake."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError naming both."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def flag(name: str, value: Any, *, optional: bool = False) -> bool | None:
    """Return ``value`` as a bool if it is True or False (or None, when ``optional``), else raise
    a ValueError. NumPy's booleans count: a flag is often computed (``np.all(...)``).

    >>> flag("updates", True), flag("progress", None, optional=True), flag("seen", np.bool_(False))
    (True, None, False)
    """
    if value is None and optional:
        return None
    if not isinstance(value, (bool, np.bool_)):
        either = "True, False or None" if optional else "True or False"
        raise ValueError(f"{name} must be {either}; got {value!r}")
    return bool(value)


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int within [low, high], else raise a ValueError.

    Any integral number is accepted (``numbers.Integral`` includes numpy's integers), bools are not.

    >>> import numpy as np
    >>> integer("depth", np.int64(3))
    3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    _bounds(name, value, low, high)
    return value


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a finite float within its bounds, else raise a ValueError.

    ``low_open=True`` makes the lower bound strict (``value > low``).
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number; got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if low_open and low is not None and value <= low:
        raise ValueError(f"{name} must be greater than {low}; got {value!r}")
    _bounds(name, value, None if low_open else low, high)
    return value


def _bounds(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}; got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}; got {value!r}")


#: torch.Generator.manual_seed takes seeds below 2**64.
MAX_SEED = 2**64 - 1


def seed(value: Any, name: str = "seed") -> int:
    """Return ``value`` as a seed torch accepts (an integer in [0, 2**64 − 1]), else raise a ValueError.

    The one seed check: every public function that takes a seed calls it first, before any work,
    so 2**64 is refused by name rather than by torch's "Overflow when unpacking long long".

    >>> seed(2**64)
    Traceback (most recent call last):
    ...
    ValueError: seed must be at most 18446744073709551615; got 18446744073709551616
    """
    return integer(name, value, low=0, high=MAX_SEED)
