"""
Capture what a model serves, batched into Parquet files.

Each request's inputs, its prediction, the serving version, a request id and a timestamp.

Layout, one file per flush and hour::

    <root>/captures/model=<name>/hour=YYYY-MM-DDTHH/part-<YYYYmmddTHHMMSS>-<uuid>.parquet
    <root>/captures/model=<name>/traffic=<kind>/hour=YYYY-MM-DDTHH/part-...parquet

The first holds production traffic only: requests the model answered with a 2xx status that no caller marked
as synthetic. Requests it refused go under ``traffic=rejected``; requests sent with the header
``X-MLOps-Traffic`` (``synthetic``, ``smoke``, ``canary-probe``, ``replay``; what the package's own smoke tests and
canary probes set) go under ``traffic=<that value>``. :func:`read_captures`, :func:`count_captures` and monitoring
read production traffic unless told otherwise.

One row per input row of a request: the input columns under their own names, then ``_request_id``, ``_row``
(the row's index in its request), ``_timestamp`` (UTC), ``_model``, ``_version``, ``_status`` (the model
server's HTTP status), ``_prediction``, ``_invalid`` (the input columns whose value did not have the
signature's type, comma-separated; null when all did) and, when the serving side measured it, ``_latency_ms``
(the model server's time to answer). With the model's signature (``signature``: column name
-> MLflow type name) only its columns are stored, in its types: other columns are dropped (and counted), and a
value of another type is stored null and named in ``_invalid``. A column named in ``redact`` is stored as the
SHA-256 of its value (hex), so captures can be joined on it but do not hold it. Both happen before anything is
queued for writing.

:class:`CaptureWriter` is what the serving side runs: :meth:`CaptureWriter.submit` puts the raw request and
answer on a bounded queue and returns at once; a background thread parses, batches and writes them. A full
queue drops the record; a store that cannot be written keeps the records pending (up to ``max_pending``
rows) and tries again later: either way a prediction is never delayed or failed by its capture, and every
drop and failed write is counted (:meth:`CaptureWriter.stats`) and logged. Only model names the registry
allows are written, and only under the root.

The writer imports only the standard library and, in its thread, pyarrow (and boto3 for ``s3://`` roots):
the endpoint proxy runs it without Airflow. :func:`read_captures` (a pandas frame) and :func:`window_tables` (Arrow
tables, a record batch at a time) are for the monitoring side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.storage import Storage, is_local, join, local_path, split_conn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

CAPTURES_DIR = "captures"
#: Columns the capture adds to a request's input columns.
REQUEST_ID, ROW, TIMESTAMP, MODEL, VERSION, STATUS, PREDICTION, INVALID = (
    "_request_id", "_row", "_timestamp", "_model", "_version", "_status", "_prediction", "_invalid",
)  # fmt: skip
#: The model server's time to answer the request, in milliseconds (written when the serving side measures it).
LATENCY = "_latency_ms"
META_COLUMNS = (REQUEST_ID, ROW, TIMESTAMP, MODEL, VERSION, STATUS, PREDICTION, INVALID, LATENCY)
#: Header a client may set to name its request (and which every captured answer carries).
REQUEST_ID_HEADER = "X-Request-Id"
#: Header that marks a request as not production traffic; its value names the kind (:data:`SYNTHETIC_KINDS`).
TRAFFIC_HEADER = "X-MLOps-Traffic"
PRODUCTION, REJECTED = "production", "rejected"
#: Values of :data:`TRAFFIC_HEADER` the package's own callers send (any other value counts as ``synthetic``).
SYNTHETIC_KINDS = ("synthetic", "smoke", "canary-probe", "replay", "shadow")
TRAFFIC_KINDS = (PRODUCTION, REJECTED, *SYNTHETIC_KINDS)
#: MLflow signature types (``DataType`` names) and how they are stored.
SIGNATURE_TYPES = ("long", "integer", "double", "float", "boolean", "string", "datetime", "binary")
#: The registered-model name rule of :mod:`airflow_mlops.registry` (``MODEL_NAME_PATTERN``), here so that the
#: serving side checks names without loading the registry's dependencies.
MODEL_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,255}"
_REDACTED_METADATA = b"mlops.redacted"
HOUR_FORMAT = "%Y-%m-%dT%H"
DEFAULTS: dict[str, Any] = {
    "redact": [],
    "signature": None,
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
    hashed), ``signature`` (the model's input columns and their MLflow types, ``{"tenure_months": "long"}``:
    only these are stored; None: every input column), ``batch_rows`` and ``flush_seconds`` (a file is written when either is reached), ``queue_size``
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
    if out["signature"] is not None:
        out["signature"] = check_signature(out["signature"], f"{origin}['signature']")
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


def check_signature(signature: object, origin: str = "signature") -> dict[str, str]:
    """*signature* (input column name -> MLflow type name) checked; :raises ValueError: naming what is wrong."""
    if not isinstance(signature, dict) or not signature:
        raise ValueError(f"{origin} must be a dict of input column name -> type name, got {signature!r}")
    out = {}
    for name, kind in signature.items():
        if not isinstance(name, str) or not name or name.startswith("_"):
            raise ValueError(f"{origin}: {name!r} is not an input column name")
        if kind not in SIGNATURE_TYPES:
            raise ValueError(f"{origin}[{name!r}] must be one of {', '.join(SIGNATURE_TYPES)}, got {kind!r}")
        out[name] = kind
    return out


def check_model_name(model_name: object) -> str:
    """*model_name* if the registry allows it (no ``/``, ``..``, spaces...); :raises ValueError: otherwise."""
    if not isinstance(model_name, str) or not re.fullmatch(MODEL_NAME_PATTERN, model_name) or ".." in model_name:
        raise ValueError(f"{model_name!r} is not a registered model name")
    return model_name


def traffic_kind(header: str | None, status: int) -> str:
    """The kind of a request: its :data:`TRAFFIC_HEADER` value, else ``rejected`` (non-2xx) or ``production``."""
    value = (header or "").strip().lower()
    if value and value != PRODUCTION:
        return value if value in SYNTHETIC_KINDS else "synthetic"
    return PRODUCTION if 200 <= status < 300 else REJECTED


def model_prefix(root: str, model_name: str, traffic: str = PRODUCTION) -> str:
    """
    The folder of *model_name*'s captures of one traffic kind under the data root *root*.

    :raises ValueError: when *model_name* is not a registered model name or *traffic* not a known kind.
    """
    if traffic not in TRAFFIC_KINDS:
        raise ValueError(f"traffic must be one of {', '.join(TRAFFIC_KINDS)}, got {traffic!r}")
    prefix = join(root, CAPTURES_DIR, f"model={check_model_name(model_name)}")
    return prefix if traffic == PRODUCTION else join(prefix, f"traffic={traffic}")


def check_under_root(root: str, uri: str) -> None:
    """:raises ValueError: when the local path *uri* does not resolve to a place under ``<root>/captures``."""
    if not (is_local(root) and is_local(uri)):
        return
    base = local_path(join(root, CAPTURES_DIR)).resolve()
    if not local_path(uri).resolve().is_relative_to(base):
        raise ValueError(f"{uri} is not under the capture root {base}")


def signature_of(model_uri: str) -> dict[str, str] | None:
    """The input columns and MLflow types of the model at *model_uri* (None: no column signature). Loads mlflow."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not getattr(inputs, "has_input_names", lambda: False)():
        return None
    out = {}
    for spec in inputs.inputs:
        kind = getattr(getattr(spec, "type", None), "name", None)
        if spec.name and isinstance(kind, str):
            out[str(spec.name)] = kind if kind in SIGNATURE_TYPES else "string"
    return out or None


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
    signature: Mapping[str, str] | None = None,
    dropped: dict[str, int] | None = None,
    latency_ms: float | None = None,
) -> list[dict[str, Any]]:
    """
    The captured rows of one request (none when its body is not a scoring request).

    :param signature: Input column -> MLflow type: only these columns are kept, in these types (a value of
        another type is stored null and named in ``_invalid``). None: every input column, as sent.
    :param dropped: Counts, per column name, the values of columns outside *signature* that were dropped.
    """
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
        invalid: list[str] = []
        if signature is None:
            record = {
                key: (redacted(value) if key in hidden else _scalar(value))
                for key, value in row.items()
                if isinstance(key, str) and not key.startswith("_")
            }
        else:
            record = {}
            for key, kind in signature.items():
                value, ok = typed_value(row.get(key), kind)
                if not ok:
                    invalid.append(key)
                record[key] = redacted(value) if key in hidden else value
            if dropped is not None:
                for key in row:
                    if key not in signature:
                        dropped[str(key)] = dropped.get(str(key), 0) + 1
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
                INVALID: ",".join(invalid) or None,
            }
        )
        if latency_ms is not None:
            record[LATENCY] = round(float(latency_ms), 3)
        out.append(record)
    return out


