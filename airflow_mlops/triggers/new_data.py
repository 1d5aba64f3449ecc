"""Trigger that waits, in the triggerer, for new or changed files since a dataset's last snapshot."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_mlops.data.changes import MAX_FILES_IN_EVENT, find_new_files
from airflow_mlops.data.snapshots import resolve_data_root
from airflow_mlops.data.sources import normalize_source
from airflow_mlops.triggers._polling import PollFailures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_mlops.data.storage import Storage

__all__ = [
    "MAX_CONSECUTIVE_ERRORS",
    "MAX_FILES_IN_EVENT",
    "NewDataTrigger",
    "find_new_files",
    "normalize_source",
]

#: Consecutive failed polls (network, permissions) after which the trigger gives up.
MAX_CONSECUTIVE_ERRORS = 5


class NewDataTrigger(BaseEventTrigger):
    """
    Poll a local directory or ``s3://`` prefix until it holds files the latest snapshot did not ingest.

    A file is new or changed when the latest snapshot of ``dataset_name`` (its manifest's ``source_files``)
    has no file with the same URI, size and ETag (S3) or modification time (local). Listings and manifest
    reads run in a thread (:func:`asyncio.to_thread`), never on the event loop. The trigger yields exactly one
    event: ``{"status": "success", "message", "source", "dataset_name", "count", "files", "snapshot"}`` where
    ``files`` names up to 20 changed files (``{"uri", "size", "etag", "mtime"}``) and ``snapshot`` is the
    latest snapshot compared with (or None), or ``{"status": "timeout" | "error", "message", "source",
    "dataset_name"}``.

    The source must lie within ``[mlops] allowed_sources`` (as the triggerer's configuration says); one
    outside ends the wait at once with an ``error`` event naming it and the allowed locations.

    It subclasses ``BaseEventTrigger``, so it also works in an ``AssetWatcher`` for event-driven scheduling.

    :param source: Local directory or glob, or ``s3://`` prefix or glob (as given to the ingest).
    :param dataset_name: The dataset whose latest snapshot is the baseline.
    :param data_root: Snapshot root (default ``$MLOPS_DATA_ROOT``, else ``./.mlops-data``).
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` locations (None: boto3 defaults).
    :param poll_interval: Seconds between two polls.
    :param deadline: Epoch seconds after which the wait ends with ``timeout`` (None: wait forever).
    """

    def __init__(
        self,
        *,
        source: str,
        dataset_name: str,
        data_root: str | None = None,
        aws_conn_id: str | None = "aws_default",
        poll_interval: float = 60.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.dataset_name = dataset_name
        self.data_root = data_root
        self.aws_conn_id = aws_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline) if deadline is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger's class path and exactly its constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "source": self.source,
                "dataset_name": self.dataset_name,
                "data_root": self.data_root,
                "aws_conn_id": self.aws_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    def _event(self, status: str, message: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "message": message, "source": self.source, "dataset_name": self.dataset_name,
             **extra}
        )  # fmt: skip

    def _storage(self) -> Storage:
        from airflow_mlops.hooks.storage import StorageHook

        # A poll that cannot reach the store fails at once; the next poll tries again (see triggers._polling).
        hook = StorageHook(aws_conn_id=self.aws_conn_id, outage_timeout=0)
        return hook.storage_for(self.source, resolve_data_root(self.data_root))

    def _poll(self, storage: Storage | None) -> tuple[Storage, dict[str, Any]]:
        storage = storage or self._storage()
        return storage, find_new_files(storage, self.source, self.dataset_name, self.data_root)

    def _not_allowed(self) -> str | None:
        """Why the source may not be watched (outside ``[mlops] allowed_sources``), or None."""
        from airflow_mlops.data.sources import SourceNotAllowedError, check_source_allowed
        from airflow_mlops.utils.config import allowed_sources

        try:
            check_source_allowed(self.source, allowed_sources())
        except SourceNotAllowedError as err:
            return str(err)
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until new or changed files appear, the deadline passes, or polls keep failing; one event."""
        refused = await asyncio.to_thread(self._not_allowed)
        if refused:
            yield self._event(
                "error", f"Not waiting for new data of dataset {self.dataset_name!r}: {refused}"
            )
            return
        storage: Storage | None = None
        failures = PollFailures(MAX_CONSECUTIVE_ERRORS)
        while True:
            try:
                storage, found = await asyncio.to_thread(self._poll, storage)
                failures.succeeded()
            except Exception as err:
                give_up = failures.failed(err)
                self.log.warning(
                    "Polling %s failed (%d in a row%s): %s", self.source, failures.count, failures.outage(), err,
                )  # fmt: skip
                if give_up:
                    yield self._event(
                        "error",
                        f"Cannot list {self.source} or read the snapshots of dataset {self.dataset_name!r} "
                        f"({failures.count} failed polls in a row{failures.outage()}): {err}",
                    )
                    return
                found = None
            if found and found["count"]:
                yield self._event(
                    "success",
                    f"{found['count']} new or changed file(s) under {self.source} since "
                    f"{found['snapshot'] or 'no snapshot yet'}",
                    count=found["count"],
                    files=found["files"][:MAX_FILES_IN_EVENT],
                    snapshot=found["snapshot"],
                )
                return
            if self.deadline is not None and time.time() >= self.deadline:
                yield self._event(
                    "timeout",
                    f"No new or changed files under {self.source} for dataset {self.dataset_name!r} "
                    "before the deadline",
                )
                return
            await asyncio.sleep(self.poll_interval)
