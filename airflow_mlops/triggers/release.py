"""Trigger that waits, in the triggerer, until another task instance's release of a model ends."""

from __future__ import annotations

import asyncio
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.serving.record import ReleaseRecord
from airflow_mlops.signing import record_keys
from airflow_mlops.triggers._polling import PollFailures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_mlops.signing import SigningKeys

#: Consecutive failed registry reads after which the trigger gives up (an unreachable server: see
#: :mod:`airflow_mlops.triggers._polling`).
MAX_CONSECUTIVE_ERRORS = 5


class ReleaseFinishedTrigger(BaseTrigger):
    """
    Poll a registered model's release pointer (``mlops.release``) until the release *release_id* ends.

    Reads go through the MLflow client in a thread (:func:`asyncio.to_thread`) and
    :meth:`ReleaseRecord.load <airflow_mlops.serving.record.ReleaseRecord.load>`, which a release checks with
    too: a pointer the package did not sign counts as absent. It yields exactly one event
    ``{"status", "message", "model_name", "release_id", "step", "deadline"}``: ``success`` when the release is
    done, or the pointer names another release (or none), ``expired`` when the release's lease passed without
    a write (its task died: a new release may take over), ``timeout`` at the deadline while it is still live,
    ``error`` after repeated failed reads. ``step`` is the release's last step seen (None if none was read).

    :param model_name: The registered model.
    :param release_id: The id of the release waited for (``dag/run/task/map_index`` of its task instance).
    :param deadline: Epoch seconds after which the wait ends with ``timeout`` (absolute, so a restarted
        triggerer keeps the original bound).
    :param mlflow_conn_id: MLflow connection.
    :param poll_interval: Seconds between reads.
    """

    def __init__(
        self,
        *,
        model_name: str,
        release_id: str,
        deadline: float,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.release_id = release_id
        self.deadline = float(deadline)
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger's class path and exactly its constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_name": self.model_name,
                "release_id": self.release_id,
                "deadline": self.deadline,
                "mlflow_conn_id": self.mlflow_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    @cached_property
    def _hook(self) -> MLflowHook:
        # A read that cannot reach the server fails at once; the next poll tries again (see triggers._polling).
        return MLflowHook(self.mlflow_conn_id, outage_timeout=0)

    @cached_property
    def _keys(self) -> SigningKeys | None:
        return record_keys()

    def _read(self) -> ReleaseRecord | None:
        """The model's last release, as a release reads it (blocking: runs in a thread)."""
        client = self._hook.get_conn()  # registers the connection's credentials in this thread's context
        return ReleaseRecord.load(client, self.model_name, 0.0, self._keys)

    def _event(self, status: str, message: str, step: str | None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "message": message,
                "model_name": self.model_name,
                "release_id": self.release_id,
                "step": step,
                "deadline": self.deadline,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the release ends, its lease passes, the deadline passes, or reads keep failing."""
        where = f"release {self.release_id} of model {self.model_name!r}"
        failures, step, message = PollFailures(MAX_CONSECUTIVE_ERRORS), None, "no read yet"
        while True:
            try:
                last = await asyncio.to_thread(self._read)
            except Exception as err:  # network, server and connection errors: retried, then reported
                message = f"cannot read the release of model {self.model_name!r}: {type(err).__name__}: {err}"
                give_up = failures.failed(err)
                self.log.warning("%s (%d in a row%s)", message, failures.count, failures.outage())
                if give_up:
                    yield self._event(
                        "error",
                        f"{where}: {failures.count} reads failed in a row{failures.outage()}; last: {message}",
                        step,
                    )
                    return
            else:
                failures.succeeded()
                if last is None:
                    yield self._event(
                        "success", f"Model {self.model_name!r} records no release any more", step
                    )
                    return
                if last.id != self.release_id:
                    yield self._event("success", f"The {where} was replaced: {last.describe()}", step)
                    return
                step = last.step
                if last.done:
                    yield self._event("success", f"The {where} ended ({last.data.get('outcome')})", step)
                    return
                if last.expired():
                    yield self._event(
                        "expired",
                        f"The {where} stopped at step {step}: its lease passed at {last.data.get('expires')} "
                        "without a write",
                        step,
                    )
                    return
                message = f"the {where} is at step {step} (lease until {last.data.get('expires')})"
                self.log.info("Waiting: %s", message)
            if time.time() >= self.deadline:
                yield self._event("timeout", f"The deadline passed; {message}", step)
                return
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))