def typed_value(value: Any, kind: str, lenient: bool = False) -> tuple[Any, bool]:
    """
    ``(stored value, whether it had the type)`` of *value* for an MLflow signature type *kind*.

    Numbers, booleans and text are taken as they are (an integral float for an integer column); anything else
    is stored None and reported not to have the type. With *lenient* (reading files written before), text that
    spells a number or ``true``/``false`` is read as one.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, True
    if kind in ("long", "integer"):
        if lenient and isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                return None, False
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
            return value, True
        return None, False
    if kind in ("double", "float"):
        if lenient and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None, False
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), True
        return None, False
    if kind == "boolean":
        if lenient and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true", True
        return (value, True) if isinstance(value, bool) else (None, False)
    # string, datetime, binary: text
    return (value, True) if isinstance(value, str) else (None, False)


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "long": pa.int64(), "integer": pa.int64(), "double": pa.float64(), "float": pa.float64(),
        "boolean": pa.bool_(),
    }.get(kind, pa.string())  # fmt: skip


def _prediction_column(values: list[Any]) -> list[Any]:
    """One type per file: numbers as floats when they all are, else text."""
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def parquet_bytes(
    records: Sequence[Mapping[str, Any]],
    signature: Mapping[str, str] | None = None,
    redact: Iterable[str] = (),
) -> bytes:
    """
    *records* as one Parquet file (columns in first-seen order; missing values null).

    Columns of *signature* get its types (redacted ones are text); the redacted columns are named in the file's
    metadata (``mlops.redacted``) so that readers do not cast their hashes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    hidden = set(redact)

    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    data = {name: [record.get(name) for record in records] for name in columns}
    data[PREDICTION] = _prediction_column(data.get(PREDICTION, [None] * len(records)))
    arrays = {}
    for name, values in data.items():
        kind = (signature or {}).get(name)
        try:
            if kind is not None and name not in hidden:
                arrays[name] = pa.array(values, type=_arrow_type(kind))
            elif name == INVALID:
                arrays[name] = pa.array(values, type=pa.string())
            else:
                arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column: keep their text
            arrays[name] = pa.array([None if v is None else str(v) for v in values])
    table = pa.table(arrays)
    present = sorted(hidden & set(arrays))
    if present:
        table = table.replace_schema_metadata({_REDACTED_METADATA: json.dumps(present).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class CaptureWriter:
    """
    Capture requests without delaying them: a bounded queue, a background thread, batched Parquet writes.

    :param root: Data root the ``captures/`` folder goes under (a folder or an object-store prefix). The writer
        runs outside Airflow (the proxy, the capture receiver): it reaches the store with its process's
        credentials, and a connection the URI names is left to whoever starts it (see
        :func:`airflow_mlops.hooks.storage.store_environment`).
    :param redact: Input columns stored hashed.
    :param signature: The model's input columns and MLflow types (only these are stored, in these types), or a
        function of ``(model, version)`` returning them (None for a model without one); None: every input
        column is stored as sent.
    :param batch_rows: Rows that make a file (written sooner after ``flush_seconds``).
    :param flush_seconds: Longest time a captured row waits before it is written.
    :param queue_size: Requests waiting to be parsed; when full, a capture is dropped (and counted).
    :param max_pending: Rows kept while the store cannot be written; beyond it the oldest are dropped.
    :param storage: Where files are written (default: any store, with the credentials of the environment).
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
        signature: Mapping[str, str] | Callable[[str, str], Mapping[str, str] | None] | None = None,
        storage: Storage | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.root = split_conn(root)[1].rstrip("/")
        self.redact = frozenset(redact)
        self.signature = signature
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.storage = storage or Storage()
        self.on_stats = on_stats
        self.queue_size = queue_size
        # Requests (and the thread's orders: None to stop, an Event to flush), appended without waking the
        # thread when the caller says it will (wake()) once its client has the answer.
        self._items: deque[Any] = deque()
        self._wakeup = threading.Event()
        self._pending: deque[tuple[str, Any, dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._counts: dict[str, Any] = dict.fromkeys(
            ("requests", "rows", "written_rows", "files", "dropped_requests", "dropped_rows", "write_errors",
             "refused_requests", "dropped_values", "invalid_rows"),
            0,
        )  # fmt: skip
        self._counts["rows_by_traffic"] = {}
        self._dropped_columns: dict[str, int] = {}
        self._last_error: str | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="mlops-capture", daemon=True)
        self._thread.start()

    # -- the serving side ----------------------------------------------------------------------------------

    def submit(
        self,
        model: str,
        version: str,
        rid: str,
        status: int,
        request_body: bytes,
        response_body: bytes,
        traffic: str | None = None,
        latency_ms: float | None = None,
        *,
        wake: bool = True,
    ) -> bool:
        """
        Queue one answered request for capture; never blocks. False when it was dropped (queue full).

        :param traffic: The request's :data:`TRAFFIC_HEADER` value (None: production, or rejected when
            *status* is not 2xx).
        :param latency_ms: The model server's time to answer, in milliseconds (None: not measured).
        :param wake: Whether to wake the writer now; False when the caller calls :meth:`wake` itself once the
            client has its answer, so that the writer's thread never competes with the answer for a core. The
            request is queued either way (a stop writes it).
        """
        item = (
            model,
            version,
            rid,
            datetime.now(UTC),
            status,
            request_body,
            response_body,
            traffic,
            latency_ms,
        )
        if len(self._items) >= self.queue_size:
            with self._lock:
                self._counts["dropped_requests"] += 1
                dropped = self._counts["dropped_requests"]
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("Capture queue full: %d requests not captured so far", dropped)
            return False
        self._items.append(item)
        if wake:
            self._wakeup.set()
        return True

    def wake(self) -> None:
        """Have the writer take what was queued with ``submit(..., wake=False)``."""
        self._wakeup.set()

    # -- the background thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            self._wakeup.wait(max(0.05, self.flush_seconds - (time.monotonic() - last_flush)))
            self._wakeup.clear()  # what is appended from now on sets it again
            while self._items:
                item = self._items.popleft()
                if item is None:
                    self._write_pending(force=True)
                    return
                if isinstance(item, threading.Event):  # flush(): write now, then say so
                    self._write_pending(force=True)
                    last_flush = time.monotonic()
                    item.set()
                    continue
                self._add(item)
                if len(self._pending) >= self.batch_rows:
                    self._write_pending()
                    last_flush = time.monotonic()
            if time.monotonic() - last_flush >= self.flush_seconds:
                self._write_pending()
                last_flush = time.monotonic()

    def _signature_of(self, model: str, version: str) -> Mapping[str, str] | None:
        if self.signature is None or isinstance(self.signature, Mapping):
            return self.signature
        return self.signature(model, version)

    def _add(self, item: tuple[Any, ...]) -> None:
        model, version, rid, moment, status, request_body, response_body, traffic, latency_ms = item
        dropped: dict[str, int] = {}
        try:
            kind = traffic_kind(traffic, status)
            model_prefix(self.root, model, kind)  # a name the registry allows, a known kind
        except ValueError as err:
            with self._lock:
                self._counts["refused_requests"] += 1
            log.warning("Not capturing a request: %s", err)
            return
        try:
            signature = self._signature_of(model, version)
            records = to_records(
                model=model, version=version, rid=rid, moment=moment, status=status,
                request_body=request_body, response_body=response_body, redact=self.redact,
                signature=signature, dropped=dropped, latency_ms=latency_ms,
            )  # fmt: skip
        except Exception:  # a capture must never take the thread down
            log.exception("Could not parse a request of model %s for capture", model)
            return
        with self._lock:
            self._counts["requests"] += 1
            self._counts["rows"] += len(records)
            self._counts["invalid_rows"] += sum(1 for r in records if r[INVALID])
            by_traffic = self._counts["rows_by_traffic"]
            by_traffic[kind] = by_traffic.get(kind, 0) + len(records)
            self._counts["dropped_values"] += sum(dropped.values())
            for name, count in dropped.items():
                if name in self._dropped_columns or len(self._dropped_columns) < 20:
                    self._dropped_columns[name] = self._dropped_columns.get(name, 0) + count
        self._pending.extend((kind, signature, record) for record in records)
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
        groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
        signatures: dict[tuple[str, str, str, str], Mapping[str, str] | None] = {}
        for kind, signature, record in batch:
            key = (record[MODEL], kind, hour_of(record[TIMESTAMP]), record[VERSION])
            groups.setdefault(key, []).append(record)
            signatures[key] = signature
        written = 0
        done: set[tuple[str, str, str, str]] = set()
        try:
            for key, records in sorted(groups.items()):
                model, kind, hour, _ = key
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                uri = join(
                    model_prefix(self.root, model, kind),
                    f"hour={hour}",
                    f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet",
                )
                check_under_root(self.root, uri)
                self.storage.write_bytes(uri, parquet_bytes(records, signatures[key], self.redact))
                done.add(key)
                written += len(records)
                with self._lock:
                    self._counts["files"] += 1
                    self._counts["written_rows"] += len(records)
        except Exception as err:
            self._pending = deque(
                item for item in batch
                if (item[2][MODEL], item[0], hour_of(item[2][TIMESTAMP]), item[2][VERSION]) not in done
            )  # fmt: skip
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
            self._pending.clear()
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
        """
        Counts so far: requests and rows captured, rows and files written, drops, failed writes.

        Also ``rows_by_traffic`` (rows per traffic kind), ``refused_requests`` (a model name the registry does
        not allow), ``dropped_values`` and ``dropped_columns`` (values of columns outside the signature, and
        how many per column, for the first 20 columns seen) and ``invalid_rows`` (rows with a value not of the
        signature's type).
        """
        with self._lock:
            return {
                **self._counts,
                "rows_by_traffic": dict(self._counts["rows_by_traffic"]),
                "dropped_columns": dict(self._dropped_columns),
                "pending_rows": len(self._pending),
                "queued_requests": len(self._items),
                "last_error": self._last_error,
            }

    def flush(self, timeout: float = 30.0) -> bool:
        """Write what was captured so far, now (one try); True once done within *timeout*."""
        done = threading.Event()
        self._items.append(done)
        self._wakeup.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending (one last try) and stop the thread."""
        self._items.append(None)
        self._wakeup.set()
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
    root: str,
    model_name: str,
    start: datetime,
    end: datetime,
    storage: Storage | None = None,
    traffic: str = PRODUCTION,
) -> list[str]:
    """The capture files of *model_name*'s *traffic* whose hour partition overlaps ``[start, end)``."""
    storage = storage or Storage()
    prefix = model_prefix(root, model_name, traffic)
    wanted = {f"hour={hour}" for hour in hours_between(start, end)}
    try:
        uris = storage.list_uris(prefix)
    except FileNotFoundError:
        return []
    out = []
    for uri in uris:
        parts = uri[len(prefix) :].strip("/").split("/")
        if (  # production files only: the other kinds are one folder further down (traffic=<kind>/hour=...)
            len(parts) == 2
            and parts[0] in wanted
            and parts[1].startswith("part-")
            and parts[1].endswith(".parquet")
        ):
            out.append(uri)
    return sorted(out)


def _parquet_source(storage: Storage, uri: str) -> Any:
    """What pyarrow reads the capture file *uri* from: a local path as it is, an object's bytes."""
    import pyarrow as pa

    return uri if is_local(uri) else pa.BufferReader(storage.read_bytes(uri))


def _typed_table(
    table: Any, types: Mapping[str, str], redacted_columns: set[str]
) -> tuple[Any, Any, set[str]]:
    """
    *table* with the input columns of *types* cast to those types.

    :return: ``(table, bad, columns)``: *bad* marks the rows with a value that is not of its column's type (or
        that the writer marked ``_invalid``), a pyarrow boolean array or None when there is none; *columns*
        names the columns those values were in.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = None
    columns: set[str] = set()
    if INVALID in table.column_names:
        marked = table.column(INVALID)
        if marked.null_count < len(marked):
            bad = pc.is_valid(marked)
            for value in pc.unique(marked.drop_null()).to_pylist():
                columns.update(c for c in str(value).split(",") if c)
    for name, kind in types.items():
        if name not in table.column_names or name in redacted_columns:
            continue
        target = _arrow_type(kind)
        column = table.column(name)
        if column.type == target:
            continue
        failed = None
        try:
            if pa.types.is_string(target) and not (
                pa.types.is_string(column.type) or pa.types.is_null(column.type)
            ):
                raise pa.ArrowInvalid("not text")
            cast = pc.cast(column, target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            converted = [typed_value(v, kind, lenient=True) for v in column.to_pylist()]
            cast = pa.array([value for value, _ in converted], type=target)
            failed = pa.array([not ok for _, ok in converted], type=pa.bool_())
            if pc.any(failed).as_py():
                columns.add(name)
            bad = failed if bad is None else pc.or_(bad, failed)
        table = table.set_column(table.column_names.index(name), name, cast)
    return table, bad, columns


def read_captures(
    root: str,
    model_name: str,
    start: datetime,
    end: datetime,
    columns: Sequence[str] | None = None,
    storage: Storage | None = None,
    meta: Sequence[str] | None = None,
    version: str | None = None,
    types: Mapping[str, str] | None = None,
    traffic: str = PRODUCTION,
) -> pd.DataFrame:
    """
    The captured rows of *model_name* with a timestamp in ``[start, end)``, answered with a 2xx status.

    Production traffic only, unless *traffic* names another kind (``rejected``, ``smoke``, ...).

    :param columns: Input columns to read (None: all). Parquet reads no other bytes.
    :param meta: The capture's own columns to return (None: all of them).
    :param version: Only the rows this model version answered.
    :param types: Input column -> MLflow type (the model's signature): those columns are read in those types
        whatever a file holds. A row with a value that is not of its column's type (text in a number column,
        one the writer marked ``_invalid``) is left out and counted: the frame's ``attrs["bad_rows"]`` says
        how many, ``attrs["bad_columns"]`` in which columns. Never an exception for a value's type.
    """
    import pandas as pd
    import pyarrow as pa

    returned = list(META_COLUMNS if meta is None else meta)
    tables = []
    bad_rows = 0
    bad_columns: set[str] = set()
    for table, bad, found in window_tables(
        root, model_name, start, end, columns, storage, meta, version, types, traffic
    ):
        bad_rows += bad
        bad_columns |= found
        tables.append(table)
        del table
    if not tables:
        frame = pd.DataFrame(columns=[*(columns or []), *returned])
    else:
        combined = pa.concat_tables(tables, promote_options="permissive")
        tables.clear()
        frame = combined.to_pandas(self_destruct=True, split_blocks=True).reset_index(drop=True)
    frame.attrs["bad_rows"] = int(bad_rows)
    frame.attrs["bad_columns"] = sorted(bad_columns)
    return frame


def window_tables(
    root: str,
    model_name: str,
    start: datetime,
    end: datetime,
    columns: Sequence[str] | None = None,
    storage: Storage | None = None,
    meta: Sequence[str] | None = None,
    version: str | None = None,
    types: Mapping[str, str] | None = None,
    traffic: str = PRODUCTION,
    batch_rows: int | None = None,
) -> Iterator[tuple[pa.Table, int, set[str]]]:
    """
    The rows of :func:`read_captures` as Arrow tables, file by file: ``(table, bad rows, their columns)``.

    The arguments are :func:`read_captures`'; with *batch_rows*, each file is read that many rows at a time
    (a table per record batch), so memory holds one batch of the projected columns, whatever a file's size.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = storage or Storage()
    returned = list(META_COLUMNS if meta is None else meta)
    filters = [TIMESTAMP, STATUS, INVALID, *([VERSION] if version is not None else [])]
    wanted = None if columns is None else list(dict.fromkeys([*columns, *returned, *filters]))
    for uri in capture_files(root, model_name, start, end, storage, traffic):
        source = _parquet_source(storage, uri)
        parquet = pq.ParquetFile(source)
        schema = parquet.schema_arrow
        present = None if wanted is None else [c for c in wanted if c in schema.names]
        metadata = schema.metadata or {}
        try:
            redacted_columns = set(json.loads(metadata.get(_REDACTED_METADATA, b"[]")))
        except ValueError:
            redacted_columns = set()
        if batch_rows is None:
            pieces: Iterable[pa.Table] = [parquet.read(columns=present)]
        else:
            pieces = (
                pa.Table.from_batches([batch])
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=present)
            )
        for piece in pieces:
            table, bad, found = _window_rows(piece, start, end, version, types, traffic, redacted_columns)
            dropped = [c for c in filters if c not in returned and c in table.column_names]
            yield (table.drop_columns(dropped) if dropped else table), bad, found
            del table


