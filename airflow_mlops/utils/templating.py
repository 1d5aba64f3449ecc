"""Whether an argument still holds Jinja markup: such values are checked again once rendered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_templated(value: Any) -> bool:
    """
    Whether *value*, or any string inside it (mappings and lists, recursively), still holds Jinja markup.

    Operators check literal arguments in ``__init__`` (parse time) and leave templated ones for ``execute``.
    """
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_templated(v) for v in value)
    return False
