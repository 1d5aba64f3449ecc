"""Trigger that reads, in the triggerer, the answer Airflow holds for a Human-in-the-loop request."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Consecutive failed reads after which the trigger gives up.
MAX_CONSECUTIVE_ERRORS = 5


class HITLAnswerTrigger(BaseTrigger):
    """
    Read whether the Human-in-the-loop request of a task instance holds an answer; never wait for one.

    A retried task instance keeps the request of its earlier try, answer included, until the retry writes its
    own request (which clears the answer). A task process cannot read the request; the triggerer can, as the
    standard provider's ``HITLTrigger`` does. The trigger reads (and fires) no sooner than *not_before*: a
    deferred task resumed before the scheduler has handled the exit of the process that deferred it is failed by
    the scheduler on Airflow 3.3.2 (the same race that fails an approval answered too fast). One event:

    - ``{"status": "answered", "message", "chosen_options", "params_input", "responded_at", "responded_by_user",
      "timedout"}``: the request was answered (``responded_at`` ISO 8601; ``responded_by_user``
      ``{"id", "name"}``, or None with ``timedout`` True when the timeout default was applied);
    - ``{"status": "unanswered", "message"}``: no request, or nobody answered it;
    - ``{"status": "error", "message"}``: the request could not be read (repeated failures, or the deadline).

    :param ti_id: Id of the task instance (its current try), as a string.
    :param deadline: Epoch seconds after which the trigger stops retrying failed reads (absolute, so a
        restarted triggerer keeps it).
    :param poll_interval: Seconds between retries of a failed read.
    :param not_before: Epoch seconds before which the trigger neither reads nor fires (0: at once).
    """

    def __init__(
        self, *, ti_id: str, deadline: float, poll_interval: float = 2.0, not_before: float = 0.0
    ) -> None:
        super().__init__()
        self.ti_id = str(ti_id)
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.not_before = float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger's class path and exactly its constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ti_id": self.ti_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "not_before": self.not_before,
            },
        )

    async def _read(self) -> Any:
        """The request's response part, or None when the task instance has no request."""
        # asgiref's thread hand-off, as HITLTrigger does: on Airflow 3.1 the triggerer's channel to its
        # supervisor is only reachable from a thread sync_to_async started, not from asyncio.to_thread.
        try:
            return await sync_to_async(get_hitl_detail_content_detail)(ti_id=UUID(self.ti_id))
        except Exception as err:
            if _status_code(err) == 404:
                return None
            raise

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read the request (retrying failed reads until the deadline); yield one event."""
        await asyncio.sleep(max(0.0, self.not_before - time.time()))
        errors = 0
        while True:
            try:
                response = await self._read()
                break
            except Exception as err:
                errors += 1
                self.log.warning(
                    "Reading the Human-in-the-loop request of %s failed (%d in a row): %s", self.ti_id, errors,
                    err,
                )  # fmt: skip
                if errors >= MAX_CONSECUTIVE_ERRORS or time.time() >= self.deadline:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "message": f"Cannot read the Human-in-the-loop request of {self.ti_id}: {err}",
                        }
                    )
                    return
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))
        if response is None or not (response.response_received and response.chosen_options):
            what = "no request" if response is None else "a request nobody answered"
            self.log.info("Task instance %s has %s", self.ti_id, what)
            yield TriggerEvent({"status": "unanswered", "message": f"Task instance {self.ti_id} has {what}"})
            return
        user = response.responded_by_user
        responded_by = {"id": str(user.id), "name": str(user.name)} if user is not None else None
        responded_at = response.responded_at
        self.log.info(
            "Task instance %s holds the answer %s by %s at %s", self.ti_id, list(response.chosen_options),
            responded_by["name"] if responded_by else "nobody (timeout default)", responded_at,
        )  # fmt: skip
        yield TriggerEvent(
            {
                "status": "answered",
                "message": f"Task instance {self.ti_id} holds an answer",
                "chosen_options": list(response.chosen_options),
                "params_input": dict(response.params_input or {}),
                "responded_at": responded_at.isoformat() if isinstance(responded_at, datetime) else None,
                "responded_by_user": responded_by,
                "timedout": responded_by is None,
            }
        )


def _status_code(err: BaseException) -> int | None:
    """The HTTP status of a failed request the supervisor relayed (``AirflowRuntimeError``), or None."""
    detail = getattr(getattr(err, "error", None), "detail", None)
    code = detail.get("status_code") if isinstance(detail, dict) else None
    return code if isinstance(code, int) else None
