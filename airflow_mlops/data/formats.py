"""
Formats of the files an ingest reads (CSV and Parquet), without Airflow.

Telling the format from file names, checking ``pandas.read_csv`` options, reading files into one DataFrame,
and reading a Parquet object's row count and schema from its footer alone. Problems with the data raise
:class:`ValueError` whose message names the file; callers add the dataset name.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pandas as pd

    from airflow_mlops.data.storage import Storage

#: What ``format=`` accepts; ``"auto"`` tells the format from the file names.
FORMATS = ("auto", "csv", "parquet")
#: File-name endings understood by ``format="auto"`` (compressed CSV is decompressed by pandas).
FORMAT_BY_SUFFIX = (
    (".parquet", "parquet"),
    (".parq", "parquet"),
    (".pq", "parquet"),
    (".csv", "csv"),
    (".csv.gz", "csv"),
    (".csv.bz2", "csv"),
    (".csv.xz", "csv"),
    (".csv.zst", "csv"),
    (".csv.zip", "csv"),
)
#: ``read_csv`` arguments that would change what a "file" is; everything else is passed through.
RESERVED_CSV_OPTIONS = frozenset({"filepath_or_buffer", "iterator", "chunksize"})


def canonical_json(value: object) -> str:
    """*value* as compact JSON with sorted keys: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def check_format(fmt: object) -> str:
    """Return *fmt* if it is one of :data:`FORMATS`, else raise :class:`ValueError` saying what is allowed."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return str(fmt)


def check_csv_options(options: object) -> dict[str, Any]:
    """
    Return ``pandas.read_csv`` keyword arguments as a dict, or raise :class:`ValueError` saying why not.

    They must be a JSON-serialisable dict (they are part of the snapshot id) and may not change what a file
    is (:data:`RESERVED_CSV_OPTIONS`). None means no options.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"csv_options must be a dict of pandas.read_csv arguments, got {options!r}")
    reserved = sorted(RESERVED_CSV_OPTIONS & set(options))
    if reserved:
        raise ValueError(f"csv_options may not set {reserved}: the operator reads whole files")
    try:
        canonical_json(options)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"csv_options must be JSON-serialisable (they are part of the snapshot id): {err}"
        ) from err
    return dict(options)


def format_from_name(uri: str) -> str | None:
    """``"csv"`` or ``"parquet"`` from the file name's ending (:data:`FORMAT_BY_SUFFIX`), else None."""
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix, fmt in FORMAT_BY_SUFFIX:
        if name.endswith(suffix):
            return fmt
    return None


def detect_format(fmt: str, uris: Sequence[str]) -> str:
    """
    The format to read *uris* with: *fmt* itself unless it is ``"auto"``, else the one their names tell.

    :raises ValueError: if a name tells no format, or the names tell more than one.
    """
    if fmt != "auto":
        return fmt
    formats: dict[str, str] = {}
    for uri in uris:
        found = format_from_name(uri)
        if found is None:
            raise ValueError(
                f"cannot tell the format of {uri} from its name; pass format='csv' or format='parquet'"
            )
        formats.setdefault(found, uri)
    if len(formats) > 1:
        raise ValueError(
            f"the source mixes formats ({formats['csv']} is CSV, {formats['parquet']} is Parquet); "
            "ingest them separately"
        )
    return next(iter(formats))


def read_file(local: Path, uri: str, fmt: str, csv_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """
    Read one local file (downloaded from *uri*, which error messages name) as *fmt*.

    :raises ValueError: if the file cannot be read as *fmt* (bad encoding, no header, not Parquet...).
    """
    import pandas as pd

    if fmt == "csv":
        options = {"encoding": "utf-8", **(csv_options or {})}
        try:
            return pd.read_csv(local, **options)
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{uri} is not valid {options['encoding']} text ({err.reason} at byte {err.start}); pass "
                "csv_options={'encoding': ...} with the file's encoding"
            ) from err
        except pd.errors.EmptyDataError as err:
            raise ValueError(f"{uri} has no header row and no data") from err
        except TypeError as err:
            raise ValueError(f"csv_options not accepted by pandas.read_csv: {err}") from err
        except (pd.errors.ParserError, ValueError, OSError) as err:
            raise ValueError(f"{uri} cannot be parsed as CSV: {err}") from err
    import pyarrow as pa

    try:
        return pd.read_parquet(local)
    except (pa.ArrowException, ValueError, OSError) as err:
        raise ValueError(f"{uri} is not a readable Parquet file: {err}") from err


def read_files(
    files: Sequence[tuple[Path, str]], fmt: str, csv_options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """
    Read ``(local path, uri)`` pairs as *fmt* into one DataFrame (rows in the given order, string columns).

    :raises ValueError: if a file cannot be read, has no rows, or has other columns than the first.
    """
    import pandas as pd

    frames: list[pd.DataFrame] = []
    for local, uri in files:
        frame = read_file(local, uri, fmt, csv_options)
        frame.columns = [str(column) for column in frame.columns]
        if len(frame) == 0:
            raise ValueError(f"{uri} has no rows (only a header or schema)")
        if frames and list(frame.columns) != list(frames[0].columns):
            raise ValueError(
                f"{uri} has columns {list(frame.columns)[:20]}, but {files[0][1]} has "
                f"{list(frames[0].columns)[:20]}; all files must have the same columns"
            )
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def parquet_footer(storage: Storage, uri: str, size: int) -> tuple[int, dict[str, str]]:
    """
    Row count and pandas dtypes of the Parquet object at *uri* (*size* bytes), from its footer only.

    Two ranged reads: the last 8 bytes (footer length and magic), then the footer.

    :raises ValueError: if the object is not a readable Parquet file or has no rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail = storage.read_range(uri, max(0, size - 8), 8)
    if len(tail) != 8 or tail[4:] != b"PAR1":
        raise ValueError(f"{uri} is not a readable Parquet file (no footer)")
    footer_length = int.from_bytes(tail[:4], "little")
    if footer_length + 12 > size:
        raise ValueError(f"{uri} is not a readable Parquet file (bad footer)")
    footer = storage.read_range(uri, size - 8 - footer_length, footer_length + 8)
    try:
        # A buffer of the magic plus the footer is all pyarrow needs to decode the metadata.
        metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
        dtypes = metadata.schema.to_arrow_schema().empty_table().to_pandas().dtypes
    except (pa.ArrowException, ValueError, OSError) as err:
        raise ValueError(f"{uri} is not a readable Parquet file: {err}") from err
    if metadata.num_rows == 0:
        raise ValueError(f"{uri} has no rows (only a schema)")
    return int(metadata.num_rows), {str(column): str(dtype) for column, dtype in dtypes.items()}
