"""The OpenLineage names and facets built from the operators' results (the events themselves: integration)."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow.providers.openlineage")

from airflow_mlops.lineage.openlineage import (  # noqa: E402
    dataset_name,
    deployment_lineage,
    drift_lineage,
    infra_validation_lineage,
    ingest_lineage,
    model_namespace,
    snapshot_location,
    validation_lineage,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://lake/mlops/datasets/churn/abc", ("s3://lake", "mlops/datasets/churn/abc")),
        ("s3://lake", ("s3://lake", "/")),
        ("/data/datasets/churn/abc/", ("file", "/data/datasets/churn/abc")),
        ("file:///data/my%20files/a.csv", ("file", "/data/my files/a.csv")),
    ],
)
def test_locations_get_their_openlineage_namespace_and_name(uri, expected):
    assert dataset_name(uri) == expected


def test_a_split_is_the_split_file_of_the_snapshot():
    assert snapshot_location("s3://lake/d/churn/abc#holdout") == "s3://lake/d/churn/abc/holdout.parquet"
    assert snapshot_location("/d/churn/abc") == "/d/churn/abc"


@pytest.mark.parametrize(
    ("uri", "namespace"),
    [
        ("https://alice:secret@mlflow.example.com:8443/", "https://mlflow.example.com:8443"),
        ("http://127.0.0.1:5000?x=1#y", "http://127.0.0.1:5000"),
        ("databricks", "databricks"),
    ],
)
def test_the_mlflow_namespace_never_carries_credentials(uri, namespace):
    assert model_namespace(uri) == namespace


def test_an_s3_glob_source_is_reported_as_its_folder_and_the_splits_with_their_rows():
    manifest = {
        "uri": "s3://lake/mlops/datasets/churn/abc", "snapshot_id": "abc", "format": "csv",
        "source": "s3://raw/churn/2026-*/part-*.csv", "source_files": [{"uri": "a"}, {"uri": "b"}],
        "rows": 10, "bytes": 999, "schema": {"x": "int64", "label": "int64"},
        "files": {"data": "data.parquet", "train": "train.parquet", "holdout": "holdout.parquet"},
        "split": {"rows": {"train": 7, "holdout": 3}},
    }  # fmt: skip
    lineage = ingest_lineage(manifest)
    (source,) = lineage.inputs
    assert (source.namespace, source.name) == ("s3://raw", "churn")
    outputs = {o.name: o for o in lineage.outputs}
    assert set(outputs) == {
        "mlops/datasets/churn/abc", "mlops/datasets/churn/abc/train.parquet",
        "mlops/datasets/churn/abc/holdout.parquet",
    }  # fmt: skip
    whole = outputs["mlops/datasets/churn/abc"]
    assert (whole.outputFacets["outputStatistics"].rowCount, whole.outputFacets["outputStatistics"].size) == (
        10,
        999,
    )
    assert outputs["mlops/datasets/churn/abc/holdout.parquet"].outputFacets["outputStatistics"].rowCount == 3
    assert [f.name for f in whole.facets["schema"].fields] == ["x", "label"]


def test_a_sql_source_gives_its_query_and_no_input():
    lineage = ingest_lineage(
        {
            "uri": "/d/datasets/c/abc",
            "format": "sql",
            "query": "SELECT 1",
            "rows": 1,
            "files": {"data": "data.parquet"},
        }
    )
    assert lineage.inputs == []
    assert lineage.job_facets["sql"].query == "SELECT 1"


def test_failed_expectations_are_failed_assertions_and_the_others_passed():
    summary = {
        "dataset": "/d/datasets/c/abc#train", "snapshot_id": "abc", "rows": 70,
        "failed": [{"expectation": "expect_column_values_to_not_be_null", "column": "x", "severity": "critical"}],
    }  # fmt: skip
    expectations = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}, "severity": "warning"},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10}},
    ]
    (dataset,) = validation_lineage(summary, expectations).inputs
    assert dataset.name == "/d/datasets/c/abc/train.parquet"
    assertions = dataset.inputFacets["dataQualityAssertions"].assertions
    assert [(a.assertion, a.column, a.success, a.severity) for a in assertions] == [
        ("expect_column_values_to_not_be_null", "x", False, "critical"),
        ("expect_column_values_to_not_be_null", "label", True, "warning"),
        ("expect_table_row_count_to_be_between", None, True, "critical"),
    ]
    assert dataset.inputFacets["dataQualityMetrics"].rowCount == 70
    # From a suite file the expectations are not known: the failures are still reported.
    (dataset,) = validation_lineage(summary).inputs
    assert [a.success for a in dataset.inputFacets["dataQualityAssertions"].assertions] == [False]


def test_a_drifted_feature_is_a_failed_assertion_next_to_its_reference_and_report():
    summary = {
        "dataset": "s3://lake/d/c/new", "reference": "s3://lake/d/c/old", "report": "s3://lake/d/c/new/_drift/old/report.json",
        "features": {"spend": {"metrics": {"psi": 0.5, "ks": 0.1}, "thresholds": {"psi": 0.2, "ks": 0.2}, "exceeded": ["psi"]}},
        "missing_features": ["tenure"], "added_features": [],
    }  # fmt: skip
    lineage = drift_lineage(summary)
    current, reference = lineage.inputs
    assert reference.name == "d/c/old"
    assertions = {(a.assertion, a.column): a for a in current.inputFacets["dataQualityAssertions"].assertions}
    assert assertions[("drift psi <= 0.2", "spend")].success is False
    assert assertions[("drift psi <= 0.2", "spend")].actual == "0.5"
    assert assertions[("drift ks <= 0.2", "spend")].success is True
    assert assertions[("column present", "tenure")].success is False
    assert [o.name for o in lineage.outputs] == ["d/c/new/_drift/old/report.json"]


def test_drift_computed_in_a_database_names_no_table_as_a_file():
    summary = {
        "dataset": "sql://warehouse/events", "reference": "sql://warehouse/query-0a1b2c3d", "engine": "sql",
        "report": "/d/drift/warehouse/events/query-0a1b2c3d/report.json",
        "features": {"spend": {"metrics": {"psi": 0.1}, "thresholds": {"psi": 0.2}, "exceeded": []}},
    }  # fmt: skip
    lineage = drift_lineage(summary)
    assert lineage.inputs == []
    assert [(o.namespace, o.name) for o in lineage.outputs] == [
        ("file", "/d/drift/warehouse/events/query-0a1b2c3d/report.json")
    ]


def test_infra_validation_and_deploy_name_the_version_and_the_endpoint_without_credentials():
    registry = "https://bob:pw@mlflow.example.com"
    infra = infra_validation_lineage({"model_name": "churn", "version": 3}, registry, "/d/c/abc#holdout")
    assert [(d.namespace, d.name) for d in infra.inputs] == [
        ("https://mlflow.example.com", "models/churn/3"), ("file", "/d/c/abc/holdout.parquet")
    ]  # fmt: skip
    deploy = deployment_lineage(
        {"model_name": "churn", "version": "3", "endpoint": "https://u:p@models.example.com/v2/churn/infer"},
        registry,
    )
    (endpoint,) = deploy.outputs
    assert (endpoint.namespace, endpoint.name) == ("https://models.example.com", "/v2/churn/infer")
    assert deployment_lineage(None, registry).outputs == []


def test_a_failed_validation_keeps_its_results_for_the_fail_event(tmp_path):
    import pandas as pd

    from airflow_mlops.data.expectations import table_suite
    from airflow_mlops.exceptions import DataValidationError
    from airflow_mlops.operators.ingest import IngestDatasetOperator
    from airflow_mlops.operators.validation import ValidateDatasetOperator

    source = tmp_path / "bad.csv"
    pd.DataFrame({"x": range(120), "label": [0, 1, 7] * 40}).to_csv(source, index=False)
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name="bad", source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})
    op = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"],
        expectations=table_suite(["x"], "label", label_values=[0, 1], min_rows=100),
    )  # fmt: skip
    with pytest.raises(DataValidationError):
        op.execute(context={})

    (dataset,) = op.get_openlineage_facets_on_failure(None).inputs
    assert dataset.name == snapshot["uri"]
    assertions = dataset.inputFacets["dataQualityAssertions"].assertions
    assert [(a.assertion, a.column) for a in assertions if not a.success] == [
        ("expect_column_values_to_be_in_set", "label")
    ]
    assert any(a.success for a in assertions)
