"""Trigger that bakes a canary in the triggerer: live requests of canary and baseline, judged until a verdict."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.triggers._polling import PollFailures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_mlops.data.storage import Storage

#: Consecutive failed measurements after which the trigger gives up (the task is retried; the bake resumes).
MAX_CONSECUTIVE_ERRORS = 5
#: Measurements kept in the final event (the last ones).
KEPT_MEASUREMENTS = 20


class CanaryBakeTrigger(BaseTrigger):
    """
    Judge a canary on the live requests it and the baseline answered, every interval, until the bake's verdict.

    Each interval the captured requests of both versions since ``start`` are read
    (:func:`~airflow_mlops.serving.canary.measure_live`) and judged
    (:func:`~airflow_mlops.serving.canary.judge_canary`): one measurement. More than the policy's
    ``failure_limit`` failed measurements end the bake with ``fail`` at once. At ``deadline`` a passing
    measurement ends it with ``pass``; an inconclusive one (too few requests) extends the bake to
    ``final_deadline``, where it ends ``inconclusive`` unless it passed or failed meanwhile. The deadlines are
    absolute, so a trigger started again (a retried task) bakes the same window. One event: ``{"status":
    "success" | "error", "verdict": "pass" | "fail" | "inconclusive", "message", "measurements",
    "last"}``.

    :param model_name: The served model.
    :param canary_version: The version baked (the canary).
    :param baseline_version: The version serving beside it.
    :param capture_uri: Data root the ``captures/`` folder is under (a folder or ``s3://`` prefix).
    :param start: Start of the bake window (ISO 8601, UTC).
    :param deadline: End of the bake (ISO 8601, UTC).
    :param final_deadline: End of the bake's extensions (ISO 8601, UTC), at or after *deadline*.
    :param policy: The canary policy's fields (:class:`~airflow_mlops.serving.canary.CanaryPolicy`).
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` captures.
    """

    def __init__(
        self,
        *,
        model_name: str,
        canary_version: str,
        baseline_version: str,
        capture_uri: str,
        start: str,
        deadline: str,
        final_deadline: str,
        policy: dict[str, Any],
        aws_conn_id: str | None = "aws_default",
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.canary_version = str(canary_version)
        self.baseline_version = str(baseline_version)
        self.capture_uri = capture_uri
        self.start = start
        self.deadline = deadline
        self.final_deadline = final_deadline
        self.policy = policy
        self.aws_conn_id = aws_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger's class path and exactly its constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_name": self.model_name,
                "canary_version": self.canary_version,
                "baseline_version": self.baseline_version,
                "capture_uri": self.capture_uri,
                "start": self.start,
                "deadline": self.deadline,
                "final_deadline": self.final_deadline,
                "policy": self.policy,
                "aws_conn_id": self.aws_conn_id,
            },
        )

    def _measure(self) -> dict[str, Any]:
        """One measurement of the window so far (blocking: reads the captures)."""
        from airflow_mlops.serving.canary import CanaryPolicy, judge_canary, measure_live
        from airflow_mlops.serving.monitor import read_labels

        policy = CanaryPolicy.from_dict(self.policy)
        start, end = datetime.fromisoformat(self.start), datetime.now(UTC)
        sides = [
            measure_live(self.capture_uri, self.model_name, version, start, end, self._storage(self.capture_uri))
            for version in (self.canary_version, self.baseline_version)
        ]
        labels = None
        if policy.labels_uri:  # labels arrive during the bake: read again at every measurement
            labels = read_labels(policy.labels_uri, policy.label_column, self._storage(policy.labels_uri))
        judged = judge_canary(sides[0], sides[1], policy, labels)
        return {"time": end.isoformat(timespec="seconds"), **judged}

    def _storage(self, uri: str) -> Storage:
        """The storage of *uri*, S3 through ``aws_conn_id`` (no outage wait: the next measurement tries again)."""
        from airflow_mlops.hooks.storage import StorageHook

        return StorageHook(aws_conn_id=self.aws_conn_id, outage_timeout=0).storage_for(uri)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Measure every interval until the bake fails, passes at its deadline, or ends inconclusive."""
        from airflow_mlops.serving.canary import FAIL, INCONCLUSIVE, PASS, CanaryPolicy

        policy = CanaryPolicy.from_dict(self.policy)
        deadline = datetime.fromisoformat(self.deadline).timestamp()
        final_deadline = max(deadline, datetime.fromisoformat(self.final_deadline).timestamp())
        failures = PollFailures(MAX_CONSECUTIVE_ERRORS)
        measurements: list[dict[str, Any]] = []
        failed = 0
        while True:
            now = time.time()
            try:
                measured = await asyncio.to_thread(self._measure)
                failures.succeeded()
            except Exception as err:
                give_up = failures.failed(err)
                self.log.warning(
                    "Measuring the canary %s of %s failed (%d in a row%s): %s",
                    self.canary_version, self.model_name, failures.count, failures.outage(), err,
                )  # fmt: skip
                if give_up:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "verdict": "error",
                            "message": f"Cannot measure the canary {self.canary_version} of {self.model_name!r} "
                            f"({failures.count} failed measurements in a row{failures.outage()}): {err}",
                            "measurements": measurements[-KEPT_MEASUREMENTS:],
                        }
                    )
                    return
                await asyncio.sleep(policy.interval)
                continue
            measurements.append(_summary(measured))
            verdict = measured["verdict"]
            failed += verdict == FAIL
            self.log.info(
                "Canary %s of %s vs %s: %s (failed measurements %d of at most %d): %s",
                self.canary_version, self.model_name, self.baseline_version, verdict, failed,
                policy.failure_limit, "; ".join(measured["reasons"]) or "within the limits",
            )  # fmt: skip
            end: str | None = None
            if failed > policy.failure_limit:
                end = FAIL
            elif now >= deadline and verdict == PASS:
                end = PASS
            elif now >= final_deadline:
                end = verdict if verdict in (PASS, INCONCLUSIVE) else FAIL
            if end is not None:
                yield TriggerEvent(
                    {
                        "status": "success",
                        "verdict": end,
                        "message": _message(end, measured, len(measurements), failed),
                        "measurements": measurements[-KEPT_MEASUREMENTS:],
                        "last": measured,
                    }
                )
                return
            left = (deadline if now < deadline else final_deadline) - time.time()
            await asyncio.sleep(max(0.0, min(policy.interval, left)))


def _summary(measured: dict[str, Any]) -> dict[str, Any]:
    """A measurement's counts and verdict (what the event and the history keep of each)."""
    return {
        "time": measured["time"],
        "verdict": measured["verdict"],
        "canary": measured["canary"],
        "baseline": measured["baseline"],
    }


def _message(verdict: str, measured: dict[str, Any], taken: int, failed: int) -> str:
    c, b = measured["canary"], measured["baseline"]
    counts = (
        f"canary {c['requests']} live requests ({c['errors']} failed), baseline {b['requests']} "
        f"({b['errors']} failed); {taken} measurements, {failed} failed"
    )
    reasons = "; ".join(measured["reasons"])
    if verdict == "pass":
        return f"the canary passed its bake: {counts}"
    if verdict == "inconclusive":
        return f"the canary's bake is inconclusive after its extension: {reasons} ({counts})"
    return f"the canary failed its bake: {reasons} ({counts})"
