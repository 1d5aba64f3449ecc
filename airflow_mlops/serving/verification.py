"""
How a served model version is checked.

Sample requests from a snapshot, the post-deploy smoke test, the infra-validation exercise, and latency
percentiles.

Plain functions of a :class:`~airflow_mlops.serving.base.DeployTarget`; no Airflow context needed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import DatasetError
from airflow_mlops.serving.base import DEFAULT_SMOKE_ROWS, PredictionError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_mlops.serving.base import DeployTarget
    from airflow_mlops.serving.status import Deployment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmokeTest:
    """
    The smoke-test settings of a deployment.

    Recorded in its history entry (``verify``) and reused by a rollback.

    :param sample_data: Snapshot URI of the rows (``<snapshot>#holdout``); None: the health check only.
    :param drop_columns: Columns removed before sending (the label); used only for a model without a
        signature.
    :param rows: How many rows are sent.
    :param columns: The model's input columns (its signature, see :meth:`for_model`): exactly these are sent.
    """

    sample_data: str | None = None
    drop_columns: list[str] = field(default_factory=list)
    rows: int = DEFAULT_SMOKE_ROWS
    columns: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the history entry's ``verify``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmokeTest:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(
            sample_data=str(data["sample_data"]).strip() if data.get("sample_data") else None,
            drop_columns=list(data.get("drop_columns") or []),
            rows=int(data.get("rows") or DEFAULT_SMOKE_ROWS),
            columns=list(data["columns"]) if data.get("columns") else None,
        )

    def for_model(self, model_uri: str) -> SmokeTest:
        """These settings with the input columns of the model at *model_uri* (None: it has no signature)."""
        return replace(self, columns=model_columns(model_uri))

    def records(self, aws_conn_id: str | None = None) -> list[dict[str, Any]]:
        """The rows to send ([] without ``sample_data``)."""
        if not self.sample_data:
            return []
        return sample_records(self.sample_data, self.drop_columns, self.rows, aws_conn_id, self.columns)


def model_columns(model_uri: str) -> list[str] | None:
    """
    The input columns of the model at *model_uri* (its MLflow signature), or None if it names none.

    None too, with a warning, when the worker cannot read the model's ``MLmodel`` file (for example a
    worker without credentials for the artifact store that only the serving side reads): every column but
    the dropped ones is then sent, as for a model without a signature.
    """
    from airflow_mlops.trainer.models import input_columns

    try:
        return input_columns(model_uri)
    except Exception as err:  # the artifact store's own errors (credentials, network) have no common type
        log.warning(
            "Cannot read the signature of %s (%s: %s); the checks send every column but the dropped ones",
            model_uri, type(err).__name__, err,
        )  # fmt: skip
        return None


def sample_records(
    uri: str,
    drop_columns: Sequence[str] | None,
    rows: int,
    aws_conn_id: str | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """
    The first *rows* rows of a snapshot (``<snapshot-uri>#holdout``) as JSON-safe records.

    With *columns* (the model's signature) exactly those are kept, in that order; else *drop_columns* (the
    label) are removed and every other column is sent.

    :raises DatasetError: if the snapshot cannot be read, is empty, lacks a column to drop or a column the
        model takes.
    """
    from airflow_mlops.data.snapshots import read_snapshot
    from airflow_mlops.hooks.storage import StorageHook

    storage = StorageHook(aws_conn_id=aws_conn_id).storage_for(uri)
    try:
        data = read_snapshot(uri, storage=storage)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(f"Cannot read the sample requests from {uri}: {err}", dataset=uri) from err
    if columns:
        absent = [c for c in columns if c not in data.columns]
        if absent:
            raise DatasetError(
                f"Sample data {uri} lacks column(s) {absent} that the model takes (its signature inputs: "
                f"{list(columns)}); the sample has {list(data.columns)}",
                dataset=uri,
            )
        data = data[list(columns)].head(rows)
        drop_columns = []
    missing = [c for c in drop_columns or [] if c not in data.columns]
    if missing:
        raise DatasetError(
            f"Sample data {uri} has no column(s) {missing} to drop; its columns are {list(data.columns)}",
            dataset=uri,
        )
    data = data.drop(columns=list(drop_columns or [])).head(rows)
    if data.empty:
        raise DatasetError(f"Sample data {uri} has no rows to send to the model", dataset=uri)
    return json.loads(data.to_json(orient="records", date_format="iso"))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p95", "max"}`` of request latencies in milliseconds, rounded to 0.01 ms."""
    return {
        "p50": round(percentile(latencies, 50), 2),
        "p95": round(percentile(latencies, 95), 2),
        "max": round(max(latencies), 2),
    }


def smoke_test(
    target: DeployTarget,
    deployment: Deployment,
    records: list[dict[str, Any]],
    *,
    timeout: float = 30.0,
    canary: bool = False,
) -> tuple[str | None, str]:
    """
    Check that *deployment* passes the target's health check and answers *records* with one prediction each.

    :param canary: Send the requests to the canary revision itself (:meth:`DeployTarget.predict_canary`).
    :return: ``(failure, health message)``: *failure* is None when it passed, else why not.
    """
    health = target.health(deployment)
    if not health.ok:
        return f"health check failed: {health.message}", health.message
    if records:
        predict = target.predict_canary if canary else target.predict
        try:
            predictions = predict(deployment, records, timeout=timeout)
        except PredictionError as err:
            details = target.diagnostics(deployment)
            return f"smoke test failed: {err}" + (f"\n{details}" if details else ""), health.message
        if len(predictions) != len(records):
            return (
                f"smoke test failed: {len(records)} rows sent, {len(predictions)} predictions received",
                health.message,
            )
    return None, health.message


class RequestFailedError(PredictionError):
    """
    A request of :func:`exercise` failed.

    :param message: Which request failed (``request N of M failed: ...``) and why.
    :param requests: How many requests were sent, the failed one included.
    :param cause: The request's own error (status code and body are copied from it).
    """

    def __init__(self, message: str, requests: int, cause: PredictionError) -> None:
        super().__init__(message, cause.status_code, cause.body)
        self.requests = requests


def exercise(
    target: DeployTarget,
    deployment: Deployment,
    records: list[dict[str, Any]],
    *,
    timeout: float = 30.0,
    latencies: list[float] | None = None,
) -> int:
    """
    Infra validation's requests: one per row (timed, into *latencies*), then one with every row.

    :return: How many requests were sent (all succeeded): ``len(records) + 1``.
    :raises RequestFailedError: at the first failed request or wrong number of predictions; its message says
        which request it was (``request N of M``).
    """
    latencies = [] if latencies is None else latencies
    total = len(records) + 1
    for number, record in enumerate(records, start=1):
        started = time.perf_counter()
        try:
            predictions = target.predict(deployment, [record], timeout=timeout)
            latencies.append((time.perf_counter() - started) * 1000)
            if len(predictions) != 1:
                raise PredictionError(
                    f"1 row sent, {len(predictions)} predictions received: {predictions!r:.300}"
                )
        except PredictionError as err:
            raise RequestFailedError(f"request {number} of {total} failed: {err}", number, err) from err
    try:
        predictions = target.predict(deployment, records, timeout=timeout)
        if len(predictions) != len(records):
            raise PredictionError(f"{len(records)} rows sent, {len(predictions)} predictions received")
    except PredictionError as err:
        raise RequestFailedError(f"request {total} of {total} failed: {err}", total, err) from err
    return total
