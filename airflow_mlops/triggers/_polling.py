"""
When a trigger's failed polls end its wait.

A trigger reads MLflow and S3 through hooks built with ``outage_timeout=0``: a read that cannot reach its
server fails at once instead of sleeping through the outage in a triggerer thread, and the trigger polls again
at its own interval. :class:`PollFailures` decides when to stop: after a number of failed polls in a row and,
while the server cannot be reached (:class:`~airflow_mlops.exceptions.ServiceUnavailableError`, or
:class:`~airflow_mlops.data.storage.S3UnreachableError`), not before ``[mlops] service_outage_timeout`` seconds
from its first failed poll, as a task would wait.
"""

from __future__ import annotations

import time

from airflow_mlops.data.storage import S3UnreachableError
from airflow_mlops.exceptions import ServiceUnavailableError

#: What a hook raises when its server cannot be reached (an outage, not a wrong request).
UNREACHABLE = (ServiceUnavailableError, S3UnreachableError)


class PollFailures:
    """
    The failed polls of a trigger, in a row.

    :param limit: Failed polls in a row that end the wait (an unreachable server: once the outage window
        has passed too).
    :param outage_window: Seconds an unreachable server is waited out; default ``[mlops]
        service_outage_timeout``.
    """

    def __init__(self, limit: int, outage_window: float | None = None) -> None:
        self.limit = limit
        self._outage_window = outage_window
        self.count = 0
        self._outage_since: float | None = None

    @property
    def outage_window(self) -> float:
        if self._outage_window is None:
            from airflow_mlops.utils.config import service_outage_timeout

            self._outage_window = service_outage_timeout()
        return self._outage_window

    def succeeded(self) -> None:
        """A poll worked: the count starts again."""
        self.count = 0
        self._outage_since = None

    def failed(self, err: BaseException) -> bool:
        """Count a failed poll; True when the wait should end now."""
        self.count += 1
        if not isinstance(err, UNREACHABLE):
            self._outage_since = None
            return self.count >= self.limit
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        return self.count >= self.limit and now - self._outage_since >= self.outage_window

    def outage(self) -> str:
        """``, the server unreachable for 42 s`` while the polls fail for that reason, else ``""``."""
        if self._outage_since is None:
            return ""
        return f", the server unreachable for {time.monotonic() - self._outage_since:.0f} s"
