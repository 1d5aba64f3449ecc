"""What an operator's run returned, kept on the operator for what reads it after the task ends."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RESULT_ATTRIBUTE", "keep", "keep_result", "kept_result"]

#: The operator attribute that holds the last value :func:`keep_result` saw returned.
RESULT_ATTRIBUTE = "_mlops_result"

_F = TypeVar("_F", bound="Callable[..., Any]")


def keep_result(method: _F) -> _F:
    """
    Decorate an operator's ``execute`` (or ``execute_complete``) to keep what it returns on the operator.

    The OpenLineage listener builds a task's COMPLETE event after ``execute`` returned, in a child process
    of the task; it reads the result there from the operator (:func:`kept_result`), not from the XCom
    backend.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        setattr(self, RESULT_ATTRIBUTE, result)
        return result

    return wrapper  # type: ignore[return-value]


def keep(operator: Any, result: Any) -> None:
    """Keep *result* on the operator as :func:`keep_result` does: for a task that fails after building it."""
    setattr(operator, RESULT_ATTRIBUTE, result)


def kept_result(operator: Any) -> dict[str, Any] | None:
    """The dict the operator's decorated method last returned in this process, or None."""
    value = getattr(operator, RESULT_ATTRIBUTE, None)
    return value if isinstance(value, dict) else None
