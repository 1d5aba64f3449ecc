"""Small value rules the evaluation modules share: finite numbers, specs given as strings, table cells."""

from __future__ import annotations

import ast
import json
import math
from typing import Any


def finite(value: Any) -> float | None:
    """*value* as a float, or None when it is not a finite number (None, NaN, infinity, text)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def number(value: Any, where: str) -> float | None:
    """A finite number given as an int, a float or a numeric string; None stays None; else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_spec(text: str, field: str, shape: str) -> Any:
    """Parse JSON, or the Python literal a plain ``{{ params.x }}`` renders a dict to (*shape*: for errors)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"{field} is a string but not valid JSON ({err.msg}); expected {shape}") from err


def fmt(value: Any) -> str:
    """A metric value for a report table: four decimals, ``n/a`` for None."""
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)
