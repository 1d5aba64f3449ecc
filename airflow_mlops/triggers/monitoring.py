"""Trigger that waits, in the triggerer, until a served model has captured enough traffic to be monitored."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.triggers._polling import PollFailures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Consecutive failed polls after which the trigger gives up.
MAX_CONSECUTIVE_ERRORS = 5


class CaptureTrafficTrigger(BaseTrigger):
    """
    Poll a model's captures until at least ``min_records`` rows were captured since ``start``.

    Counting reads only Parquet footers, in a thread. One event: ``{"status": "success", "message", "records",
    "end"}`` (``end``: when the count was reached, ISO), ``{"status": "timeout", "message", "records", "end"}``
    at the deadline, or ``{"status": "error", "message"}`` after repeated failed polls.

    :param capture_uri: Data root the ``captures/`` folder is under (a folder or ``s3://`` prefix).
    :param model_name: The served model.
    :param start: Start of the window (ISO 8601, UTC).
    :param min_records: Rows wanted.
    :param deadline: Epoch seconds when the wait ends with ``timeout``.
    :param poll_interval: Seconds between polls.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` captures.
    """

    def __init__(
        self,
        *,
        capture_uri: str,
        model_name: str,
        start: str,
        min_records: int,
        deadline: float,
        poll_interval: float = 60.0,
        aws_conn_id: str | None = "aws_default",
    ) -> None:
        super().__init__()
        self.capture_uri = capture_uri
        self.model_name = model_name
        self.start = start
        self.min_records = int(min_records)
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.aws_conn_id = aws_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger's class path and exactly its constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "capture_uri": self.capture_uri,
                "model_name": self.model_name,
                "start": self.start,
                "min_records": self.min_records,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "aws_conn_id": self.aws_conn_id,
            },
        )

    def _count(self) -> tuple[int, str]:
        from airflow_mlops.hooks.storage import StorageHook
        from airflow_mlops.serving.capture import count_captures
        from airflow_mlops.utils.clock import utc_now

        # A count that cannot reach the store fails at once; the next poll tries again (see triggers._polling).
        storage = StorageHook(aws_conn_id=self.aws_conn_id, outage_timeout=0).storage_for(self.capture_uri)
        end = utc_now()
        return count_captures(
            self.capture_uri, self.model_name, datetime.fromisoformat(self.start), end, storage
        ), (end.isoformat())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until enough rows are captured, the deadline passes, or polls keep failing; one event."""
        failures = PollFailures(MAX_CONSECUTIVE_ERRORS)
        records, end = 0, self.start
        while True:
            try:
                records, end = await asyncio.to_thread(self._count)
                failures.succeeded()
            except Exception as err:
                give_up = failures.failed(err)
                self.log.warning(
                    "Counting captures of %s failed (%d in a row%s): %s",
                    self.model_name, failures.count, failures.outage(), err,
                )  # fmt: skip
                if give_up:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "message": f"Cannot count the captures of {self.model_name!r} "
                            f"({failures.count} failed counts in a row{failures.outage()}): {err}",
                        }
                    )
                    return
            if records >= self.min_records:
                yield TriggerEvent(
                    {
                        "status": "success",
                        "message": f"{records} rows captured",
                        "records": records,
                        "end": end,
                    }
                )
                return
            if time.time() >= self.deadline:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "message": f"Only {records} of {self.min_records} rows captured by the deadline",
                        "records": records,
                        "end": end,
                    }
                )
                return
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))
