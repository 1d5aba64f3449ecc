"""
Whether an argument is known yet: Jinja markup and other tasks' results (XComArgs) are known once rendered.

Operators follow the official providers' rule: ``__init__`` stores template-field arguments as given and
checks them at DAG-parse time only when they are literals (:func:`is_templated` is false); every check runs
again, once, on the rendered value at the start of ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_templated(value: Any) -> bool:
    """
    Whether *value* is not resolved until the task runs, so it cannot be checked at DAG-parse time.

    True for a string holding Jinja markup (``{{`` or ``{%``) and for another task's result
    (``task.output``, ``task.output["key"]``, any Airflow ``XComArg`` or other runtime-resolved value),
    itself or anywhere inside a mapping, list or tuple (recursively), as Airflow renders them.
    """
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if _resolved_at_runtime(value):
        return True
    if isinstance(value, Mapping):
        return any(is_templated(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_templated(v) for v in value)
    return False


def _resolved_at_runtime(value: Any) -> bool:
    # Airflow's ResolveMixin (XComArg and its kin) by what it offers, not by import: this module imports no
    # Airflow, and the class lives in a private module of the task SDK.
    return callable(getattr(type(value), "resolve", None)) and callable(
        getattr(type(value), "iter_references", None)
    )
