"""
Capture what a model serves, batched into Parquet files.

Each request's inputs, its prediction, the serving version, a request id and a timestamp.

Layout, one file per flush and hour::

    <root>/captures/model=<name>/hour=YYYY-MM-DDTHH/part-<YYYYmmddTHHMMSS>-<uuid>.parquet

One row per input row of a request: the input columns under their own names, then ``_request_id``, ``_row``
(the row's index in its request), ``_timestamp`` (UTC), ``_model``, ``_version``, ``_status`` (the model
server's HTTP status) and ``_prediction``. A column named in ``redact`` is stored as the SHA-256 of its
value (hex), so captures can be joined on it but do not hold it.

:class:`CaptureWriter` is what the serving side runs: :meth:`CaptureWriter.submit` puts the raw request and
answer on a bounded queue and returns at once; a background thread parses, batches and writes them. A full
queue drops the record; a store that cannot be written keeps the records pending (up to ``max_pending``
rows) and tries again later: either way a prediction is never delayed or failed by its capture, and every
drop and failed write is counted (:meth:`CaptureWriter.stats`) and logged.

The writer imports only the standard library and, in its thread, pyarrow (and boto3 for ``s3://`` roots):
the endpoint proxy runs it without Airflow. :func:`read_captures` (pandas) is for the monitoring side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.storage import Storage, join

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    import pandas as pd

log = logging.getLogger(__name__)

CAPTURES_DIR = "captures"
#: Columns the capture adds to a request's input columns.
REQUEST_ID, ROW, TIMESTAMP, MODEL, VERSION, STATUS, PREDICTION = (
    "_request_id", "_row", "_timestamp", "_model", "_version", "_status", "_prediction",
)  # fmt: skip
META_COLUMNS = (REQUEST_ID, ROW, TIMESTAMP, MODEL, VERSION, STATUS, PREDICTION)
#: Header a client may set to name its request (and which every captured answer carries).
REQUEST_ID_HEADER = "X-Request-Id"
HOUR_FORMAT = "%Y-%m-%dT%H"
DEFAULTS: dict[str, Any] = {
    "redact": [],
    "batch_rows": 5000,
    "flush_seconds": 10.0,
    "queue_size": 10000,
    "max_pending": 200000,
}
_SETTING_KEYS = frozenset(DEFAULTS) | {"uri"}


def check_capture_settings(settings: object, origin: str = "capture") -> dict[str, Any]:
    """
    Validate capture settings (``True`` for the defaults, or a dict); return them complete.

    Keys: ``uri`` (root folder or ``s3://`` prefix; None: the data root), ``redact`` (column names stored
    hashed), ``batch_rows`` and ``flush_seconds`` (a file is written when either is reached), ``queue_size``
    (requests waiting to be parsed; beyond it a capture is dropped) and ``max_pending`` (rows kept while the
    store cannot be written; beyond it the oldest are dropped).

    :raises ValueError: naming the key and what is allowed.
    """
    if settings is True:
        settings = {}
    if not isinstance(settings, dict):
        raise ValueError(
            f"{origin} must be True or a dict with keys {sorted(_SETTING_KEYS)}, got {settings!r}"
        )
    unknown = sorted(set(settings) - _SETTING_KEYS)
    if unknown:
        raise ValueError(f"{origin}: unknown keys {unknown}; allowed: {sorted(_SETTING_KEYS)}")
    out = {**DEFAULTS, "uri": None, **settings}
    uri = out["uri"]
    if uri is not None and (not isinstance(uri, str) or not uri.strip()):
        raise ValueError(f"{origin}['uri'] must be a folder or an s3:// prefix, got {uri!r}")
    redact = out["redact"]
    if (
        isinstance(redact, str)
        or not isinstance(redact, list | tuple)
        or not all(isinstance(c, str) and c for c in redact)
    ):
        raise ValueError(f"{origin}['redact'] must be a list of column names, got {redact!r}")
    out["redact"] = sorted(set(redact))
    for key in ("batch_rows", "queue_size", "max_pending"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{origin}[{key!r}] must be a positive integer, got {value!r}")
    seconds = out["flush_seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 3600:
        raise ValueError(
            f"{origin}['flush_seconds'] must be a number of seconds in (0, 3600], got {seconds!r}"
        )
    out["flush_seconds"] = float(seconds)
    return out


def model_prefix(root: str, model_name: str) -> str:
    """The folder of *model_name*'s captures under the data root *root*."""
    return join(root, CAPTURES_DIR, f"model={model_name}")


