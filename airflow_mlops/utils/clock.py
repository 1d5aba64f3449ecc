"""The one clock the package writes timestamps with: UTC, ISO 8601, whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def utc_now_iso() -> str:
    """The current time in UTC as ISO 8601 with whole seconds, e.g. ``2026-12-01T20:54:24+00:00``."""
    return utc_now().isoformat(timespec="seconds")
