"""
How long a release waits for another task instance's release of the same model, and what it says when it gives up.

A release never runs beside another one: :meth:`~airflow_mlops.serving.release.Release.check_free` refuses to
start while another task instance's release is live, and lets a new one take over a release whose lease (its
longest wait plus 10 minutes since its last write) passed. A release that waits (``wait_for_release``) defers
on :class:`~airflow_mlops.triggers.release.ReleaseFinishedTrigger` until that release is done, its lease
passed, another release replaced it, or the wait's absolute deadline passed; then it plans again from what
serves by then. Taking over before the lease passes would race a live release, so at the deadline a release
that is still live makes the waiting one fail (:func:`still_in_progress`), changing nothing. No Airflow import.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import ReleaseInProgressError

if TYPE_CHECKING:
    from airflow_mlops.serving.record import ReleaseRecord


def wait_seconds(value: Any, field: str = "wait_for_release") -> float | None:
    """
    A wait given as a ``timedelta`` or seconds, in seconds (None stays None: the configured default).

    :raises ValueError: if *value* is not a duration of zero or more.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(
            f"{field} must be a timedelta or a number of seconds, 0 or more (0: do not wait), or None for "
            f"[mlops] release_wait_timeout; got {value!r}"
        )
    return float(value)


def still_in_progress(last: ReleaseRecord, waited: float, action: str = "release") -> ReleaseInProgressError:
    """
    The failure of a release that waited *waited* seconds for *last*, which is still live.

    It names that release, when its lease passes, and what to do; it is retryable (a retry waits again).
    """
    expires = last.data.get("expires") or "unknown"
    return ReleaseInProgressError(
        f"This {action} of model {last.model_name!r} waited {waited:g} s (wait_for_release) for another task's "
        f"release to end, and it is still in progress: {last.describe()}. It holds the model until it ends or "
        f"its lease passes without a write (at {expires}); taking over before then would race it, so nothing "
        "was changed. Let that release finish (see its task's log) and run this again, or give a "
        "wait_for_release longer than its lease ([mlops] release_wait_timeout) so a release whose task died "
        "is taken over.",
        model=last.model_name,
        version=str(last.data.get("version")),
        reason="release in progress",
    )