def hour_of(moment: datetime) -> str:
    """The ``hour=`` partition value of *moment* (UTC)."""
    return moment.astimezone(UTC).strftime(HOUR_FORMAT)


def redacted(value: Any) -> str | None:
    """The stored form of a redacted value: the SHA-256 (hex) of its text; None stays None."""
    if value is None:
        return None
    return hashlib.sha256(str(value).encode()).hexdigest()


def _rows(payload: Any) -> list[dict[str, Any]] | None:
    """The input rows of an MLflow scoring request (``dataframe_records`` / ``dataframe_split``)."""
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("dataframe_records"), list):
        rows = payload["dataframe_records"]
        return rows if all(isinstance(r, dict) for r in rows) else None
    inputs = payload.get("inputs")
    if isinstance(inputs, list) and inputs and all(isinstance(i, dict) and "name" in i for i in inputs):
        # The open inference protocol (v2, KServe/MLServer): one input per column.
        columns = {str(i["name"]): i.get("data") if isinstance(i.get("data"), list) else [] for i in inputs}
        count = max(len(values) for values in columns.values())
        return [{name: (v[r] if r < len(v) else None) for name, v in columns.items()} for r in range(count)]
    split = payload.get("dataframe_split")
    if (
        isinstance(split, dict)
        and isinstance(split.get("columns"), list)
        and isinstance(split.get("data"), list)
    ):
        return [
            dict(zip(split["columns"], row, strict=False)) for row in split["data"] if isinstance(row, list)
        ]
    return None


