"""Drift of two snapshots read one column at a time gives the report of the two whole frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.data.drift import compute_drift, compute_drift_snapshots
from airflow_mlops.data.snapshots import DATA, manifest_bytes, write_parquet
from tests.support.drift_data import frames


def stored(folder, frame: pd.DataFrame) -> str:
    write_parquet({DATA: frame}, folder)
    (folder / "_manifest.json").write_bytes(manifest_bytes({"name": "t", "files": {DATA: f"{DATA}.parquet"}}))
    return str(folder)


def with_awkward_columns(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    rows = len(frame)
    frame["segment"] = pd.Categorical(rng.choice(["a", "b", "c"], rows))  # dictionary-encoded in Parquet
    flags = pd.Series(rng.random(rows) < 0.4, dtype=object)
    flags[::7] = None  # booleans with nulls
    frame["flag"] = flags
    frame["city"] = pd.Series(rng.choice(["x", "y", None], rows), dtype=object)  # text with nulls
    frame["count"] = pd.array(rng.integers(0, 5, rows), dtype="Int64")  # nullable integers
    frame.loc[::5, "count"] = pd.NA
    frame["empty"] = np.nan  # all null
    return frame


def test_column_by_column_is_the_whole_frame_report(tmp_path):
    reference, current = frames(seed=5, rows=2_000)
    reference, current = with_awkward_columns(reference, 1), with_awkward_columns(current, 2)
    current["extra"] = 1.0
    current = current.drop(columns=["active"])

    report = compute_drift_snapshots(
        stored(tmp_path / "ref", reference), stored(tmp_path / "cur", current),
        feature_thresholds={"spend": {"null_rate": 0.5}},
    )  # fmt: skip
    written_ref = pd.read_parquet(tmp_path / "ref" / f"{DATA}.parquet")
    written_cur = pd.read_parquet(tmp_path / "cur" / f"{DATA}.parquet")
    expected = compute_drift(written_ref, written_cur, feature_thresholds={"spend": {"null_rate": 0.5}})

    assert report == expected
    assert report["missing_features"] == ["active"]
    assert report["added_features"] == ["extra"]
    assert report["features"]["flag"]["kind"] == "categorical"
    assert "tenure" in report["drifted_features"]


def test_a_missing_split_is_named(tmp_path):
    reference, _ = frames(seed=5, rows=100)
    uri = stored(tmp_path / "ref", reference)
    with pytest.raises(ValueError, match="has no split 'train'"):
        compute_drift_snapshots(uri + "#train", uri)


def test_large_samples_get_scipys_statistics_with_less_memory():
    from scipy.stats import ks_2samp, wasserstein_distance

    from airflow_mlops.data.drift import numeric_drift, psi

    rng = np.random.default_rng(7)
    reference = np.round(rng.normal(0, 1, 600_000), 2)  # ties, as real data has; two blocks of merged values
    current = np.round(rng.normal(0.05, 1.1, 500_000), 2)

    got = numeric_drift(reference, current)

    expected = ks_2samp(reference, current)
    assert got["ks"] == pytest.approx(float(expected.statistic), abs=1e-12)
    assert got["ks_pvalue"] == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert got["wasserstein"] == pytest.approx(float(wasserstein_distance(reference, current)), rel=1e-9)
    assert got["psi"] == pytest.approx(psi(reference, current), abs=1e-12)
    assert numeric_drift(reference, reference)["ks"] == 0.0
