"""
Formats of the files an ingest reads (CSV and Parquet), without Airflow.

Telling the format from file names, checking a file's first bytes against it (:func:`check_content`, before
anything is downloaded or hashed), checking ``pandas.read_csv`` options, reading files into one DataFrame,
and reading a Parquet object's row count and schema from its footer alone. Problems with the data raise
:class:`ValueError` whose message names the file and the problem, never the file's content; callers add the
dataset name.
"""

from __future__ import annotations

import codecs
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
#: How many leading bytes of each file :func:`check_content` looks at.
SNIFF_BYTES = 64 * 1024
#: Compression ``pandas.read_csv`` infers from a CSV file's name, and the magic bytes each starts with.
_COMPRESSION_BY_SUFFIX = (
    (".gz", "gzip"), (".bz2", "bz2"), (".zip", "zip"), (".xz", "xz"), (".zst", "zstd"),
)  # fmt: skip
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"PK\x03\x04", "zip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PAR1", "parquet"),
)
_WHAT = {
    "gzip": "gzip-compressed",
    "bz2": "bzip2-compressed",
    "zip": "a zip archive (an Excel .xlsx workbook is one)",
    "xz": "xz-compressed",
    "zstd": "zstd-compressed",
    "parquet": "a Parquet file",
}
_SUPPORTED = (
    "supported: CSV text (.csv), compressed CSV (.csv.gz, .csv.bz2, .csv.xz, .csv.zst, .csv.zip) and "
    "Parquet (.parquet, .parq, .pq)"
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


def _magic_kind(head: bytes) -> str | None:
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def csv_compression(uri: str, csv_options: dict[str, Any] | None = None) -> str | None:
    """The compression ``pandas.read_csv`` reads *uri* with: the ``compression`` option, else from the name."""
    option = (csv_options or {}).get("compression", "infer")
    if isinstance(option, dict):
        option = option.get("method")
    if option != "infer":
        return str(option) if option else None
    name = uri.rsplit("/", 1)[-1].lower()
    return next((kind for suffix, kind in _COMPRESSION_BY_SUFFIX if name.endswith(suffix)), None)


def check_content(uri: str, head: bytes, fmt: str, csv_options: dict[str, Any] | None = None) -> None:
    """
    Check the first bytes *head* of the file at *uri* (up to :data:`SNIFF_BYTES`) against the format *fmt*.

    Parquet files must start with ``PAR1``; a CSV file must be compressed the way its name says (gzip
    ``1f8b``, zip ``PK``, ...), and plain CSV text in a UTF-8 encoding must decode. The message names the
    file and what it is instead, never its content.

    :raises ValueError: if the file is empty or not what *fmt* and its name say.
    """
    if not head:
        raise ValueError(f"{uri} is empty (0 bytes)")
    kind = _magic_kind(head)
    if fmt == "parquet":
        if kind != "parquet":
            found = _WHAT[kind] if kind else "text or another format"
            raise ValueError(
                f"{uri} is not a Parquet file (it does not start with PAR1; it is {found}); {_SUPPORTED}"
            )
        return
    compression = csv_compression(uri, csv_options)
    if compression is None:
        if kind == "parquet":
            raise ValueError(
                f"{uri} is a Parquet file, not CSV text (name it .parquet or pass format='parquet')"
            )
        if kind is not None:
            suffix = next(suffix for suffix, name in _COMPRESSION_BY_SUFFIX if name == kind)
            raise ValueError(
                f"{uri} is {_WHAT[kind]}, not CSV text (name it .csv{suffix} to have it decompressed, or "
                f"decompress it); {_SUPPORTED}"
            )
        _check_text(uri, head, str((csv_options or {}).get("encoding") or "utf-8"))
        return
    expected = {"gzip": "gzip", "bz2": "bz2", "zip": "zip", "xz": "xz", "zstd": "zstd"}.get(compression)
    if expected is not None and kind != expected:
        found = _WHAT[kind] if kind else "not compressed"
        raise ValueError(
            f"{uri} should be {_WHAT[expected]} (its name or csv_options say {compression}) but it is {found}; "
            f"rename it or fix csv_options; {_SUPPORTED}"
        )


def _check_text(uri: str, head: bytes, encoding: str) -> None:
    """Raise if *head* (a file's first bytes) is not text in *encoding* (checked for UTF-8 encodings only)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as err:
        raise ValueError(f"csv_options encoding {encoding!r} is not a known text encoding") from err
    if codec not in ("utf-8", "utf-8-sig"):
        return
    try:
        codecs.getincrementaldecoder(codec)("strict").decode(head, final=False)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{uri} is not valid {encoding} text ({err.reason} at byte {err.start}); pass "
            "csv_options={'encoding': ...} with the file's encoding"
        ) from err
    nul = head.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"{uri} holds a NUL byte (at byte {nul}): it is binary, not CSV text")


def _open_decompressed(local: Path, compression: str | None) -> Any:
    """*local* opened for reading its (decompressed) bytes, or None for a compression without a stdlib reader."""
    if compression is None:
        return local.open("rb")
    if compression == "gzip":
        import gzip

        return gzip.open(local, "rb")
    if compression == "bz2":
        import bz2

        return bz2.open(local, "rb")
    if compression == "xz":
        import lzma

        return lzma.open(local, "rb")
    return None


def undecodable_offset(local: Path, encoding: str, compression: str | None = None) -> int | None:
    """
    Offset in the file *local* (after decompression) of its first byte that is not *encoding* text.

    Decodes the whole file in chunks: pandas reads in blocks and reports offsets within a block, so its own
    ``UnicodeDecodeError.start`` is not an offset in the file. None if the file decodes, or cannot be read
    here (zip, zstd).
    """
    stream = _open_decompressed(local, compression)
    if stream is None:
        return None
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    position = 0
    with stream:
        while True:
            chunk = stream.read(1 << 20)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                return position - pending + err.start
            if not chunk:
                return None
            position += len(chunk)


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
            compression = csv_compression(uri, csv_options)
            offset = undecodable_offset(local, str(options["encoding"]), compression)
            where = "" if offset is None else f" at byte {offset}"
            if offset is not None and compression:
                where += " of the decompressed text"
            raise ValueError(
                f"{uri} is not valid {options['encoding']} text ({err.reason}{where}); pass "
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


#: ``read_csv`` options that say where the header is or what the columns are called: the header as written
#: is then not checked for duplicates.
_HEADER_OPTIONS = frozenset({"header", "names", "index_col", "usecols"})
#: ``read_csv`` options that change how a header row is split into names; passed on to the header check.
_SPLIT_OPTIONS = frozenset({
    "sep", "delimiter", "encoding", "compression", "quotechar", "quoting", "escapechar", "doublequote",
    "skiprows", "comment", "skipinitialspace", "dialect", "lineterminator", "encoding_errors", "engine",
})  # fmt: skip
_MAX_NAMED = 5


def _shown(names: Sequence[str]) -> str:
    """Up to five header names, quoted and cut at 40 characters (a bad header row may hold data)."""
    shown = [repr(name if len(name) <= 40 else name[:37] + "...") for name in names[:_MAX_NAMED]]
    return ", ".join(shown) + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")


def check_header(
    local: Path, uri: str, columns: Sequence[str], fmt: str, csv_options: dict[str, Any] | None = None
) -> None:
    """
    Refuse padded headers (``" label "``) and duplicate headers of the file at *uri* (read into *columns*).

    pandas keeps the spaces around a name, so ``" label "`` is not ``label``, and it renames the second of
    two equal CSV headers ``tenure_months.1``: either would later be reported as a missing or an unexpected
    column. The message names them as what they are.

    :raises ValueError: naming the padded or duplicated headers.
    """
    padded = [name for name in columns if name != name.strip()]
    if padded:
        raise ValueError(
            f"{uri} has padded headers, with spaces around the name: {_shown(padded)}; remove the spaces from "
            "the header row"
        )
    if fmt != "csv" or _HEADER_OPTIONS & set(csv_options or {}):
        return
    import pandas as pd

    options = {"encoding": "utf-8", **{k: v for k, v in (csv_options or {}).items() if k in _SPLIT_OPTIONS}}
    try:
        raw = pd.read_csv(local, header=None, nrows=1, dtype=str, keep_default_na=False, **options)
    except (pd.errors.ParserError, ValueError, OSError, UnicodeDecodeError):
        return  # the whole file was read already; a header this read cannot split is not a duplicate
    names = [str(name) for name in raw.iloc[0].tolist()] if len(raw) else []
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    duplicated = [name for name, count in seen.items() if count > 1]
    if duplicated:
        renamed = f"{duplicated[0]}.1"
        raise ValueError(
            f"{uri} has duplicate headers: {_shown(duplicated)} (pandas would read the second "
            f"{duplicated[0]!r} as {renamed!r}); give every column its own name"
        )


def read_files(
    files: Sequence[tuple[Path, str]], fmt: str, csv_options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """
    Read ``(local path, uri)`` pairs as *fmt* into one DataFrame (rows in the given order, string columns).

    :raises ValueError: if a file cannot be read, has no rows, padded or duplicate headers
        (:func:`check_header`), or other columns than the first.
    """
    import pandas as pd

    frames: list[pd.DataFrame] = []
    for local, uri in files:
        frame = read_file(local, uri, fmt, csv_options)
        frame.columns = [str(column) for column in frame.columns]
        check_header(local, uri, list(frame.columns), fmt, csv_options)
        if len(frame) == 0:
            raise ValueError(f"{uri} has no rows (only a header or schema)")
        if frames and list(frame.columns) != list(frames[0].columns):
            # Counts only, no names: a rejected file's header may hold anything (data, personal details).
            first = set(frames[0].columns)
            missing, extra = len(first - set(frame.columns)), len(set(frame.columns) - first)
            problem = (
                f"{missing} of its columns missing, {extra} others" if missing or extra else "another order"
            )
            raise ValueError(
                f"{uri} has other columns than {files[0][1]} ({problem}); all files must have the same "
                "columns, in the same order"
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