def _window_rows(
    table: pa.Table,
    start: datetime,
    end: datetime,
    version: str | None,
    types: Mapping[str, str] | None,
    traffic: str,
    redacted_columns: set[str],
) -> tuple[pa.Table, int, set[str]]:
    """The rows of *table* in the window (and of *version*), typed: ``(rows, bad rows left out, their columns)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    timestamps = table.column(TIMESTAMP)
    status = table.column(STATUS)
    keep = pc.and_(
        pc.and_(pc.greater_equal(timestamps, pa.scalar(start, timestamps.type)),
                pc.less(timestamps, pa.scalar(end, timestamps.type))),
        pc.and_(pc.greater_equal(status, 200), pc.less(status, 300)) if traffic != REJECTED
        else pc.invert(pc.and_(pc.greater_equal(status, 200), pc.less(status, 300))),
    )  # fmt: skip
    if version is not None:
        keep = pc.and_(keep, pc.equal(table.column(VERSION), str(version)))
    table = table.filter(keep)
    if not types:
        return table, 0, set()
    table, bad, found = _typed_table(table, types, redacted_columns)
    if bad is None:
        return table, 0, set()
    bad = pc.fill_null(bad, False)
    count = pc.sum(bad).as_py() or 0
    if not count:
        return table, 0, set()
    return table.filter(pc.invert(bad)), int(count), found


def count_captures(
    root: str,
    model_name: str,
    start: datetime,
    end: datetime,
    storage: Storage | None = None,
    traffic: str = PRODUCTION,
) -> int:
    """
    Rows captured for *model_name* in the hour partitions overlapping ``[start, end)`` (file footers only).

    Production traffic only, unless *traffic* names another kind.
    """
    import pyarrow.parquet as pq

    storage = storage or Storage()
    total = 0
    for uri in capture_files(root, model_name, start, end, storage, traffic):
        total += pq.read_metadata(_parquet_source(storage, uri)).num_rows
    return total
