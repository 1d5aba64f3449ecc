"""Trigger that watches a released model version's live traffic, in the triggerer, until a verdict."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.triggers._polling import PollFailures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Consecutive failed measurements after which the trigger gives up (the task is retried).
MAX_CONSECUTIVE_ERRORS = 5


class ReleaseWatchTrigger(BaseTrigger):
    """
    Measure a released version's live traffic every interval until the watch's verdict.

    Each interval: what the target serves (another version there ends the watch: ``superseded``), one
    health check of its endpoint, and the captured requests of the version since ``start``
    (:func:`~airflow_mlops.serving.watch.measure`), judged by the policy
    (:meth:`~airflow_mlops.serving.watch.WatchPolicy.judge`). One event: ``{"verdict": "pass" | "fail" |
    "inconclusive" | "superseded", "message", "measurements"}``, or ``{"verdict": "error", "message"}`` after
    repeated failed measurements.

    :param model_name: The served model.
    :param version: The version watched.
    :param target: The deploy target's config (:meth:`~airflow_mlops.serving.base.DeployTarget.to_config`).
    :param capture_uri: Data root the ``captures/`` folder is under (a folder or ``s3://`` prefix).
    :param start: Start of the window (ISO 8601, UTC): when the version began to serve.
    :param policy: The watch policy's fields (:class:`~airflow_mlops.serving.watch.WatchPolicy`).
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` captures.
    :param reference: The version's predictions on the holdout, for the policy's ``prediction_drift``.
    """

    def __init__(
        self,
        *,
        model_name: str,
        version: str,
        target: dict[str, Any],
        capture_uri: str,
        start: str,
        policy: dict[str, Any],
        aws_conn_id: str | None = "aws_default",
        reference: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.version = str(version)
        self.target = target
        self.capture_uri = capture_uri
        self.start = start
        self.policy = policy
        self.aws_conn_id = aws_conn_id
        self.reference = reference

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger's class path and exactly its constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_name": self.model_name,
                "version": self.version,
                "target": self.target,
                "capture_uri": self.capture_uri,
                "start": self.start,
                "policy": self.policy,
                "aws_conn_id": self.aws_conn_id,
                "reference": self.reference,
            },
        )

    def _measure(self, down: int) -> tuple[dict[str, Any], str | None]:
        """
        One measurement: ``(measurements, serving)``; *serving* is the version the target serves now.

        *down*: failed health checks in a row before this one.
        """
        from airflow_mlops.serving.base import DeployTarget, target_from_config
        from airflow_mlops.serving.watch import measure

        target = target_from_config(self.target)
        current = target.current(self.model_name)
        if current is None:
            health_ok, health = False, "nothing serves the model"
        else:
            checked = DeployTarget.health(target, current)  # a plain check: the watch restarts nothing
            health_ok, health = checked.ok, checked.message
        from airflow_mlops.hooks.storage import StorageHook

        storage = StorageHook(aws_conn_id=self.aws_conn_id, outage_timeout=0).storage_for(self.capture_uri)
        measured = measure(
            self.capture_uri,
            self.model_name,
            self.version,
            datetime.fromisoformat(self.start),
            datetime.now(UTC),
            storage,
            self.reference,
        )
        measured["unavailable_checks"] = 0 if health_ok else down + 1
        measured["health"] = health
        return measured, (current.version if current is not None else None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Measure every interval until a limit is broken or the window ends; one event."""
        from airflow_mlops.serving.watch import WatchPolicy

        policy = WatchPolicy.coerce(self.policy)
        end = datetime.fromisoformat(self.start).timestamp() + policy.window_seconds
        failures = PollFailures(MAX_CONSECUTIVE_ERRORS)
        down = 0
        while True:
            final = time.time() >= end
            try:
                measured, serving = await asyncio.to_thread(self._measure, down)
                failures.succeeded()
            except Exception as err:
                give_up = failures.failed(err)
                self.log.warning(
                    "Measuring version %s of %s failed (%d in a row%s): %s",
                    self.version, self.model_name, failures.count, failures.outage(), err,
                )  # fmt: skip
                if give_up:
                    yield TriggerEvent(
                        {
                            "verdict": "error",
                            "message": f"Cannot measure version {self.version} of {self.model_name!r} "
                            f"({failures.count} failed measurements in a row{failures.outage()}): {err}",
                        }
                    )
                    return
                await asyncio.sleep(policy.interval_seconds)
                continue
            down = int(measured["unavailable_checks"])
            if serving is not None and serving != self.version:
                yield TriggerEvent(
                    {
                        "verdict": "superseded",
                        "message": f"version {serving} serves now, not {self.version}: the watch ends",
                        "measurements": measured,
                    }
                )
                return
            verdict, message = policy.judge(measured, final=final)
            self.log.info("Watch of %s v%s: %s (%s)", self.model_name, self.version, message, measured)
            if verdict is not None:
                yield TriggerEvent({"verdict": verdict, "message": message, "measurements": measured})
                return
            await asyncio.sleep(max(0.0, min(policy.interval_seconds, end - time.time())))
