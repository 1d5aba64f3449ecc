"""DriftCheckOperator on synthetic data: shifted numeric and categorical features, reports, outcomes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.exceptions import ConfigurationError, DataDriftError, DatasetError
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.version_compat import AirflowSkipException
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)


def synthetic(rows: int, seed: int, shift: float = 0.0, plan_mix=(0.6, 0.3, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(50 + shift * 10, 10, rows),
            "age": rng.integers(18, 80, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows, p=plan_mix),
            "label": rng.integers(0, 2, rows),
        }
    )


def snapshot(tmp_path, data_root, name: str, df: pd.DataFrame) -> str:
    path = tmp_path / f"{name}.csv"
    df.to_csv(path, index=False)
    op = IngestDatasetOperator(
        task_id="i", dataset_name="customers", source=str(path), data_root=str(data_root)
    )
    return op.execute(context={})["uri"]


@pytest.fixture
def reference(tmp_path, data_root) -> str:
    return snapshot(tmp_path, data_root, "ref", synthetic(3000, seed=1))


def check(dataset: str, reference: str, **kwargs) -> dict:
    op = DriftCheckOperator(
        task_id="drift", dataset_uri=dataset, reference_uri=reference, exclude_columns=["label"], **kwargs
    )
    return op.execute(context={})


def test_same_distribution_passes_with_a_report(tmp_path, data_root, reference):
    current = snapshot(tmp_path, data_root, "cur", synthetic(3000, seed=2))

    summary = check(current, reference)

    assert summary["drift"] is False
    assert set(summary["features"]) == {"income", "age", "plan"}
    assert summary["features"]["plan"]["kind"] == "categorical"
    assert set(summary["features"]["income"]["metrics"]) >= {"psi", "ks", "wasserstein"}
    stored = json.loads(open(summary["report"]).read())
    assert stored["drift"] is False
    assert summary["report"].startswith(f"{current}/_drift/")
    markdown = open(summary["report"].replace("report.json", "report.md")).read()
    assert "| income | numeric | psi |" in markdown
    json.dumps(summary)  # XCom-safe


def test_shifted_numeric_feature_fails_naming_it(tmp_path, data_root, reference):
    current = snapshot(tmp_path, data_root, "shift", synthetic(3000, seed=2, shift=1.0))

    with pytest.raises(DataDriftError, match=r"- income: ks=0\.\d+ > 0\.2, psi=\d\.\d+ > 0\.2") as err:
        check(current, reference)
    assert "plan" not in str(err.value).split("Report:")[0].replace(current, "")
    assert err.value.retryable is False
    assert (err.value.dataset, err.value.uri, err.value.reason) == ("customers", current, "drifted: income")


def test_shifted_categories_drift_and_per_feature_limits(tmp_path, data_root, reference):
    current = snapshot(tmp_path, data_root, "mix", synthetic(3000, seed=2, plan_mix=(0.2, 0.3, 0.5)))

    summary = check(current, reference, on_drift="continue")
    assert summary["drift"] is True
    assert summary["drifted_features"] == ["plan"]
    assert summary["features"]["plan"]["exceeded"] == ["jensen_shannon", "linf"]

    relaxed = check(current, reference, feature_thresholds={"plan": {"linf": 0.9, "jensen_shannon": 0.9}})
    assert relaxed["drift"] is False


def test_skip_outcome_and_missing_feature(tmp_path, data_root, reference):
    current = snapshot(tmp_path, data_root, "nocol", synthetic(500, seed=3).drop(columns=["age"]))
    with pytest.raises(AirflowSkipException, match="missing from .*: age"):
        check(current, reference, on_drift="skip")


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="reference_uri .* or model_name"):
        DriftCheckOperator(task_id="d", dataset_uri="x")
    with pytest.raises(ValueError, match="unknown drift metric 'chi2'"):
        DriftCheckOperator(task_id="d", dataset_uri="x", reference_uri="y", thresholds={"chi2": 1})
    with pytest.raises(ValueError, match="on_drift must be one of fail, skip, continue"):
        DriftCheckOperator(task_id="d", dataset_uri="x", reference_uri="y", on_drift="warn")


def test_reference_and_model_that_render_empty_fail_without_retries(tmp_path, data_root, reference):
    op = DriftCheckOperator(task_id="drift", dataset_uri=reference, reference_uri="{{ params.reference }}")
    op.reference_uri = ""  # what the template rendered to
    with pytest.raises(ConfigurationError, match="reference_uri and model_name rendered empty") as info:
        op.execute(context={})
    assert info.value.retryable is False
    assert info.value.uri == reference


def test_missing_snapshot_is_a_dataset_error_naming_it(tmp_path, reference):
    missing = str(tmp_path / "datasets" / "customers" / ("0" * 64))
    with pytest.raises(DatasetError, match="No dataset snapshot") as info:
        check(missing, reference)
    assert info.value.retryable is False
    assert info.value.uri == missing
