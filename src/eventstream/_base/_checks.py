"""The checks of numeric options, in one wording for every option of the library.

A count is an ``int`` in range; a duration is a finite number of seconds. A
bool is neither (``True`` is not 1 item, nor 1 second), nor is a str or NaN.
"""

from __future__ import annotations

import math

__all__ = ["check_count", "check_seconds"]


def check_count(
    name: str, value: object, *, low: int = 1, high: int | None = None, allow_none: bool = False
) -> None:
    """Check that option ``name`` is an int from ``low`` (to ``high``), or ``None`` when ``allow_none``.

    Raises:
        ValueError: it is not; the message names the option, the range and the value given.
    """
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}{' or None' if allow_none else ''}, not {value!r}")


def check_seconds(name: str, value: object, *, allow_zero: bool = False, allow_none: bool = False) -> None:
    """Check that option ``name`` is a finite number of seconds > 0 (``>= 0`` when ``allow_zero``).

    ``None`` passes when ``allow_none``.

    Raises:
        ValueError: it is not; the message names the option and the value given.
    """
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        kind = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ValueError(f"{name} must be {kind}{' or None' if allow_none else ''}, not {value!r}")
