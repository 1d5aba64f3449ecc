"""
Distribution drift between a reference and a current dataset, without Airflow.

Numeric features: population stability index (PSI) on the reference's quantile bins, the two-sample
Kolmogorov-Smirnov statistic (:func:`scipy.stats.ks_2samp`) and the Wasserstein distance
(:func:`scipy.stats.wasserstein_distance`). Categorical features (strings, categories, booleans): the
L-infinity distance between the category frequencies and the Jensen-Shannon distance
(:func:`scipy.spatial.distance.jensenshannon`, base 2, so in [0, 1]). Every feature: the change of its null
rate (``null_rate``), so a column that became all null drifts. Columns of the current data that the
reference lacks are reported as added, those it lacks as missing; both count as drift. The metrics and their
limits are checked by :mod:`airflow_mlops.data.drift_thresholds` (all a DAG needs at parse time).

:func:`compute_drift_snapshots` gives the same report for two snapshots while holding one feature of each in
memory at a time (Parquet column projection; text and boolean features are counted in Arrow, never turned into
Python objects), so the worker's memory grows with the rows of one column, not of the table.
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.drift_thresholds import (
    CATEGORICAL_METRICS,
    COMMON_METRICS,
    DEFAULT_THRESHOLDS,
    METRICS,
    NUMERIC_METRICS,
    check_thresholds,
)
from airflow_mlops.data.snapshots import DATA, DRIFT_DIR, load_manifest, parse_snapshot_uri
from airflow_mlops.data.storage import Storage, is_local, join, local_path

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = [
    "CATEGORICAL_METRICS",
    "COMMON_METRICS",
    "DEFAULT_THRESHOLDS",
    "DRIFT_DIR",
    "METRICS",
    "NUMERIC_METRICS",
    "arrow_feature",
    "categorical_drift",
    "categorical_drift_from_counts",
    "check_thresholds",
    "compute_drift",
    "compute_drift_parquet",
    "compute_drift_snapshots",
    "drift_message",
    "drift_report",
    "feature_result",
    "is_categorical",
    "numeric_drift",
    "psi",
    "psi_edges",
    "psi_from_counts",
    "report_folder",
    "select_features",
    "snapshot_columns",
    "to_markdown",
]

_EPS = 1e-6
#: Largest sample that numeric_drift hands to scipy as it is (its exact KS p-value goes up to this size).
_SCIPY_SIZE = 10_000
_BLOCK = 1 << 20


def is_categorical(series: pd.Series) -> bool:
    """Whether *series* is compared as categories (strings, categories, booleans) rather than numbers."""
    import pandas as pd

    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def psi(reference: Any, current: Any, bins: int = 10) -> float:
    """Population stability index of *current* against *reference*, on *bins* reference quantile bins."""
    import numpy as np

    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    edges = psi_edges(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    return psi_from_counts(np.histogram(reference, edges)[0], np.histogram(current, edges)[0])


def psi_edges(quantiles: Any) -> Any:
    """PSI bin edges from the reference's quantiles: distinct values, the outer ones open (-inf, inf)."""
    import numpy as np

    edges = np.unique(np.asarray(quantiles, dtype=float))
    if len(edges) < 2:  # a constant reference: one bin for its value, one for anything else
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def psi_from_counts(expected: Any, actual: Any) -> float:
    """Population stability index of two histograms on the same bins (counts)."""
    import numpy as np

    expected = np.asarray(expected, dtype=float) / max(float(np.sum(expected)), 1.0)
    actual = np.asarray(actual, dtype=float) / max(float(np.sum(actual)), 1.0)
    expected = np.clip(expected, _EPS, None)
    actual = np.clip(actual, _EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_drift(reference: Any, current: Any, bins: int = 10) -> dict[str, float]:
    """
    PSI, Kolmogorov-Smirnov statistic (and p-value) and Wasserstein distance of two numeric samples.

    Samples of up to 10,000 values go to :func:`scipy.stats.ks_2samp` (its exact p-value) and
    :func:`scipy.stats.wasserstein_distance`; larger ones are sorted once and both statistics are computed as
    scipy does, over blocks of the merged values (the asymptotic p-value, as ``ks_2samp`` gives for them), so
    memory stays at a few copies of the data instead of a dozen.
    """
    import numpy as np
    from scipy.stats import ks_2samp, kstwo, wasserstein_distance

    if max(len(reference), len(current)) <= _SCIPY_SIZE:
        ks = ks_2samp(reference, current)
        return {
            "psi": psi(reference, current, bins),
            "ks": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "wasserstein": float(wasserstein_distance(reference, current)),
        }
    ref = np.sort(np.asarray(reference, dtype=float))
    cur = np.sort(np.asarray(current, dtype=float))
    statistic, wasserstein = _ks_wasserstein_sorted(ref, cur)
    m, n = sorted([float(len(ref)), float(len(cur))], reverse=True)
    edges = psi_edges(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    return {
        "psi": psi_from_counts(_sorted_histogram(ref, edges), _sorted_histogram(cur, edges)),
        "ks": statistic,
        "ks_pvalue": float(np.clip(kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1)),
        "wasserstein": wasserstein,
    }


def _sorted_histogram(values: Any, edges: Any) -> Any:
    """:func:`numpy.histogram` counts of sorted *values* (bins ``[e_i, e_i+1)``, the last one closed)."""
    import numpy as np

    positions = np.searchsorted(values, edges, side="left")
    positions[-1] = np.searchsorted(values, edges[-1], side="right")
    return np.diff(positions)


def _ks_wasserstein_sorted(ref: Any, cur: Any) -> tuple[float, float]:
    """KS statistic and Wasserstein-1 distance of two sorted samples, as scipy computes them, block by block."""
    import numpy as np

    merged = np.concatenate((ref, cur))
    merged.sort()
    largest, smallest, distance = 0.0, 0.0, 0.0
    for start in range(0, len(merged), _BLOCK):
        points = merged[start : start + _BLOCK]
        gap = np.searchsorted(ref, points, side="right") / len(ref)
        gap -= np.searchsorted(cur, points, side="right") / len(cur)
        largest, smallest = max(largest, float(gap.max())), min(smallest, float(gap.min()))
        following = merged[start + 1 : start + _BLOCK + 1]  # W1: |F - G| times the step to the next value
        distance += float(np.sum(np.abs(gap[: len(following)]) * (following - points[: len(following)])))
    return max(largest, min(-smallest, 1.0)), distance


def categorical_drift(reference: pd.Series, current: pd.Series) -> dict[str, float]:
    """L-infinity and Jensen-Shannon distances of two category frequencies, and the new categories' count."""
    return categorical_drift_from_counts(
        reference.astype(str).value_counts().to_dict(), current.astype(str).value_counts().to_dict()
    )


def categorical_drift_from_counts(reference: dict[str, int], current: dict[str, int]) -> dict[str, float]:
    """:func:`categorical_drift` of two ``{category: count}`` tallies."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    categories = sorted(set(reference) | set(current))
    p = np.array([reference.get(c, 0) for c in categories], dtype=float)
    q = np.array([current.get(c, 0) for c in categories], dtype=float)
    p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
    return {
        "linf": float(np.max(np.abs(p - q))),
        "jensen_shannon": float(jensenshannon(p, q, base=2)),
        "new_categories": len(set(current) - set(reference)),
    }


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """
    Compare every feature of *current* with *reference*.

    :returns: ``{"drift": bool, "drifted_features": [...], "missing_features": [...], "added_features":
        [...], "features": {column: {"kind", "metrics", "thresholds", "exceeded", "rows", "null_rate"}}}``.
        A feature drifts when a gated metric exceeds its limit (``null_rate``: the change of its share of
        nulls); a feature of the reference missing from *current*, and a column of *current* the reference
        lacks (unless *columns* names the features, or it is excluded), count as drift.
    """
    wanted, missing, added = select_features(
        list(reference.columns), list(current.columns), columns, exclude_columns
    )
    features = {
        column: _series_feature(
            column, reference[column], current[column], bins, thresholds, feature_thresholds
        )
        for column in wanted
        if column not in missing
    }
    return drift_report(features, missing, added)


def _series_feature(
    column: str,
    reference: pd.Series,
    current: pd.Series,
    bins: int,
    thresholds: dict[str, float] | None,
    feature_thresholds: dict[str, dict[str, float]] | None,
) -> dict[str, Any]:
    """One feature's entry of :func:`compute_drift` from its two columns."""
    ref, cur = reference.dropna(), current.dropna()
    categorical = is_categorical(reference) or is_categorical(current)
    if len(ref) == 0 or len(cur) == 0:
        metrics: dict[str, float] = {}
    elif categorical:
        metrics = categorical_drift(ref, cur)
    else:
        metrics = numeric_drift(ref.to_numpy(dtype=float), cur.to_numpy(dtype=float), bins)
    null_rates = {"reference": _null_rate(reference), "current": _null_rate(current)}
    rows = {"reference": int(len(ref)), "current": int(len(cur))}
    return feature_result(column, categorical, metrics, rows, null_rates, thresholds, feature_thresholds)


def compute_drift_snapshots(
    reference_uri: str,
    current_uri: str,
    storage: Storage | None = None,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """
    :func:`compute_drift` of two snapshot URIs (``#split`` allowed), reading one column of each at a time.

    :raises FileNotFoundError: if a snapshot does not exist.
    :raises ValueError: if a snapshot has no such split.
    """
    storage = storage or Storage()
    with _parquet_file(reference_uri, storage) as ref, _parquet_file(current_uri, storage) as cur:
        return compute_drift_parquet(ref, cur, thresholds, feature_thresholds, columns, exclude_columns, bins)


def compute_drift_parquet(
    reference: pq.ParquetFile,
    current: pq.ParquetFile,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """:func:`compute_drift` of two open Parquet files, reading one column of each at a time."""
    wanted, missing, added = select_features(
        list(reference.schema_arrow.names), list(current.schema_arrow.names), columns, exclude_columns
    )
    features = {}
    for column in wanted:
        if column in missing:
            continue
        ref_table = reference.read(columns=[column], use_pandas_metadata=True)
        cur_table = current.read(columns=[column], use_pandas_metadata=True)
        if _is_text(ref_table.column(column)) and _is_text(cur_table.column(column)):
            features[column] = _arrow_categorical_feature(
                column, ref_table.column(column), cur_table.column(column), thresholds, feature_thresholds
            )
        elif _is_number(ref_table.column(column)) and _is_number(cur_table.column(column)):
            ref_values, ref_nulls = _numbers(ref_table.column(column))
            cur_values, cur_nulls = _numbers(cur_table.column(column))
            del ref_table, cur_table
            features[column] = _numeric_feature(
                column, ref_values, cur_values, ref_nulls, cur_nulls, bins, thresholds, feature_thresholds
            )
            continue
        else:  # numbers (and other types) exactly as compute_drift reads them
            features[column] = _series_feature(
                column, ref_table.to_pandas()[column], cur_table.to_pandas()[column], bins, thresholds,
                feature_thresholds,
            )  # fmt: skip
        del ref_table, cur_table
    return drift_report(features, missing, added)


def arrow_feature(
    column: str,
    reference: pa.ChunkedArray | pa.Array,
    current: pa.ChunkedArray | pa.Array,
    bins: int = 10,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """
    One feature's entry of :func:`compute_drift` from its two Arrow columns, as a snapshot's are compared.

    Text and booleans (also dictionary-encoded) are counted in Arrow, numbers compared as floats (nulls and NaNs
    left out), anything else (or a mix) as :func:`compute_drift` compares the pandas columns.
    """
    import pyarrow as pa

    ref = reference if isinstance(reference, pa.ChunkedArray) else pa.chunked_array([reference])
    cur = current if isinstance(current, pa.ChunkedArray) else pa.chunked_array([current])
    if _is_text(ref) and _is_text(cur):
        return _arrow_categorical_feature(column, ref, cur, thresholds, feature_thresholds)
    if _is_number(ref) and _is_number(cur):
        ref_values, ref_nulls = _numbers(ref)
        cur_values, cur_nulls = _numbers(cur)
        return _numeric_feature(
            column, ref_values, cur_values, ref_nulls, cur_nulls, bins, thresholds, feature_thresholds
        )
    return _series_feature(column, ref.to_pandas(), cur.to_pandas(), bins, thresholds, feature_thresholds)


@contextmanager
def _parquet_file(uri: str, storage: Storage) -> Iterator[Any]:
    """The Parquet file of a snapshot URI (an ``s3://`` one downloaded to a temporary folder first)."""
    import pyarrow.parquet as pq

    base, split = parse_snapshot_uri(uri)
    files = load_manifest(base, storage)["files"]
    key = split or DATA
    if key not in files:
        raise ValueError(
            f"Snapshot {base} has no split {key!r}; it has {sorted(n for n in files if n != DATA) or 'no splits'}"
        )
    file_uri = join(base, files[key])
    if is_local(file_uri):
        yield pq.ParquetFile(local_path(file_uri))
        return
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        yield pq.ParquetFile(storage.download_file(file_uri, Path(tmp) / Path(files[key]).name))


class SnapshotColumns:
    """
    A snapshot's Parquet file seen as a read-only frame whose columns are read when asked for, one at a time.

    ``columns``, ``len()`` and ``frame[column]`` (a pandas Series, as :func:`read_snapshot` would give it), which
    is what :func:`airflow_mlops.data.sql_drift.compute_drift_sql` asks of a frame.
    """

    def __init__(self, parquet: Any, drop: Sequence[str] = ()) -> None:
        self._parquet = parquet
        self.columns = [c for c in parquet.schema_arrow.names if c not in set(drop)]
        self._rows = int(parquet.metadata.num_rows)
        self._last: tuple[str | None, Any] = (None, None)

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, column: str) -> pd.Series:
        if column not in self.columns:
            raise KeyError(column)
        if self._last[0] != column:
            self._last = (None, None)  # let the previous column go before reading the next
            table = self._parquet.read(columns=[column], use_pandas_metadata=True)
            self._last = (column, table.to_pandas()[column])
        return self._last[1]


@contextmanager
def snapshot_columns(
    uri: str, storage: Storage | None = None, drop: Sequence[str] = ()
) -> Iterator[SnapshotColumns]:
    """The snapshot at *uri* (``#split`` allowed) as :class:`SnapshotColumns`, without the columns in *drop*."""
    with _parquet_file(uri, storage or Storage()) as parquet:
        yield SnapshotColumns(parquet, drop)


def _is_text(column: pa.ChunkedArray) -> bool:
    """Strings or booleans (also dictionary-encoded): counted in Arrow rather than as Python objects."""
    import pyarrow as pa

    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind))


def _is_number(column: pa.ChunkedArray) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(column.type) or pa.types.is_floating(column.type))


def _numbers(column: pa.ChunkedArray) -> tuple[Any, int]:
    """The values of a number column as floats without its nulls (and NaNs, as pandas), and how many those were."""
    import numpy as np

    values = np.asarray(column.to_numpy(), dtype=float)  # nulls become NaN
    missing = np.isnan(values)
    count = int(missing.sum())
    return (values[~missing] if count else values), count


def _numeric_feature(
    column: str,
    reference: Any,
    current: Any,
    reference_nulls: int,
    current_nulls: int,
    bins: int,
    thresholds: dict[str, float] | None,
    feature_thresholds: dict[str, dict[str, float]] | None,
) -> dict[str, Any]:
    """:func:`_series_feature` of a number column, from its non-null values and its null count."""
    rows = {"reference": len(reference), "current": len(current)}
    totals = {"reference": rows["reference"] + reference_nulls, "current": rows["current"] + current_nulls}
    null_rates = {
        "reference": reference_nulls / totals["reference"] if totals["reference"] else 0.0,
        "current": current_nulls / totals["current"] if totals["current"] else 0.0,
    }
    metrics = numeric_drift(reference, current, bins) if rows["reference"] and rows["current"] else {}
    return feature_result(column, False, metrics, rows, null_rates, thresholds, feature_thresholds)


def _arrow_counts(column: pa.ChunkedArray) -> dict[str, int]:
    """``{str(value): count}`` of the non-null values of a text or boolean Arrow column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = pa.chunked_array(
            [chunk.dictionary_decode() for chunk in column.chunks], type=column.type.value_type
        )
    counts = pc.value_counts(pc.drop_null(column))
    return {
        str(value): int(count)
        for value, count in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
    }


def _arrow_categorical_feature(
    column: str,
    reference: pa.ChunkedArray,
    current: pa.ChunkedArray,
    thresholds: dict[str, float] | None,
    feature_thresholds: dict[str, dict[str, float]] | None,
) -> dict[str, Any]:
    """:func:`_series_feature` of a text or boolean column, from its counts in Arrow."""
    rows = {"reference": len(reference) - reference.null_count, "current": len(current) - current.null_count}
    null_rates = {
        "reference": reference.null_count / len(reference) if len(reference) else 0.0,
        "current": current.null_count / len(current) if len(current) else 0.0,
    }
    metrics: dict[str, float] = {}
    if rows["reference"] and rows["current"]:
        metrics = categorical_drift_from_counts(_arrow_counts(reference), _arrow_counts(current))
    return feature_result(column, True, metrics, rows, null_rates, thresholds, feature_thresholds)


def select_features(
    reference_columns: list[str],
    current_columns: list[str],
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """The features to compare, those of them missing on either side, and the current data's added columns."""
    excluded = set(exclude_columns or [])
    wanted = list(columns) if columns else [c for c in reference_columns if c not in excluded]
    missing = [c for c in wanted if c not in current_columns or c not in reference_columns]
    known = set(reference_columns) | excluded
    added = [] if columns else [str(c) for c in current_columns if c not in known]
    return wanted, missing, added


def feature_result(
    column: str,
    categorical: bool,
    metrics: dict[str, float],
    rows: dict[str, int],
    null_rates: dict[str, float],
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """One feature's entry of a drift report: its metrics (with ``null_rate``), gates and exceeded limits."""
    metrics = {**metrics, "null_rate": abs(null_rates["current"] - null_rates["reference"])}
    limits = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    gates = {**limits, **(feature_thresholds or {}).get(column, {})}
    applicable = (CATEGORICAL_METRICS if categorical else NUMERIC_METRICS) + COMMON_METRICS
    gates = {metric: limit for metric, limit in gates.items() if metric in applicable}
    exceeded = sorted(m for m, limit in gates.items() if m in metrics and metrics[m] > limit)
    return {
        "kind": "categorical" if categorical else "numeric",
        "metrics": {key: round(value, 6) for key, value in metrics.items()},
        "thresholds": gates,
        "exceeded": exceeded,
        "rows": rows,
        "null_rate": {key: round(value, 6) for key, value in null_rates.items()},
    }


def drift_report(features: dict[str, Any], missing: list[str], added: list[str]) -> dict[str, Any]:
    """The report of :func:`compute_drift` from its features' entries (:func:`feature_result`)."""
    drifted = [column for column, info in features.items() if info["exceeded"]]
    return {
        "drift": bool(drifted or missing or added),
        "drifted_features": drifted,
        "missing_features": missing,
        "added_features": added,
        "features": features,
    }


def _null_rate(series: pd.Series) -> float:
    return float(series.isna().mean()) if len(series) else 0.0


def to_markdown(report: dict[str, Any]) -> str:
    """A human-readable Markdown rendering of a drift report."""
    lines = [
        f"# Drift report: {report.get('dataset')}",
        "",
        f"- reference: `{report.get('reference')}`",
        f"- current: `{report.get('dataset')}`",
        f"- drift: **{'yes' if report['drift'] else 'no'}**"
        + (f" ({', '.join(report['drifted_features'])})" if report["drifted_features"] else ""),
    ]
    if report["missing_features"]:
        lines.append(f"- missing from the current data: {', '.join(report['missing_features'])}")
    if report.get("added_features"):
        lines.append(f"- not in the reference: {_first(report['added_features'])}")
    lines += ["", "| feature | kind | metric | value | limit | drift |", "|---|---|---|---|---|---|"]
    for column, info in report["features"].items():
        for metric, value in info["metrics"].items():
            limit = info["thresholds"].get(metric)
            flag = "**yes**" if metric in info["exceeded"] else ("no" if limit is not None else "")
            lines.append(
                f"| {column} | {info['kind']} | {metric} | {value:.4g} | "
                f"{'' if limit is None else f'{limit:g}'} | {flag} |"
            )
    return "\n".join(lines) + "\n"


def drift_message(report: dict[str, Any], report_uri: str | None = None) -> str:
    """
    What drifted in *report* (of :func:`compute_drift`, with ``dataset`` and ``reference``), one line each.

    Each drifted feature is named with every metric over its limit (with the null rates when ``null_rate``
    is one); missing and added features are listed last.
    """
    features = report["features"]
    details = [
        f"- {feature}: "
        + ", ".join(
            f"{metric}={features[feature]['metrics'][metric]:.4g} > {features[feature]['thresholds'][metric]:g}"
            for metric in features[feature]["exceeded"]
        )
        + _null_detail(features[feature])
        for feature in report["drifted_features"]
    ]
    if report["missing_features"]:
        details.append(f"- missing from {report['dataset']}: {', '.join(report['missing_features'])}")
    if report.get("added_features"):
        details.append(f"- not in the reference: {_first(report['added_features'])}")
    message = f"Dataset {report['dataset']} drifted from {report['reference']}:\n" + "\n".join(details)
    return message + (f"\nReport: {report_uri}" if report_uri else "")


def _null_detail(info: dict[str, Any]) -> str:
    rates = info.get("null_rate")
    if "null_rate" not in info["exceeded"] or not rates:
        return ""
    return f" (nulls {rates['reference']:.0%} -> {rates['current']:.0%})"


def _first(columns: list[str], shown: int = 20) -> str:
    """The first *shown* of *columns*, and how many more there are."""
    more = len(columns) - shown
    return ", ".join(columns[:shown]) + (f" and {more} more" if more > 0 else "")


def report_folder(uri: str, reference: str, reference_snapshot_id: str | None) -> str:
    """
    Where the drift report of snapshot *uri* against *reference* is stored.

    ``<snapshot>/_drift/[<split>-]<reference id>[-<reference split>]``, the reference id being the first 16
    characters of its snapshot id (or of the SHA-256 of its URI).
    """
    base, split = parse_snapshot_uri(uri)
    ref_base, ref_split = parse_snapshot_uri(reference)
    ref_id = str(reference_snapshot_id or hashlib.sha256(ref_base.encode()).hexdigest())[:16]
    return join(base, DRIFT_DIR, "-".join(filter(None, [split, ref_id, ref_split])))
