"""The one clock the package writes timestamps with: UTC, ISO 8601, whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def utc_now_iso() -> str:
    """The current time in UTC as ISO 8601 with whole seconds, e.g. ``2026-12-01T20:54:24+00:00``."""
    return utc_now().isoformat(timespec="seconds")


def aware_time(value: Any, field: str) -> datetime | None:
    """
    *value* (an ISO 8601 time with a time zone, or a datetime) as an aware datetime; None or "" is None.

    :raises ValueError: naming *field* when it is no such time, or carries no time zone.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError as err:
            raise ValueError(
                f"{field} must be an ISO 8601 time such as 2026-12-05T00:00:00+00:00, got {value!r}"
            ) from err
    if moment.tzinfo is None:
        raise ValueError(f"{field} must carry a time zone, got {value!r}")
    return moment
