"""
What an operator's run returned: made JSON-safe, and kept on the operator for what reads it after the task ends.

Every value that leaves a task (its XCom result, a registry tag, a report, an OpenLineage facet) goes through
:func:`json_safe`: NaN and infinities become None, numpy scalars and arrays Python numbers and lists, tuples and
sets lists, dates ISO 8601 text, so Airflow never refuses a result after the work it describes is done.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "KEEPS_RESULT", "RESULT_ATTRIBUTE", "json_safe", "keep", "keep_result", "kept_result", "keyed_results",
]  # fmt: skip

#: The operator attribute that holds the last value :func:`keep_result` saw returned.
RESULT_ATTRIBUTE = "_mlops_result"
#: Set on a method decorated with :func:`keep_result` (what tests check every operator's execute for).
KEEPS_RESULT = "_mlops_keeps_result"

_F = TypeVar("_F", bound="Callable[..., Any]")


def json_safe(value: Any) -> Any:
    """
    *value* with only what JSON (strictly: no NaN, no Infinity) can hold, recursively.

    NaN and +/-inf become None; numpy and other scalars with ``item()`` become Python numbers; arrays and
    pandas objects with ``tolist()`` become lists; tuples and sets lists; mapping keys text; ``datetime``,
    ``date`` and ``time`` ISO 8601 text and ``timedelta`` seconds. Anything else is kept when it is a JSON
    type and written as its text otherwise.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [json_safe(v) for v in items]
    if isinstance(value, datetime | date | time):
        return None if value != value else value.isoformat()  # pandas.NaT is a datetime unequal to itself
    if isinstance(value, timedelta):
        return value.total_seconds()
    if type(value).__module__.split(".")[0] in ("numpy", "pandas"):
        if str(value) in ("NaT", "<NA>", "nan"):  # pandas.NA, NaT, a numpy NaN scalar
            return None
        if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series / Index
            return json_safe(value.tolist())
        if hasattr(value, "isoformat"):  # pandas Timestamp
            return value.isoformat()
        if hasattr(value, "item"):
            return json_safe(value.item())
    if hasattr(value, "item") and callable(value.item):
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def keep_result(method: _F) -> _F:
    """
    Decorate an operator's ``execute`` (or ``execute_complete``) to return a JSON-safe result and keep it.

    The result goes through :func:`json_safe` (a NaN in a summary would make Airflow refuse the XCom after
    the work was done). The OpenLineage listener builds a task's COMPLETE event after ``execute`` returned, in
    a child process of the task; it reads the result there from the operator (:func:`kept_result`), not from
    the XCom backend.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = json_safe(method(self, *args, **kwargs))
        setattr(self, RESULT_ATTRIBUTE, result)
        return result

    setattr(wrapper, KEEPS_RESULT, True)
    return wrapper  # type: ignore[return-value]


def keyed_results(kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    An operator's keyword arguments with ``multiple_outputs`` on, unless the DAG sets it.

    Each key of the task's result is then an XCom of its own as well, so another task takes one value with
    ``task.output["model_uri"]`` (Airflow resolves ``output[key]`` by XCom key), and the whole result with
    ``task.output``.
    """
    kwargs.setdefault("multiple_outputs", True)
    return kwargs


def keep(operator: Any, result: Any) -> None:
    """Keep *result* on the operator as :func:`keep_result` does: for a task that fails after building it."""
    setattr(operator, RESULT_ATTRIBUTE, json_safe(result))


def kept_result(operator: Any) -> dict[str, Any] | None:
    """The dict the operator's decorated method last returned in this process, or None."""
    value = getattr(operator, RESULT_ATTRIBUTE, None)
    return value if isinstance(value, dict) else None
