"""
Operators that watch what serves: monitor a window of captured traffic, and ask for retraining when it degrades.

:class:`MonitorModelOperator` writes a verdict (healthy, degraded with reasons, not enough traffic) and an
MLflow run; :class:`RequestRetrainingOperator` turns a degraded verdict into an Asset event that schedules the
continuous-training DAG (:func:`~airflow_mlops.retraining.retraining_asset`), at most once per cool-down period,
and can page someone.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops import tags as T
from airflow_mlops.data.drift_thresholds import DEFAULT_THRESHOLDS, check_thresholds
from airflow_mlops.exceptions import (
    ConfigurationError,
    DatasetError,
    ModelVersionNotFoundError,
    RegistryError,
    ServiceUnavailableError,
)
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.links import MLflowRunLink
from airflow_mlops.operators.base import rendered_arguments
from airflow_mlops.retraining import describe_trigger, retraining_asset
from airflow_mlops.serving.base import target_from_config
from airflow_mlops.signing import RETRAINING_REQUEST, SIGNATURE_KEY, Subject, record_keys, untrusted_message
from airflow_mlops.utils.results import json_safe, keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import AirflowSkipException, conf

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.sdk import BaseNotifier, Context

    from airflow_mlops.signing import SigningKeys

__all__ = [
    "LAST_RETRAINING_TAG",
    "MONITORING_VERDICT_TAG",
    "ON_DEGRADED",
    "MonitorModelOperator",
    "RequestRetrainingOperator",
    "describe_trigger",
    "retraining_asset",
]

#: Registered-model tag holding the last retraining request (JSON: time, reasons, Airflow ids).
LAST_RETRAINING_TAG = "mlops.monitoring.last_retraining"
#: Registered-model tag holding the last verdict (JSON: verdict, reasons, window, run).
MONITORING_VERDICT_TAG = "mlops.monitoring.verdict"
ON_DEGRADED = ("retrain", "notify", "both")
_VERDICT_KEYS = ("verdict", "reasons", "model_name", "version", "window", "records", "monitoring_run_id")


def _duration(value: timedelta | float | int, name: str, allow_zero: bool = False) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise ValueError(f"{name} must be a timedelta or a number of seconds, got {value!r}")
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0) or (delta == timedelta(0) and not allow_zero):
        raise ValueError(f"{name} must be {'zero or ' if allow_zero else ''}positive, got {value!r}")
    return delta


class MonitorModelOperator(BaseOperator):
    """
    Monitor the champion of a model from a window of its captured traffic and write a verdict.

    Over the rows the champion served in ``[window_end - window, window_end)`` (captured by the serving side,
    :mod:`airflow_mlops.serving.capture`) it computes feature drift against the champion's training snapshot
    (``mlops.data.uri``), prediction drift against the champion's predictions on its evaluation holdout
    (``mlops.evaluation.summary``), data quality with a Great Expectations suite, and, with ``labels_uri``,
    live performance against the metric the evaluation measured. It logs an MLflow run (metrics, plots, the
    report), linked from the task, and tags the registered model with the verdict (``mlops.monitoring.verdict``).

    With ``wait_for_traffic`` and fewer than ``min_records`` rows it defers (no worker slot held) until enough
    rows are captured or the wait ends; then it monitors what there is.

    Only production traffic counts (requests the model answered, not marked synthetic: see
    :mod:`airflow_mlops.serving.capture`). Captured inputs are read in the types of the champion's signature
    (the training snapshot's where it has none); rows with a value of another type are left out and reported
    (``bad_rows``), never an error. The window is read a record batch at a time and staged on local disk, and
    each check reads one column at a time (:mod:`airflow_mlops.serving.monitor_captures`), so the worker's memory
    grows with one column of the window, not with the window. With ``target``, an endpoint that is unavailable (nothing deployed, its
    health check fails, or the local proxy's status is not 200) makes the verdict ``degraded`` with the reason
    ``endpoint unavailable: ...``, whatever the traffic.

    Served rows logged in a SQL database are monitored where they live: with ``sql_conn_id`` (any common.sql
    connection), ``table`` or ``query`` gives the window's rows (the inputs, the prediction in
    ``prediction_column`` and, when the label arrived, ``label_column``; a query selects the window, e.g. with
    ``{{ data_interval_start }}``), and the reference is ``reference_table`` or ``reference_query`` of the same
    database (default: the champion's training snapshot, read by the worker). The database computes the
    drift summaries, runs the data-quality suite (default: the features present, none null) and aggregates the
    live metric; only summaries reach the worker (:mod:`airflow_mlops.serving.monitor_sql`). No plots are
    logged for SQL data, and the task does not wait for traffic.

    Returns (XCom, JSON-safe) ``{"verdict", "reasons", "model_name", "version", "window", "records",
    "bad_rows", "endpoint", "feature_drift", "prediction_drift", "data_quality", "performance",
    "monitoring_run_id", "monitoring_run_url", "engine"}``; ``verdict`` is ``healthy``, ``degraded`` or
    ``not_enough_traffic``; ``bad_rows`` is ``{"count", "columns"}``; ``endpoint`` is ``{"available",
    "reason"}`` (None without ``target``); ``engine`` is ``"memory"`` or ``"sql"``.

    :param model_name: Registered model whose champion is monitored. (templated)
    :param capture_uri: Data root the captures are under (default ``$MLOPS_DATA_ROOT``). (templated)
    :param window: Length of the window (timedelta or seconds).
    :param window_end: End of the window, ISO 8601 (default: now). (templated)
    :param min_records: Fewest captured rows for a verdict; fewer: ``not_enough_traffic``.
    :param wait_for_traffic: How long to wait (deferred) for ``min_records`` rows (None: do not wait).
    :param label_column: Label column of the training snapshot (not an input) and of ``labels_uri``.
    :param labels_uri: Ground truth that arrived later: a Parquet or CSV file (or glob) with ``_request_id``
        and ``label_column``. (templated)
    :param performance_metric: Live metric compared with the evaluation's (default ``accuracy_score``).
    :param max_performance_drop: Degraded when the live metric is worse than the evaluation's by more.
    :param min_labels: Fewest joined labels for a live metric.
    :param thresholds: Feature drift limits per metric (as for the drift gate).
    :param feature_thresholds: Limits per feature.
    :param prediction_thresholds: Prediction drift limits (default: the drift gate's).
    :param expectations: Great Expectations suite of the captured inputs (expectation dicts); default: exactly
        the training features, none null.
    :param exclude_columns: Snapshot columns that are not inputs (besides ``label_column``).
    :param experiment_name: MLflow experiment of the monitoring runs (default ``<model>-monitoring``).
    :param poll_interval: Seconds between two counts while waiting for traffic.
    :param target: Where the model serves (a ``DeployTarget``, a config dict such as ``{"kind": "local", "port":
        5001}``, or a kind name), to check that its endpoint is available; None: not checked.
    :param deferrable: Wait in the triggerer (default ``[operators] default_deferrable``).
    :param mlflow_conn_id: Airflow ``mlflow`` connection.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` captures and snapshots.
    :param sql_conn_id: Airflow connection of the SQL database the served rows are logged in (any common.sql
        ``DbApiHook``), instead of captures. (templated)
    :param table: Table of the window's served rows. (templated)
    :param query: ``SELECT`` of the window's served rows, instead of ``table``. (templated)
    :param reference_table: Reference table of the same database (default: the champion's training
        snapshot). (templated)
    :param reference_query: Reference ``SELECT``, instead of ``reference_table``. (templated)
    :param prediction_column: Column of the logged rows holding the prediction (with ``sql_conn_id``).
    """

    template_fields: Sequence[str] = (
        "model_name", "capture_uri", "window_end", "labels_uri", "mlflow_conn_id", "aws_conn_id", "sql_conn_id",
        "table", "query", "reference_table", "reference_query",
    )  # fmt: skip
    template_fields_renderers = {"query": "sql", "reference_query": "sql"}
    operator_extra_links = (MLflowRunLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        capture_uri: str | None = None,
        window: timedelta | float = timedelta(hours=1),
        window_end: str | None = None,
        min_records: int = 100,
        wait_for_traffic: timedelta | float | None = None,
        label_column: str = "label",
        labels_uri: str | None = None,
        performance_metric: str = "accuracy_score",
        max_performance_drop: float = 0.05,
        min_labels: int = 50,
        thresholds: dict[str, float] | None = None,
        feature_thresholds: dict[str, dict[str, float]] | None = None,
        prediction_thresholds: dict[str, float] | None = None,
        expectations: list[dict[str, Any]] | None = None,
        exclude_columns: list[str] | None = None,
        experiment_name: str | None = None,
        poll_interval: float = 60.0,
        target: Any = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        mlflow_conn_id: str = "mlflow_default",
        aws_conn_id: str | None = StorageHook.default_conn_name,
        sql_conn_id: str | None = None,
        table: str | None = None,
        query: str | None = None,
        reference_table: str | None = None,
        reference_query: str | None = None,
        prediction_column: str = "prediction",
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        from airflow_mlops.data.expectations import check_expectations
        from airflow_mlops.serving.monitor import PERFORMANCE_METRICS

        if not is_templated(model_name):  # a template or another task's result is checked once rendered
            _check_model_name(model_name)
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.query = query
        self.reference_table = reference_table
        self.reference_query = reference_query
        self.prediction_column = prediction_column
        _check_sql_sources(self, capture_uri, labels_uri, wait_for_traffic, rendered=False)
        for name, value in (("min_records", min_records), ("min_labels", min_labels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if performance_metric not in PERFORMANCE_METRICS:
            raise ValueError(
                f"performance_metric must be one of {', '.join(PERFORMANCE_METRICS)}, got {performance_metric!r}"
            )
        if isinstance(max_performance_drop, bool) or not isinstance(max_performance_drop, int | float):
            raise ValueError(f"max_performance_drop must be a number, got {max_performance_drop!r}")
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or poll_interval <= 0
        ):
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        self.model_name = model_name
        self.capture_uri = capture_uri
        self.window = _duration(window, "window")
        self.window_end = window_end
        self.min_records = min_records
        self.wait_for_traffic = (
            None if wait_for_traffic is None else _duration(wait_for_traffic, "wait_for_traffic")
        )
        self.label_column = label_column
        self.labels_uri = labels_uri
        self.performance_metric = performance_metric
        self.max_performance_drop = float(max_performance_drop)
        self.min_labels = min_labels
        self.thresholds = check_thresholds(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.feature_thresholds = {
            str(f): check_thresholds(v, f"feature_thresholds[{f!r}]")
            for f, v in (feature_thresholds or {}).items()
        }
        self.prediction_thresholds = check_thresholds(
            DEFAULT_THRESHOLDS if prediction_thresholds is None else prediction_thresholds,
            "prediction_thresholds",
        )
        self.expectations = None if expectations is None else check_expectations(expectations)
        self.exclude_columns = list(exclude_columns or [])
        self.experiment_name = experiment_name
        self.poll_interval = float(poll_interval)
        self.target = None if target is None else target_from_config(target)
        self.deferrable = deferrable
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self.mlflow_run_url = ""

    @cached_property
    def storage_hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def mlflow_hook(self) -> Any:
        from airflow_mlops.hooks.mlflow import MLflowHook

        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def _root(self) -> str:
        from airflow_mlops.data.snapshots import resolve_data_root

        return resolve_data_root((self.capture_uri or "").strip() or None)

    def _window(self) -> tuple[datetime, datetime]:
        from airflow_mlops.utils.clock import aware_time, utc_now

        with rendered_arguments(model=str(self.model_name)):
            end = aware_time(self.window_end, "window_end") or utc_now()
        return end - self.window, end

    # -- execute -------------------------------------------------------------------------------------------

    @keep_result
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.serving.capture import count_captures

        try:
            _check_model_name(self.model_name)
        except ValueError as err:
            raise ConfigurationError(f"{err} once rendered") from err
        _check_sql_sources(self, self.capture_uri, self.labels_uri, self.wait_for_traffic, rendered=True)
        start, end = self._window()
        if self.sql_conn_id is not None:
            return self._monitor_sql(context, start, end, self._endpoint_problem())
        root = self._root()
        storage = self.storage_hook.storage_for(root)
        records = count_captures(root, self.model_name, start, end, storage)
        endpoint_problem = self._endpoint_problem()
        if endpoint_problem:  # no traffic to wait for
            return self._monitor(context, start, end, endpoint_problem)
        if records < self.min_records and self.wait_for_traffic is not None:
            deadline = time.time() + self.wait_for_traffic.total_seconds()
            self.log.info(
                "%d of %d rows captured for %s since %s: waiting up to %s for more",
                records, self.min_records, self.model_name, start.isoformat(), self.wait_for_traffic,
            )  # fmt: skip
            if self.deferrable:
                from airflow_mlops.triggers.monitoring import CaptureTrafficTrigger

                self.defer(
                    trigger=CaptureTrafficTrigger(
                        capture_uri=root,
                        model_name=self.model_name,
                        start=start.isoformat(),
                        min_records=self.min_records,
                        deadline=deadline,
                        poll_interval=self.poll_interval,
                        aws_conn_id=self.aws_conn_id,
                    ),  # fmt: skip
                    method_name="execute_complete",
                    kwargs={"start": start.isoformat()},
                )
            while records < self.min_records and time.time() < deadline:
                time.sleep(min(self.poll_interval, max(0.0, deadline - time.time())))
                end = datetime.now(start.tzinfo)
                records = count_captures(root, self.model_name, start, end, storage)
        return self._monitor(context, start, end)

    @keep_result
    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, start: str | None = None
    ) -> dict[str, Any]:
        """Monitor the window once the trigger says enough traffic arrived (or the wait ended)."""
        if not event or event.get("status") not in ("success", "timeout") or not start:
            message = (event or {}).get("message") or "no event"
            raise ServiceUnavailableError(
                f"Waiting for traffic of model {self.model_name!r} failed: {message}"
            )
        self.log.info("%s", event["message"])
        return self._monitor(
            context,
            datetime.fromisoformat(start),
            datetime.fromisoformat(event["end"]),
            self._endpoint_problem(),
        )

    def _endpoint_problem(self) -> str | None:
        """Why the model's endpoint is unavailable (``endpoint unavailable: ...``), or None (or no ``target``)."""
        if self.target is None:
            return None
        try:
            deployment = self.target.current(self.model_name)
        except Exception as err:
            return f"endpoint unavailable: cannot read the deployment of {self.model_name}: {err}"
        if deployment is None:
            return (
                f"endpoint unavailable: nothing of {self.model_name} is deployed on the "
                f"{self.target.config_kind()} target"
            )
        try:
            health = self.target.health(deployment)
        except Exception as err:
            return f"endpoint unavailable: the health check of {deployment.endpoint} failed: {err}"
        if not health.ok:
            return f"endpoint unavailable: {health.message}"
        if self.target.config_kind() == "local":
            return _proxy_problem(deployment.endpoint)
        return None

    # -- the checks ----------------------------------------------------------------------------------------

    def _champion(self, client: Any) -> tuple[str, dict[str, str]]:
        from airflow_mlops.registry import get_alias_version, get_model_version

        try:
            version = get_alias_version(client, self.model_name, T.CHAMPION)
            if version is None:
                raise ModelVersionNotFoundError(
                    f"Model {self.model_name!r} has no {T.CHAMPION}: nothing serves that could be monitored"
                )
            mv = get_model_version(client, self.model_name, version)
        except RegistryError:
            raise
        except Exception as err:
            raise RegistryError(f"Cannot read the {T.CHAMPION} of model {self.model_name!r}: {err}") from err
        return str(version), dict(mv.tags or {})

    def _monitor(
        self, context: Context, start: datetime, end: datetime, endpoint_problem: str | None = None
    ) -> dict[str, Any]:
        import pyarrow.parquet as pq

        from airflow_mlops.data.drift import SnapshotColumns
        from airflow_mlops.data.snapshots import snapshot_file
        from airflow_mlops.serving import monitor, monitor_captures
        from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID

        client = self.mlflow_hook.client
        version, version_tags = self._champion(client)
        reference_uri = version_tags.get(T.DATA_URI)
        if not reference_uri:
            raise DatasetError(
                f"{self.model_name} v{version} ({T.CHAMPION}) has no {T.DATA_URI} tag: no training snapshot to "
                "compare its traffic with"
            )
        root = self._root()
        storage = self.storage_hook.storage_for(root, reference_uri)
        with ExitStack() as stack:
            try:  # only opening it: a failure of the checks is not the snapshot's
                reference = pq.ParquetFile(stack.enter_context(snapshot_file(reference_uri, storage=storage)))
            except (FileNotFoundError, ValueError) as err:
                raise DatasetError(
                    f"Cannot read the training snapshot {reference_uri}: {err}", uri=reference_uri
                ) from err
            excluded = {self.label_column, *self.exclude_columns}
            features = [c for c in monitor_captures.reference_columns(reference) if c not in excluded]
            reference_frame = SnapshotColumns(reference)  # its columns read when asked for, one at a time
            types = self._input_types(version, reference_frame, features)
            meta = [PREDICTION, *([REQUEST_ID] if self.labels_uri else [])]
            window = stack.enter_context(
                monitor_captures.staged_window(
                    root, self.model_name, start, end, features, storage, meta, version, types
                )
            )
            bad_rows = {"count": window.bad_rows, "columns": window.bad_columns}
            if bad_rows["count"]:
                self.log.warning(
                    "%d captured rows of %s v%s left out: values not of the signature's types in %s",
                    bad_rows["count"], self.model_name, version, ", ".join(window.bad_columns),
                )  # fmt: skip
            records = window.rows
            window_times = {"start": start.isoformat(), "end": end.isoformat()}
            self.log.info(
                "%d rows served by %s v%s in %s - %s",
                records, self.model_name, version, window_times["start"], window_times["end"],
            )  # fmt: skip
            result: dict[str, Any] = {
                "model_name": self.model_name, "version": version, "window": window_times, "records": records,
                "bad_rows": bad_rows,
                "endpoint": None if self.target is None
                else {"available": endpoint_problem is None, "reason": endpoint_problem},
                "feature_drift": None, "prediction_drift": None, "data_quality": None, "performance": None,
                "engine": "memory",
            }  # fmt: skip
            if records >= self.min_records:
                result["feature_drift"] = _compact_drift(
                    monitor_captures.feature_drift(
                        reference, window, features, self.thresholds, self.feature_thresholds
                    )
                )
                holdout_predictions = self._holdout_predictions(version, version_tags, features, storage)
                if holdout_predictions is not None:
                    result["prediction_drift"] = _compact_drift(
                        monitor_captures.prediction_drift(
                            holdout_predictions, window, self.prediction_thresholds
                        )
                    )
                expectations = self.expectations or monitor.quality_suite(features)
                result["data_quality"] = monitor_captures.data_quality(window, expectations, self.model_name)
                if self.labels_uri:
                    result["performance"] = monitor_captures.live_performance(
                        window, self._labels(storage), self.label_column, self.performance_metric,
                        self._baseline(version_tags), self.max_performance_drop, self.min_labels,
                    )  # fmt: skip
            verdict, reasons = monitor.verdict(
                records, self.min_records, result["feature_drift"], result["prediction_drift"],
                result["data_quality"], result["performance"], endpoint_problem,
            )  # fmt: skip
            result.update({"verdict": verdict, "reasons": reasons})
            run_id = self._log_run(context, json_safe(result), reference_frame, window, features)
        result["monitoring_run_id"] = run_id
        return self._publish(client, version, result)

    def _publish(self, client: Any, version: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Tag the registered model with the verdict, log it and return the (JSON-safe) result."""
        from airflow_mlops.serving import monitor

        result["monitoring_run_url"] = self.mlflow_run_url
        result = json_safe(result)
        client.set_registered_model_tag(
            self.model_name, MONITORING_VERDICT_TAG, json.dumps({k: result.get(k) for k in _VERDICT_KEYS})
        )
        log = self.log.warning if result["verdict"] == monitor.DEGRADED else self.log.info
        reasons = "; ".join(result["reasons"])
        log("Verdict for %s v%s: %s %s", self.model_name, version, result["verdict"], reasons)
        return result

    def _monitor_sql(
        self, context: Context, start: datetime, end: datetime, endpoint_problem: str | None
    ) -> dict[str, Any]:
        """:meth:`_monitor` of rows logged in a SQL database: every check computed by the database."""
        import sqlalchemy as sa

        from airflow_mlops.data.sql_drift import SqlData, compute_drift_sql
        from airflow_mlops.operators.drift import sql_engine
        from airflow_mlops.serving import monitor, monitor_sql

        client = self.mlflow_hook.client
        version, version_tags = self._champion(client)
        conn_id = str(self.sql_conn_id).strip()
        current = SqlData(table=_stripped(self.table), query=_stripped(self.query))
        reference: Any = None
        if self.reference_table is not None or self.reference_query is not None:
            reference = SqlData(table=_stripped(self.reference_table), query=_stripped(self.reference_query))
        label = f"{current.describe()} of connection {conn_id!r}"
        engine = sql_engine(conn_id, f"monitor {self.model_name} from {label}")
        window = {"start": start.isoformat(), "end": end.isoformat()}
        result: dict[str, Any] = {
            "model_name": self.model_name, "version": version, "window": window, "records": 0,
            "bad_rows": {"count": 0, "columns": []},
            "endpoint": None if self.target is None
            else {"available": endpoint_problem is None, "reason": endpoint_problem},
            "feature_drift": None, "prediction_drift": None, "data_quality": None, "performance": None,
            "engine": "sql",
        }  # fmt: skip
        try:
            columns = monitor_sql.column_names(engine, current)
            result["records"] = records = monitor_sql.row_count(engine, current)
            self.log.info(
                "%d rows served by %s v%s in %s (%s - %s)",
                records, self.model_name, version, label, window["start"], window["end"],
            )  # fmt: skip
            if records >= self.min_records:
                meta = {self.label_column, self.prediction_column, *self.exclude_columns}
                with ExitStack() as stack:
                    if reference is None:  # the training snapshot, read one column at a time
                        reference = stack.enter_context(self._training_columns(version, version_tags))
                    feature_drift = compute_drift_sql(
                        engine, reference, current, thresholds=self.thresholds,
                        feature_thresholds=self.feature_thresholds, exclude_columns=sorted(meta),
                    )  # fmt: skip
                result["feature_drift"] = _compact_drift(feature_drift)
                features = [*feature_drift["features"], *feature_drift["missing_features"]]
                holdout = self._holdout_predictions(
                    version, version_tags, features, self.storage_hook.storage_for(self._root())
                )
                if holdout is not None and self.prediction_column in columns:
                    result["prediction_drift"] = _compact_drift(
                        monitor_sql.prediction_drift_sql(
                            engine, current, self.prediction_column, holdout, self.prediction_thresholds
                        )
                    )
                if self.expectations:
                    result["data_quality"] = self._quality_sql(engine, current, self.expectations)
                else:  # from the counts the drift made: no query (GX reads a query's every row for its columns)
                    non_null = {f: info["rows"]["current"] for f, info in feature_drift["features"].items()}
                    result["data_quality"] = monitor_sql.default_quality(features, columns, records, non_null)
                if self.label_column in columns and self.prediction_column in columns:
                    result["performance"] = monitor_sql.live_performance_sql(
                        engine, current, self.label_column, self.prediction_column, self.performance_metric,
                        self._baseline(version_tags), self.max_performance_drop, self.min_labels,
                    )  # fmt: skip
        except ValueError as err:  # a source that cannot be read, a column of too many categories
            raise DatasetError(f"Cannot monitor {self.model_name} from {label}: {err}") from err
        except sa.exc.DBAPIError as err:
            raise ServiceUnavailableError(
                f"Cannot monitor {self.model_name} from {label}: the database failed: {err.orig}"
            ) from err
        finally:
            engine.dispose()
        verdict, reasons = monitor.verdict(
            result["records"], self.min_records, result["feature_drift"], result["prediction_drift"],
            result["data_quality"], result["performance"], endpoint_problem,
        )  # fmt: skip
        result.update({"verdict": verdict, "reasons": reasons})
        result["monitoring_run_id"] = self._log_run(context, json_safe(result), None, None, [])
        return self._publish(client, version, result)

    @contextmanager
    def _training_columns(self, version: str, version_tags: Mapping[str, str]) -> Iterator[Any]:
        """The champion's training snapshot, its features read one at a time: the reference without a SQL one."""
        from airflow_mlops.data.drift import snapshot_columns

        uri = version_tags.get(T.DATA_URI)
        if not uri:
            raise DatasetError(
                f"{self.model_name} v{version} ({T.CHAMPION}) has no {T.DATA_URI} tag: pass reference_table or "
                "reference_query"
            )
        drop = (self.label_column, *self.exclude_columns)
        with ExitStack() as stack:
            try:  # only opening it: a failure of the comparison is not the snapshot's
                columns = stack.enter_context(snapshot_columns(uri, self.storage_hook.storage_for(uri), drop))
            except (FileNotFoundError, ValueError) as err:
                raise DatasetError(f"Cannot read the training snapshot {uri}: {err}", uri=uri) from err
            yield columns

    def _quality_sql(self, engine: Any, current: Any, expectations: list[dict[str, Any]]) -> Any:
        """The data-quality suite run by the database on the logged rows (Great Expectations' SQL datasource)."""
        from airflow_mlops.data.expectations import build_suite, ephemeral_context, sql_batch, summarize

        suite = build_suite(expectations, "expectations", f"{self.model_name}-served-rows")
        batch = sql_batch(
            ephemeral_context(), f"{self.model_name}-served-rows", engine.url.render_as_string(hide_password=False),
            table=current.table, query=current.query,
        )  # fmt: skip
        return summarize(batch.validate(suite, result_format="SUMMARY"))

    def _input_types(self, version: str, reference: Any, features: list[str]) -> dict[str, str]:
        """The MLflow type of each feature: the champion's signature, else the training snapshot's dtypes."""
        from airflow_mlops.serving.capture import signature_of

        try:
            signature = signature_of(f"models:/{self.model_name}/{version}") or {}
        except Exception as err:  # no signature is not a reason to stop monitoring
            self.log.info(
                "No signature of %s v%s (%s): types of the training data", self.model_name, version, err
            )
            signature = {}
        types = {}
        for feature in features:
            kind = signature.get(feature)
            if kind is None:
                dtype = reference[feature].dtype
                kind = {"i": "long", "u": "long", "f": "double", "b": "boolean"}.get(dtype.kind, "string")
            types[feature] = kind
        return types

    def _holdout_predictions(
        self, version: str, version_tags: Mapping[str, str], features: list[str], storage: Any
    ) -> Any:
        """The champion's predictions on its evaluation holdout (None when it has no evaluation summary)."""
        from airflow_mlops.data.snapshots import read_snapshot

        try:
            holdout_uri = json.loads(version_tags.get(T.EVALUATION_SUMMARY) or "{}").get("holdout")
        except ValueError:
            holdout_uri = None
        if not holdout_uri:
            self.log.info("%s v%s has no evaluation holdout: no prediction drift", self.model_name, version)
            return None
        import mlflow

        try:
            holdout = read_snapshot(holdout_uri, storage=storage)
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(
                f"Cannot read the evaluation holdout {holdout_uri}: {err}", uri=holdout_uri
            ) from err
        # Not at parse time: the DAG file loads no module of the training side (tests/unit/test_parse_time.py).
        from airflow_mlops.trainer.models import import_skops_quietly

        import_skops_quietly()
        model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
        predictions = model.predict(holdout[[c for c in features if c in holdout.columns]])
        if hasattr(predictions, "iloc") and getattr(predictions, "ndim", 1) == 2:
            predictions = predictions.iloc[:, 0]
        return list(predictions)

    def _baseline(self, version_tags: Mapping[str, str]) -> float | None:
        try:
            summary = json.loads(version_tags.get(T.EVALUATION_SUMMARY) or "{}")
            value = ((summary.get("metrics") or {}).get(self.performance_metric) or {}).get("candidate")
        except (ValueError, AttributeError):
            return None
        return float(value) if isinstance(value, int | float) else None

    def _labels(self, storage: Any) -> Any:
        from airflow_mlops.serving.monitor import read_labels

        return read_labels(str(self.labels_uri), self.label_column, storage)

    def _log_run(
        self, context: Context, result: dict[str, Any], reference: Any, window: Any, features: list[str]
    ) -> str:
        """
        Log (or, on a retry, update) the monitoring run: verdict, metrics, plots, the report.

        :param reference: The training snapshot, a frame (its columns are read for the plots).
        :param window: The staged window of captures (:class:`~airflow_mlops.serving.monitor_captures.
            StagedWindow`); None for rows of a SQL database (no plots).
        """
        import mlflow

        from airflow_mlops.links import run_url
        from airflow_mlops.serving.capture import PREDICTION
        from airflow_mlops.serving.monitor import drift_plot

        client = self.mlflow_hook.client
        name = self.experiment_name or f"{self.model_name}-monitoring"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        ti = context.get("ti")
        ids = {
            T.AIRFLOW_DAG_ID: str(getattr(ti, "dag_id", "")),
            T.AIRFLOW_RUN_ID: str(getattr(ti, "run_id", "")),
            T.AIRFLOW_TASK_ID: str(getattr(ti, "task_id", "")),
        }
        existing = None
        if all(ids.values()) and not any("'" in v for v in ids.values()):
            found = client.search_runs(
                [experiment_id], " and ".join(f"tags.`{k}` = '{v}'" for k, v in ids.items()), max_results=1
            )
            existing = found[0].info.run_id if found else None
        run_name = f"monitor {self.model_name} v{result['version']} {result['window']['end'][:16]}"
        with (
            mlflow.start_run(run_id=existing)
            if existing
            else mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=ids)
        ) as run:
            self.mlflow_run_url = run_url(self.mlflow_hook.tracking_uri, experiment_id, run.info.run_id)
            mlflow.set_tags(
                {
                    "mlops.monitoring.model": self.model_name,
                    "mlops.monitoring.version": result["version"],
                    "mlops.monitoring.verdict": result["verdict"],
                    "mlops.monitoring.reasons": "; ".join(result["reasons"])[:4900],
                }
            )
            metrics: dict[str, float] = {
                "records": float(result["records"]), "bad_rows": float(result["bad_rows"]["count"]),
            }  # fmt: skip
            drift = result["feature_drift"]
            if drift:
                metrics["drifted_features"] = float(len(drift["drifted_features"]))
                for feature, info in drift["features"].items():
                    for metric, value in info["metrics"].items():
                        metrics[f"drift.{feature}.{metric}"] = float(value)
            if result["prediction_drift"]:
                for metric, value in result["prediction_drift"]["features"]["prediction"]["metrics"].items():
                    metrics[f"prediction_drift.{metric}"] = float(value)
            quality = result["data_quality"]
            if quality:
                metrics["data_quality.success"] = float(bool(quality.get("success")))
                metrics["data_quality.unsuccessful"] = float(quality.get("unsuccessful") or 0)
            performance = result["performance"]
            if performance:
                metrics["performance.labelled"] = float(performance["labelled"])
                if performance.get("value") is not None:
                    metrics[f"performance.{performance['metric']}"] = float(performance["value"])
            mlflow.log_metrics({k.replace(" ", "_"): v for k, v in metrics.items()})
            mlflow.log_dict(result, "monitoring/report.json")
            if drift and window is not None:  # captured rows (not for SQL data)
                import matplotlib.pyplot as plt

                shown = drift["drifted_features"] or features
                figure = drift_plot(
                    reference,
                    window.input_columns(),
                    shown,
                    f"{self.model_name} v{result['version']}: inputs",
                )
                mlflow.log_figure(figure, "monitoring/feature_drift.png")
                plt.close(figure)
                import pandas as pd

                figure = drift_plot(
                    pd.DataFrame({"prediction": []}), pd.DataFrame({"prediction": window.column(PREDICTION)}),
                    ["prediction"], "predictions served",
                )  # fmt: skip
                mlflow.log_figure(figure, "monitoring/predictions.png")
                plt.close(figure)
            return str(run.info.run_id)


def _proxy_problem(endpoint: str, timeout: float = 10.0) -> str | None:
    """Why the local endpoint proxy's status (``GET /_mlops/proxy``) is not 200 (with its reason), or None."""
    import urllib.error
    import urllib.request

    from airflow_mlops.serving.proxy import STATUS_PATH

    url = endpoint.rstrip("/") + STATUS_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the target's own endpoint
            if response.status == 200:
                return None
            status, body = response.status, response.read(2000)
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read(2000)
    except OSError as err:
        return f"endpoint unavailable: GET {url} failed: {err}"
    try:
        payload = json.loads(body)
        reason = payload.get("message") or payload.get("reason") or payload.get("error") or payload
    except (ValueError, AttributeError):
        reason = body.decode(errors="replace")
    return f"endpoint unavailable: GET {url} answered HTTP {status}: {reason}"


def _compact_drift(report: dict[str, Any]) -> dict[str, Any]:
    """A drift report small enough for XCom: per feature its metrics, limits and exceeded metrics."""
    return {
        "drift": report["drift"],
        "drifted_features": report["drifted_features"],
        "missing_features": report["missing_features"],
        "added_features": report["added_features"][:20],
        "features": {
            feature: {k: info[k] for k in ("kind", "metrics", "thresholds", "exceeded")}
            for feature, info in report["features"].items()
        },
    }


class RequestRetrainingOperator(BaseOperator):
    """
    Turn a degraded monitoring verdict into a retraining request, at most once per cool-down period.

    A verdict other than ``degraded`` skips the task (no Asset event). A degraded one, unless the model was
    asked to retrain less than ``cooldown`` ago (registered-model tag ``mlops.monitoring.last_retraining``, so
    the period holds across DAG runs and workers), records the request in that tag and, with ``on_degraded``
    ``"retrain"`` or ``"both"``, emits an event of :func:`~airflow_mlops.retraining.retraining_asset` (the
    task's outlet) carrying the verdict, its reasons and the window: the continuous-training DAG scheduled on it starts. With ``"notify"``
    or ``"both"``, ``notifier`` (an Airflow notifier) is called with the task's context. A retry of the task
    that recorded the request emits it again rather than waiting out its own cool-down. A verdict degraded
    because the endpoint is unavailable asks for no retraining (a new model would not bring the endpoint back,
    and the cool-down would hold off a retraining the traffic may need later): with a notifier it notifies,
    else the task is skipped with the reason.

    Returns (XCom) ``{"requested", "retrain", "notified", "reason", "verdict", "reasons", "last_request"}``.

    :param model_name: The registered model. (templated)
    :param monitoring: The monitor task's result, e.g. ``"{{ ti.xcom_pull(task_ids='monitor') }}"``. (templated)
    :param cooldown: Shortest time between two requests (timedelta or seconds; 0: no cool-down).
    :param on_degraded: ``"retrain"`` (default), ``"notify"`` or ``"both"``.
    :param notifier: An Airflow notifier (``BaseNotifier``), needed for ``"notify"`` and ``"both"``.
    :param mlflow_conn_id: Airflow ``mlflow`` connection of the registry.
    """

    template_fields: Sequence[str] = ("model_name", "monitoring", "mlflow_conn_id")

    def __init__(
        self,
        *,
        model_name: str,
        monitoring: Any,
        cooldown: timedelta | float = timedelta(days=1),
        on_degraded: str = "retrain",
        notifier: BaseNotifier | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        if on_degraded not in ON_DEGRADED:
            raise ValueError(f"on_degraded must be one of {', '.join(ON_DEGRADED)}, got {on_degraded!r}")
        if on_degraded != "retrain" and notifier is None:
            raise ValueError(f"on_degraded={on_degraded!r} needs a notifier (an Airflow BaseNotifier)")
        if (
            "outlets" not in kwargs
            and on_degraded != "notify"
            and isinstance(model_name, str)
            and not is_templated(model_name)
        ):
            kwargs["outlets"] = [retraining_asset(model_name)]
        super().__init__(**keyed_results(kwargs))
        if not is_templated(model_name):
            _check_model_name(model_name)
        self.model_name = model_name
        self.monitoring = monitoring
        self.cooldown = _duration(cooldown, "cooldown", allow_zero=True)
        self.on_degraded = on_degraded
        self.notifier = notifier
        self.mlflow_conn_id = mlflow_conn_id

    def _trusted_request(self, raw: str | None, keys: SigningKeys | None) -> dict[str, Any]:
        """The last retraining request recorded on the model, if the package signed it; else ``{}``."""
        try:
            last = json.loads(raw) if raw else {}
        except ValueError:
            last = {}
        if not isinstance(last, dict) or not last:
            return {}
        if keys is not None:
            subject = Subject.model_only(self.model_name)
            problem = keys.problem(RETRAINING_REQUEST, subject, last, last.get(SIGNATURE_KEY))
            if problem is not None:
                self.log.warning(
                    "Ignoring the retraining request recorded on %s: %s",
                    self.model_name, untrusted_message(LAST_RETRAINING_TAG, subject, problem),
                )  # fmt: skip
                return {}
        return {key: value for key, value in last.items() if key != SIGNATURE_KEY}

    @keep_result
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.evaluation.report import upstream_summary
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.serving.monitor import DEGRADED
        from airflow_mlops.utils.clock import utc_now

        try:
            _check_model_name(self.model_name)
            monitoring = upstream_summary(self.monitoring, "monitoring") or {}
        except ValueError as err:
            raise ConfigurationError(str(err)) from err
        verdict = monitoring.get("verdict")
        if verdict != DEGRADED:
            raise AirflowSkipException(f"Verdict {verdict!r} for {self.model_name}: no retraining requested")
        endpoint = monitoring.get("endpoint")
        if isinstance(endpoint, dict) and endpoint.get("available") is False:
            reason = (
                f"{endpoint.get('reason')}: retraining would not bring the endpoint of {self.model_name} back; "
                "no retraining requested"
            )
            self.log.warning("%s", reason)
            if self.on_degraded in ("notify", "both") and self.notifier is not None:
                self.notifier(context)
                return {
                    "requested": False, "retrain": False, "notified": True, "reason": reason, "verdict": verdict,
                    "reasons": monitoring.get("reasons") or [], "last_request": None,
                }  # fmt: skip
            raise AirflowSkipException(reason)
        client = MLflowHook(mlflow_conn_id=self.mlflow_conn_id).client
        keys = record_keys()
        ti = context.get("ti")
        me = {"dag_id": getattr(ti, "dag_id", None), "run_id": getattr(ti, "run_id", None),
              "task_id": getattr(ti, "task_id", None)}  # fmt: skip
        try:
            last_raw = client.get_registered_model(self.model_name).tags.get(LAST_RETRAINING_TAG)
        except Exception as err:
            raise RegistryError(f"Cannot read the registered model {self.model_name!r}: {err}") from err
        last = self._trusted_request(last_raw, keys)
        now = utc_now()
        mine = bool(last) and all(last.get("airflow", {}).get(k) == v for k, v in me.items())
        if last and not mine and self.cooldown:
            since = now - datetime.fromisoformat(last["time"])
            if since < self.cooldown:
                reason = (
                    f"{self.model_name} was asked to retrain {since} ago ({last['time']}, DAG run "
                    f"{last.get('airflow', {}).get('run_id')}); the cool-down is {self.cooldown}: not again"
                )
                self.log.warning("%s. Degraded: %s", reason, "; ".join(monitoring.get("reasons") or []))
                raise AirflowSkipException(reason)
        request: dict[str, Any] = last if mine else {
            "time": now.isoformat(), "reasons": monitoring.get("reasons") or [],
            "version": monitoring.get("version"), "window": monitoring.get("window"), "airflow": me,
        }  # fmt: skip
        if not mine:
            if keys is not None:  # signed: a request planted in the registry cannot hold off the next one
                request = keys.signed(RETRAINING_REQUEST, Subject.model_only(self.model_name), request)
            client.set_registered_model_tag(self.model_name, LAST_RETRAINING_TAG, json.dumps(request))
        request = {key: value for key, value in request.items() if key != SIGNATURE_KEY}
        retrain = self.on_degraded in ("retrain", "both")
        if retrain:
            extra = json_safe({k: monitoring.get(k) for k in _VERDICT_KEYS})
            extra["requested_at"] = request["time"]
            for outlet in self.outlets:
                context["outlet_events"][outlet].extra = extra
            self.log.warning(
                "Retraining of %s requested: %s", self.model_name, "; ".join(extra["reasons"] or [])
            )
        notified = False
        if self.on_degraded in ("notify", "both") and self.notifier is not None:
            self.notifier(context)
            notified = True
        return {
            "requested": True, "retrain": retrain, "notified": notified, "reason": None, "verdict": verdict,
            "reasons": monitoring.get("reasons") or [], "last_request": request,
        }  # fmt: skip


def _stripped(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def _check_sql_sources(
    op: MonitorModelOperator, capture_uri: Any, labels_uri: Any, wait_for_traffic: Any, rendered: bool
) -> None:
    """
    Captures or SQL rows, each source given once, strings not empty (literals only before rendering).

    A problem is a :class:`~airflow_mlops.exceptions.ConfigurationError` (a ValueError); once rendered, the
    message says so.
    """
    suffix = " once rendered" if rendered else ""

    def fail(message: str) -> None:
        raise ConfigurationError(message + suffix)

    sql = ("table", "query", "reference_table", "reference_query")
    if op.sql_conn_id is None:
        given = [name for name in sql if getattr(op, name) is not None]
        if given:
            fail(f"{' and '.join(given)} need sql_conn_id (the connection of the database the rows are in)")
        return
    for name, value in (("capture_uri", capture_uri), ("labels_uri", labels_uri)):
        if value is not None:
            fail(
                f"{name} and sql_conn_id exclude each other: served rows come from captures or from a SQL "
                "table or query (with the label in label_column), not both"
            )
    if wait_for_traffic is not None:
        fail("wait_for_traffic and sql_conn_id exclude each other: the wait counts captures")
    if not isinstance(op.prediction_column, str) or not op.prediction_column.strip():
        fail(f"prediction_column must be a column name, got {op.prediction_column!r}")
    if (op.table is None) == (op.query is None):
        fail("With sql_conn_id, pass exactly one of table or query (the served rows)")
    if op.reference_table is not None and op.reference_query is not None:
        fail("Pass at most one of reference_table or reference_query")
    for name in ("sql_conn_id", *sql):
        value = getattr(op, name)
        known = rendered or not is_templated(value)
        if value is not None and known and not (isinstance(value, str) and value.strip()):
            fail(f"{name} must be a non-empty string, got {value!r}")


def _check_model_name(model_name: Any) -> None:
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name must be a registered model name, got {model_name!r}")
