"""Sensor that waits for new or changed source files since a dataset's last snapshot."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_mlops.data.changes import MAX_FILES_IN_EVENT, find_new_files
from airflow_mlops.data.snapshots import check_dataset_name
from airflow_mlops.exceptions import DatasetConfigurationError, DatasetError
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.utils.results import keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import conf

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_mlops.data.storage import Storage


class NewDataSensor(BaseSensorOperator):
    """
    Wait until a local directory or ``s3://`` prefix holds files the latest snapshot of a dataset did not ingest.

    New or changed means: no file with the same URI, size and ETag (S3) or modification time (local) in the
    ``source_files`` of the dataset's latest snapshot manifest; with no snapshot yet, any file counts. Names
    starting with ``.`` or ``_`` are ignored, as the ingest ignores them. The source must lie within
    ``[mlops] allowed_sources`` (checked when the task starts, before it defers; the trigger checks again):
    one outside fails at once with :class:`~airflow_mlops.exceptions.DatasetConfigurationError`. With
    ``deferrable=True`` (default:
    ``[operators] default_deferrable``) the wait runs in the triggerer
    (:class:`~airflow_mlops.triggers.new_data.NewDataTrigger`) and holds no worker slot.

    Returns (XCom) ``{"source", "dataset_name", "count", "files", "snapshot"}``: the number of changed files,
    up to 20 of them, and the snapshot compared with.

    :param source: Local directory or glob, or ``s3://`` prefix or glob (what the ingest reads). (templated)
    :param dataset_name: The dataset whose latest snapshot is the baseline. (templated)
    :param data_root: Snapshot root (default ``$MLOPS_DATA_ROOT``, else ``./.mlops-data``). (templated)
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` locations.
    :param deferrable: Wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("source", "dataset_name", "data_root", "aws_conn_id")

    def __init__(
        self,
        *,
        source: str,
        dataset_name: str,
        data_root: str | None = None,
        aws_conn_id: str | None = StorageHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        # Literal arguments are checked now; templates and other tasks' results once rendered, in execute.
        if not is_templated(source) and (not isinstance(source, str) or not source.strip()):
            raise ValueError(f"source must be a local directory or s3:// prefix, got {source!r}")
        if not is_templated(dataset_name):
            check_dataset_name(dataset_name)
        self.source = source
        self.dataset_name = dataset_name
        self.data_root = data_root
        self.aws_conn_id = aws_conn_id
        self.deferrable = deferrable
        self._found: dict[str, Any] | None = None

    def _storage(self) -> Storage:
        return StorageHook(aws_conn_id=self.aws_conn_id).storage_for(self.source, self.data_root or "")

    def _check_rendered(self) -> None:
        """Check the rendered dataset name and source (templated values are only known now), and where it is."""
        try:
            check_dataset_name(self.dataset_name)
        except ValueError as err:
            raise DatasetConfigurationError(
                str(err), dataset=str(self.dataset_name), uri=str(self.source), reason="invalid dataset name"
            ) from err
        if not isinstance(self.source, str) or not self.source.strip():
            raise DatasetConfigurationError(
                f"source must be a local directory or s3:// prefix, got {self.source!r} once rendered",
                dataset=self.dataset_name, uri=str(self.source), reason="empty source",
            )  # fmt: skip
        from airflow_mlops.data.sources import SourceNotAllowedError, check_source_allowed
        from airflow_mlops.utils.config import allowed_sources

        try:
            check_source_allowed(self.source, allowed_sources())
        except SourceNotAllowedError as err:
            raise DatasetConfigurationError(
                f"Waiting for new data of dataset {self.dataset_name!r}: {err}",
                dataset=self.dataset_name, uri=self.source, reason="source not allowed",
            ) from err  # fmt: skip

    def poke(self, context: Context) -> bool:
        """Whether the source holds files the dataset's latest snapshot did not ingest."""
        self._check_rendered()
        found = find_new_files(self._storage(), self.source, self.dataset_name, self.data_root)
        self.log.info(
            "%d new or changed file(s) under %s since snapshot %s",
            found["count"],
            self.source,
            found["snapshot"],
        )
        if found["count"]:
            self._found = found
        return bool(found["count"])

    @keep_result
    def execute(self, context: Context) -> Any:
        """Wait for new files (in the triggerer when deferrable); return what was found."""
        self._check_rendered()
        if not self.deferrable:
            super().execute(context)
            return self._result(self._found or {"count": 0, "files": [], "snapshot": None})
        if self.poke(context):
            return self._result(self._found or {})
        from airflow_mlops.triggers.new_data import NewDataTrigger  # the triggerer's code, not the parser's

        deadline = time.time() + float(self.timeout) if self.timeout else None
        self.defer(
            trigger=NewDataTrigger(
                source=self.source, dataset_name=self.dataset_name, data_root=self.data_root,
                aws_conn_id=self.aws_conn_id, poll_interval=float(self.poke_interval), deadline=deadline,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )  # fmt: skip

    @keep_result
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish the deferred wait: return what the trigger found, or raise on a timeout or error event."""
        if not event:
            raise DatasetError(
                f"Waiting for new data under {self.source}: the trigger sent no event",
                dataset=self.dataset_name, uri=self.source,
            )  # fmt: skip
        if event.get("status") == "timeout":
            from airflow_mlops.version_compat import AirflowSensorTimeout, AirflowSkipException

            if self.soft_fail:
                raise AirflowSkipException(event.get("message"))
            raise AirflowSensorTimeout(event.get("message"))
        if event.get("status") != "success":
            raise DatasetError(
                f"Waiting for new data under {self.source} failed: {event.get('message')}",
                dataset=self.dataset_name, uri=self.source, reason=str(event.get("message")),
            )  # fmt: skip
        self.log.info("%s", event.get("message"))
        return self._result(event)

    def _result(self, found: dict[str, Any]) -> dict[str, Any]:
        return {
            "source": self.source,
            "dataset_name": self.dataset_name,
            "count": int(found.get("count", 0)),
            "files": list(found.get("files", []))[:MAX_FILES_IN_EVENT],
            "snapshot": found.get("snapshot"),
        }
