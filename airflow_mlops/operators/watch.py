"""Operator that watches a release after it serves all traffic, and rolls it back when live traffic breaks it."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow_mlops.exceptions import ConfigurationError, DeploymentRejectedError, ServiceUnavailableError
from airflow_mlops.operators.deployment import RollbackModelOperator
from airflow_mlops.serving.watch import FAIL, INCONCLUSIVE, WatchPolicy
from airflow_mlops.utils.results import json_safe, keep_result

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context
    from mlflow import MlflowClient

    from airflow_mlops.results import ReleaseWatchResult
    from airflow_mlops.serving.base import DeployTarget
    from airflow_mlops.serving.status import Deployment
    from airflow_mlops.signing import SigningKeys

#: Actions of the deployment history that put a version in service.
_SERVED = ("deploy", "rollback", "auto_rollback")


class WatchReleaseOperator(RollbackModelOperator):
    """
    Watch the version a model serves, for a while after its release, and roll it back if live traffic breaks it.

    Put it after :class:`~airflow_mlops.operators.deployment.DeployModelOperator`. The watch runs in the
    triggerer (:class:`~airflow_mlops.triggers.watch.ReleaseWatchTrigger`; no worker slot is held): every
    ``interval_seconds`` it checks the endpoint's health and reads the requests the version answered since it
    began to serve (its deployment-history entry; the captures of the target, see ``capture``), and judges them
    by the :class:`~airflow_mlops.serving.watch.WatchPolicy` ``watch``: the share of requests not answered
    with a 2xx status, the p95 latency where captures record it, and failed health checks in a row. A broken
    limit rolls the model back at once to the previous champion through the same release machinery as
    :class:`~airflow_mlops.operators.deployment.RollbackModelOperator` (checks, verification, the history
    entry, whose reason carries the measurements; a retry finishes that same rollback). A window that ends
    within the limits passes; one with fewer than ``min_requests`` requests is ``inconclusive`` and rolls
    nothing back (logged as a warning). If another version serves meanwhile (a new deploy or a manual
    rollback), the watch ends as ``superseded`` and changes nothing.

    Returns (XCom) ``{"model_name", "version", "verdict", "message", "measurements"}``; after a rollback also
    the rollback's result (``version`` is then the restored version, ``watched_version`` the one rolled away
    from).

    :param model_name: Registered model name (templated).
    :param target: The deploy target, as the deploy task has it (templated).
    :param watch: The watch policy: a :class:`~airflow_mlops.serving.watch.WatchPolicy` or a dict of its
        fields (``window`` may be a timedelta), e.g. ``{"window_seconds": 1800, "max_error_rate": 0.02}``.
    :param capture_uri: Data root whose ``captures/`` hold the served requests (templated); default the
        target's capture root (the local target's ``capture`` setting).
    :param reason: Reason recorded with a rollback, before the measurements.
    :param kwargs: The other arguments of :class:`~airflow_mlops.operators.deployment.RollbackModelOperator`
        (``sample_data`` for the rollback's smoke test, ``mlflow_conn_id``, ``aws_conn_id``...).
    """

    template_fields: Sequence[str] = RollbackModelOperator.template_fields  # capture_uri among them
    ui_color = "#fff8e1"

    def __init__(
        self,
        *,
        model_name: str,
        target: DeployTarget | dict[str, Any] | str | None = "local",
        watch: WatchPolicy | Mapping[str, Any] | None = None,
        capture_uri: str | None = None,
        reason: str = "release watch",
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, target=target, reason=reason, **kwargs)
        self.watch = WatchPolicy.coerce(watch)
        self.capture_uri = capture_uri

    @keep_result
    def execute(self, context: Context) -> Any:
        from airflow_mlops.serving.record import release_id
        from airflow_mlops.triggers.watch import ReleaseWatchTrigger
        from airflow_mlops.utils.context import airflow_ids

        name = self._model_name()
        target = self._target(self.target)
        release = self._release(target, context)
        last = release.last(name, release_id(airflow_ids(context)))
        if last is not None and last.id == release_id(airflow_ids(context)):
            self.log.info("This task began rolling back %s: finishing that rollback", name)
            return super().execute(context)
        current = target.current(name)
        if current is None:
            raise DeploymentRejectedError(
                f"Task {self.task_id!r}: nothing serves model {name!r} on {target.describe()}: nothing to watch",
                model=name,
            )
        start = _served_since(release.client, name, current.version, release.keys)
        capture_uri = self._capture_uri(target, name)
        reference = self._reference(target, current) if self.watch.prediction_drift else None
        self.log.info(
            "Watching version %s of %s from %s for %.0f s (%s); captures under %s",
            current.version, name, start, self.watch.window_seconds, self.watch, capture_uri,
        )  # fmt: skip
        self.defer(
            trigger=ReleaseWatchTrigger(
                model_name=name,
                version=current.version,
                target=target.to_config(),
                capture_uri=capture_uri,
                start=start,
                policy=self.watch.to_dict(),
                aws_conn_id=self.aws_conn_id,
                reference=reference,
            ),
            method_name="execute_watched",
            kwargs={"version": current.version},
            timeout=timedelta(seconds=self.watch.window_seconds + 10 * self.watch.interval_seconds + 600),
        )

    @keep_result
    def execute_watched(
        self, context: Context, event: dict[str, Any] | None = None, version: str | None = None
    ) -> ReleaseWatchResult:
        """Resume with the watch's verdict: return it, or roll back on ``fail``."""
        name = self._model_name()
        if not event:
            raise ServiceUnavailableError(
                f"Task {self.task_id!r} resumed without a trigger event; run it again"
            )
        verdict, message = str(event.get("verdict")), str(event.get("message"))
        if verdict == "error":
            raise ServiceUnavailableError(f"Task {self.task_id!r}: {message}", model=name)
        summary = {
            "model_name": name,
            "version": str(version),
            "verdict": verdict,
            "message": message,
            "measurements": event.get("measurements") or {},
        }
        if verdict != FAIL:
            log = self.log.warning if verdict == INCONCLUSIVE else self.log.info
            log("Watch of %s v%s: %s: %s", name, version, verdict, message)
            return cast("ReleaseWatchResult", summary)
        self.log.error("Watch of %s v%s failed: %s. Rolling back.", name, version, message)
        self.reason = f"{self.reason}: version {version}: {message}"
        rolled = super().execute(context)
        return cast(
            "ReleaseWatchResult",
            {**rolled, **summary, "version": rolled["version"], "watched_version": str(version)},
        )

    def _reference(self, target: DeployTarget, current: Deployment) -> list[Any]:
        """The served version's predictions on ``sample_data`` (sent as synthetic traffic, not captured as live)."""
        from airflow_mlops.serving.verification import sample_records

        self._take_whole_results()
        name = current.model_name
        if not self.sample_data:
            raise ConfigurationError(
                f"Task {self.task_id!r}: the watch's prediction_drift compares live predictions with those on "
                "the holdout: give sample_data (e.g. ingest.output)",
                model=name,
            )
        verify = self._smoke_test().for_model(f"models:/{name}/{current.version}")
        records = sample_records(
            str(self.sample_data),
            verify.drop_columns,
            self.watch.reference_rows,
            self.aws_conn_id,
            verify.columns,
        )
        predictions = target.predict(current, records, timeout=self.request_timeout)
        self.log.info(
            "Reference of the prediction drift: %d predictions on %s", len(predictions), self.sample_data
        )
        return [json_safe(value) for value in predictions]

    def _capture_uri(self, target: DeployTarget, name: str) -> str:
        if self.capture_uri:
            return str(self.capture_uri)
        settings = getattr(target, "capture_settings", None)
        found = settings() if callable(settings) else None
        if not found or not found.get("uri"):
            raise ConfigurationError(
                f"Task {self.task_id!r}: the watch of {name!r} reads the requests the model served: turn capture "
                "on for the target (the local target's capture=True) or give capture_uri",
                model=name,
            )
        return str(found["uri"])


def _served_since(client: MlflowClient, name: str, version: str, keys: SigningKeys | None) -> str:
    """When *version* began to serve: its last signed, succeeded entry in the deployment history; else now."""
    from airflow_mlops.lineage.deployments import read_history
    from airflow_mlops.utils.clock import utc_now_iso

    for entry in reversed(read_history(client, name, keys)):
        if (
            str(entry.get("version")) == str(version)
            and entry.get("outcome") == "succeeded"
            and entry.get("action") in _SERVED
            and entry.get("time")
        ):
            return str(entry["time"])
    return utc_now_iso()