def _scalar(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def to_records(
    *,
    model: str,
    version: str,
    rid: str,
    moment: datetime,
    status: int,
    request_body: bytes,
    response_body: bytes,
    redact: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The captured rows of one request (none when its body is not a scoring request)."""
    try:
        rows = _rows(json.loads(request_body))
    except ValueError:
        rows = None
    if not rows:
        return []
    predictions: list[Any] = []
    if status == 200:
        try:
            answer = json.loads(response_body)
        except ValueError:
            answer = None
        found = answer.get("predictions") if isinstance(answer, dict) else answer
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if found is None and isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
            found = outputs[0].get("data")  # v2: the first output
        if isinstance(found, list):
            predictions = found
    hidden = set(redact)
    out = []
    for index, row in enumerate(rows):
        record = {
            key: (redacted(value) if key in hidden else _scalar(value))
            for key, value in row.items()
            if not key.startswith("_")
        }
        prediction = predictions[index] if index < len(predictions) else None
        if isinstance(prediction, dict) and len(prediction) == 1:
            (prediction,) = prediction.values()
        record.update(
            {
                REQUEST_ID: rid,
                ROW: index,
                TIMESTAMP: moment,
                MODEL: model,
                VERSION: version,
                STATUS: status,
                PREDICTION: _scalar(prediction),
            }
        )
        out.append(record)
    return out


def _prediction_column(values: list[Any]) -> list[Any]:
    """One type per file: numbers as floats when they all are, else text."""
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def parquet_bytes(records: Sequence[Mapping[str, Any]]) -> bytes:
    """*records* as one Parquet file (columns in first-seen order; missing values null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    data = {name: [record.get(name) for record in records] for name in columns}
    data[PREDICTION] = _prediction_column(data.get(PREDICTION, [None] * len(records)))
    arrays = {}
    for name, values in data.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column: keep their text
            arrays[name] = pa.array([None if v is None else str(v) for v in values])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(arrays), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class CaptureWriter:
    """
    Capture requests without delaying them: a bounded queue, a background thread, batched Parquet writes.

    :param root: Data root the ``captures/`` folder goes under (a folder or an ``s3://`` prefix).
    :param redact: Input columns stored hashed.
    :param batch_rows: Rows that make a file (written sooner after ``flush_seconds``).
    :param flush_seconds: Longest time a captured row waits before it is written.
    :param queue_size: Requests waiting to be parsed; when full, a capture is dropped (and counted).
    :param max_pending: Rows kept while the store cannot be written; beyond it the oldest are dropped.
    :param storage: Where files are written (default: local files and S3 from the AWS environment).
    :param on_stats: Called with :meth:`stats` after each write attempt (the proxy saves them for the target).
    """

    def __init__(
        self,
        root: str,
        *,
        redact: Iterable[str] = (),
        batch_rows: int = DEFAULTS["batch_rows"],
        flush_seconds: float = DEFAULTS["flush_seconds"],
        queue_size: int = DEFAULTS["queue_size"],
        max_pending: int = DEFAULTS["max_pending"],
        storage: Storage | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self.redact = frozenset(redact)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.storage = storage or Storage()
        self.on_stats = on_stats
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("requests", "rows", "written_rows", "files", "dropped_requests", "dropped_rows", "write_errors"),
            0,
        )
        self._last_error: str | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="mlops-capture", daemon=True)
        self._thread.start()

    # -- the serving side ----------------------------------------------------------------------------------

    def submit(
        self, model: str, version: str, rid: str, status: int, request_body: bytes, response_body: bytes
    ) -> bool:
        """Queue one answered request for capture; never blocks. False when it was dropped (queue full)."""
        item = (model, version, rid, datetime.now(UTC), status, request_body, response_body)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._counts["dropped_requests"] += 1
                dropped = self._counts["dropped_requests"]
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("Capture queue full: %d requests not captured so far", dropped)
            return False
        return True

    # -- the background thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            timeout = max(0.05, self.flush_seconds - (time.monotonic() - last_flush))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ()
            if item is None:
                self._write_pending(force=True)
                return
            if isinstance(item, threading.Event):  # flush(): write now, then say so
                self._write_pending(force=True)
                last_flush = time.monotonic()
                item.set()
                continue
            if item:
                self._add(item)
            if len(self._pending) >= self.batch_rows or time.monotonic() - last_flush >= self.flush_seconds:
                self._write_pending()
                last_flush = time.monotonic()

    def _add(self, item: tuple[Any, ...]) -> None:
        model, version, rid, moment, status, request_body, response_body = item
        try:
            records = to_records(
                model=model, version=version, rid=rid, moment=moment, status=status,
                request_body=request_body, response_body=response_body, redact=self.redact,
            )  # fmt: skip
        except Exception:  # a capture must never take the thread down
            log.exception("Could not parse a request of model %s for capture", model)
            return
        with self._lock:
            self._counts["requests"] += 1
            self._counts["rows"] += len(records)
        self._pending.extend(records)
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            with self._lock:
                self._counts["dropped_rows"] += overflow
            log.warning("Capture store unavailable: dropped the %d oldest pending rows", overflow)

    def _write_pending(self, force: bool = False) -> None:
        if not self._pending or (not force and time.monotonic() < self._retry_at):
            return
        batch = list(self._pending)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for record in batch:
            groups.setdefault((record[MODEL], hour_of(record[TIMESTAMP])), []).append(record)
        written = 0
        try:
            for (model, hour), records in sorted(groups.items()):
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                uri = join(
                    model_prefix(self.root, model),
                    f"hour={hour}",
                    f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet",
                )
                self.storage.write_bytes(uri, parquet_bytes(records))
                for _ in records:
                    self._pending.popleft()
                written += len(records)
                with self._lock:
                    self._counts["files"] += 1
                    self._counts["written_rows"] += len(records)
        except Exception as err:
            self._failures += 1
            delay = min(60.0, 0.5 * 2 ** min(self._failures, 7))
            self._retry_at = time.monotonic() + delay
            with self._lock:
                self._counts["write_errors"] += 1
                self._last_error = f"{type(err).__name__}: {err}"[:500]
            log.warning(
                "Capture store %s unavailable (%s); %d rows pending, next try in %.1fs",
                self.root, self._last_error, len(self._pending), delay,
            )  # fmt: skip
        else:
            if self._failures:
                log.warning("Capture store %s reachable again: wrote %d pending rows", self.root, written)
            self._failures = 0
            self._retry_at = 0.0
        self._report()

    def _report(self) -> None:
        if self.on_stats is not None:
            try:
                self.on_stats(self.stats())
            except Exception:
                log.exception("Could not save the capture counts")

    # -- control -------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts so far: requests and rows captured, rows and files written, drops, failed writes."""
        with self._lock:
            return {
                **self._counts,
                "pending_rows": len(self._pending),
                "queued_requests": self._queue.qsize(),
                "last_error": self._last_error,
            }

    def flush(self, timeout: float = 30.0) -> bool:
        """Write what was captured so far, now (one try); True once done within *timeout*."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending (one last try) and stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


# -- reading (the monitoring side) ----------------------------------------------------------------------------


def hours_between(start: datetime, end: datetime) -> list[str]:
    """The ``hour=`` partitions that hold rows of ``[start, end)``."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while first < end:
        out.append(first.strftime(HOUR_FORMAT))
        first += timedelta(hours=1)
    return out


def capture_files(
    root: str, model_name: str, start: datetime, end: datetime, storage: Storage | None = None
) -> list[str]:
    """The capture files of *model_name* whose hour partition overlaps ``[start, end)``."""
    storage = storage or Storage()
    prefix = model_prefix(root, model_name)
    wanted = {f"hour={hour}" for hour in hours_between(start, end)}
    try:
        uris = storage.list_uris(prefix)
    except FileNotFoundError:
        return []
    out = []
    for uri in uris:
        parts = uri[len(prefix) :].strip("/").split("/")
        if (
            len(parts) == 2
            and parts[0] in wanted
            and parts[1].startswith("part-")
            and parts[1].endswith(".parquet")
        ):
            out.append(uri)
    return sorted(out)


def read_captures(
    root: str,
    model_name: str,
    start: datetime,
    end: datetime,
    columns: Sequence[str] | None = None,
    storage: Storage | None = None,
    meta: Sequence[str] | None = None,
    version: str | None = None,
) -> pd.DataFrame:
    """
    The captured rows of *model_name* with a timestamp in ``[start, end)``, answered with HTTP 200.

    :param columns: Input columns to read (None: all). Parquet reads no other bytes.
    :param meta: The capture's own columns to return (None: all of them).
    :param version: Only the rows this model version answered.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    storage = storage or Storage()
    tables = []
    returned = list(META_COLUMNS if meta is None else meta)
    filters = [TIMESTAMP, STATUS, *([VERSION] if version is not None else [])]
    wanted = None if columns is None else list(dict.fromkeys([*columns, *returned, *filters]))
    for uri in capture_files(root, model_name, start, end, storage):
        source: Any = pa.BufferReader(storage.read_bytes(uri)) if uri.startswith("s3://") else uri
        schema = pq.read_schema(source)
        present = None if wanted is None else [c for c in wanted if c in schema.names]
        table = pq.read_table(source, columns=present)
        timestamps = table.column(TIMESTAMP)
        keep = pc.and_(
            pc.and_(pc.greater_equal(timestamps, pa.scalar(start, timestamps.type)),
                    pc.less(timestamps, pa.scalar(end, timestamps.type))),
            pc.equal(table.column(STATUS), 200),
        )  # fmt: skip
        if version is not None:
            keep = pc.and_(keep, pc.equal(table.column(VERSION), str(version)))
        table = table.filter(keep)
        dropped = [c for c in filters if c not in returned and c in table.column_names]
        tables.append(table.drop_columns(dropped) if dropped else table)
        del table
    if not tables:
        return pd.DataFrame(columns=[*(columns or []), *returned])
    combined = pa.concat_tables(tables, promote_options="permissive")
    tables.clear()
    return combined.to_pandas(self_destruct=True, split_blocks=True).reset_index(drop=True)


def count_captures(
    root: str, model_name: str, start: datetime, end: datetime, storage: Storage | None = None
) -> int:
    """Rows captured for *model_name* in the hour partitions overlapping ``[start, end)`` (file footers only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = storage or Storage()
    total = 0
    for uri in capture_files(root, model_name, start, end, storage):
        source: Any = pa.BufferReader(storage.read_bytes(uri)) if uri.startswith("s3://") else uri
        total += pq.read_metadata(source).num_rows
    return total
