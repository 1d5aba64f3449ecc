"""ValidateDatasetOperator: Great Expectations over snapshots, compact summaries, clear failures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.exceptions import (
    ConfigurationError,
    DatasetConfigurationError,
    DatasetError,
    DataValidationError,
)
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

GOOD = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}},
    {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "f2", "min_value": 0, "max_value": 99},
    },
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 100}},
]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> dict:
    """A snapshot of 120 rows: label in {0, 1} except three rows with label 7."""
    tmp = tmp_path_factory.mktemp("validation")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"f1": rng.normal(size=120), "f2": rng.integers(0, 100, 120), "label": rng.integers(0, 2, 120)}
    )
    frame.loc[[5, 50, 100], "label"] = 7
    frame.to_csv(tmp / "demo.csv", index=False)
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="demo", source=str(tmp / "demo.csv"), data_root=str(tmp / "root"),
        split={"train": 0.75, "valid": 0.25},
    )  # fmt: skip
    return op.execute(context={})


def validate(uri: str, **kwargs) -> dict:
    return ValidateDatasetOperator(task_id="validate", dataset_uri=uri, **kwargs).execute(context={})


def test_passing_suite_returns_compact_summary(snapshot):
    expectations = [GOOD[0], GOOD[2], GOOD[3]]
    summary = validate(snapshot["uri"], expectations=expectations)
    assert summary["success"] is True
    assert (summary["evaluated"], summary["successful"], summary["unsuccessful"]) == (3, 3, 0)
    assert summary["failed"] == []
    assert summary["dataset"] == snapshot["uri"]
    assert summary["name"] == "demo"
    assert summary["rows"] == 120
    json.dumps(summary)


def test_failure_names_dataset_and_observed_values(snapshot):
    expectations = [
        *GOOD,
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "f2", "min_value": 500}},
    ]
    with pytest.raises(DataValidationError) as info:
        validate(snapshot["uri"], expectations=expectations)
    message = str(info.value)
    assert "'demo'" in message
    assert snapshot["snapshot_id"] in message
    assert "failed 2 of 5 expectations" in message
    assert 'expect_column_values_to_be_in_set(column="label"' in message
    assert "unexpected_count=3" in message
    assert "unexpected_examples=[7, 7, 7]" in message
    assert "expect_column_mean_to_be_between" in message
    assert "observed_value=" in message
    assert info.value.retryable is False
    assert (info.value.dataset, info.value.uri) == ("demo", snapshot["uri"])
    assert info.value.reason == "failed: expect_column_mean_to_be_between, expect_column_values_to_be_in_set"


def test_soft_fail_returns_summary_without_data_rows(snapshot):
    expectations = [GOOD[1], {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such"}}]
    summary = validate(snapshot["uri"], expectations=expectations, soft_fail=True)

    assert summary["success"] is False
    assert summary["unsuccessful"] == 2
    failed = {item["column"]: item for item in summary["failed"]}
    assert failed["label"]["expectation"] == "expect_column_values_to_be_in_set"
    assert failed["label"]["observed"]["unexpected_count"] == 3
    assert failed["label"]["observed"]["unexpected_percent"] == pytest.approx(2.5)
    assert failed["label"]["kwargs"] == {"column": "label", "value_set": [0, 1]}
    assert 'column "no_such"' in failed["no_such"]["observed"]["error"]
    assert len(json.dumps(summary)) < 2000  # a summary, not the data


def test_boolean_only_reports_no_values(snapshot):
    summary = validate(snapshot["uri"], expectations=[GOOD[1]], soft_fail=True, result_format="BOOLEAN_ONLY")
    assert summary["success"] is False
    assert "unexpected_examples" not in summary["failed"][0]["observed"]


def test_split_uri_validates_only_that_split(snapshot):
    count = {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 30}}
    summary = validate(snapshot["splits"]["valid"], expectations=[count])
    assert summary["success"] is True
    assert summary["split"] == "valid"
    assert summary["rows"] == 30
    with pytest.raises(DataValidationError, match="observed_value=90"):
        validate(snapshot["splits"]["train"], expectations=[count])


def test_suite_file(snapshot, tmp_path):
    # The shape GX 1.x writes when a suite is exported (ExpectationSuite.to_json_dict()).
    exported = {
        "name": "demo_suite", "id": "a5fad321-828e-43f5-843d-4a470e7ccd68", "meta": {}, "notes": None,
        "expectations": [
            {**GOOD[0], "meta": {}, "id": "801280e8-ded0-4cb3-bcba-bb7ede765387", "severity": "critical"},
            {**GOOD[1], "description": "labels are binary"},
        ],
    }  # fmt: skip
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(exported))
    summary = validate(snapshot["uri"], suite_path=str(suite), soft_fail=True)
    assert (summary["evaluated"], summary["unsuccessful"]) == (2, 1)
    assert summary["failed"][0]["expectation"] == "expect_column_values_to_be_in_set"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"name": "s"}), "must be a JSON object with an 'expectations' list"),
        (json.dumps({"name": "s", "expectations": [{"type": "column_not_null", "kwargs": {}}]}), "expect_"),
        (
            json.dumps({"name": "s", "expectations": [{"type": "expect_nonexistent_thing", "kwargs": {}}]}),
            "Unknown expectation type 'expect_nonexistent_thing'",
        ),
    ],
)
def test_malformed_suite_file_is_named(snapshot, tmp_path, content, message):
    suite = tmp_path / "broken-suite.json"
    suite.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        validate(snapshot["uri"], suite_path=str(suite))
    assert str(suite) in str(info.value)


def test_missing_suite_file_is_named(snapshot, tmp_path):
    with pytest.raises(ConfigurationError, match="missing-suite.json does not exist") as info:
        validate(snapshot["uri"], suite_path=str(tmp_path / "missing-suite.json"))
    assert info.value.retryable is False
    assert info.value.uri == str(tmp_path / "missing-suite.json")


def test_unknown_expectation_type_is_named(snapshot):
    with pytest.raises(ConfigurationError, match="Unknown expectation type 'expect_column_to_be_awesome'") as info:
        validate(snapshot["uri"], expectations=[{"type": "expect_column_to_be_awesome", "kwargs": {}}])
    assert info.value.retryable is False
    assert (info.value.dataset, info.value.uri) == ("demo", snapshot["uri"])


def test_invalid_expectation_kwargs_are_named(snapshot):
    bad = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label"}}  # no value_set
    with pytest.raises(ValueError, match="Invalid kwargs for 'expect_column_values_to_be_in_set'.*value_set"):
        validate(snapshot["uri"], expectations=[bad])


def test_missing_snapshot_is_a_dataset_error(tmp_path):
    missing = str(tmp_path / "datasets" / "demo" / ("0" * 64))
    with pytest.raises(DatasetError, match="No dataset snapshot") as info:
        validate(missing, expectations=GOOD)
    assert info.value.retryable is False
    assert info.value.uri == missing


def test_templated_arguments_are_checked_once_rendered(snapshot):
    op = ValidateDatasetOperator(task_id="validate", dataset_uri="{{ params.uri }}", expectations="{{ params.suite }}")
    op.expectations = [{"type": "expect_column_to_exist", "kwargs": {"column": "label"}}]  # rendered
    op.dataset_uri = "  "
    with pytest.raises(DatasetConfigurationError, match="dataset_uri must be a snapshot URI") as info:
        op.execute(context={})
    assert info.value.retryable is False
    op.dataset_uri = snapshot["uri"]
    op.expectations = {"type": "expect_column_to_exist"}  # rendered to one expectation, not a list
    with pytest.raises(ConfigurationError, match="non-empty list of expectations") as info:
        op.execute(context={})
    assert info.value.retryable is False
    op.expectations = [{"type": "expect_column_to_exist", "kwargs": {"column": "label"}}]
    assert op.execute(context={})["success"] is True


def test_unknown_split_is_a_dataset_error(snapshot):
    with pytest.raises(DatasetError, match="has no split 'holdout'"):
        validate(f"{snapshot['uri']}#holdout", expectations=GOOD)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of expectations"),
        ({"expectations": GOOD, "suite_path": "suite.json"}, "exactly one of expectations"),
        ({"expectations": []}, "non-empty list"),
        ({"expectations": {"type": "expect_x"}}, "non-empty list"),
        ({"expectations": ["expect_column_to_exist"]}, r"expectations\[0\] must be a dict"),
        ({"expectations": [{"kwargs": {}}]}, r"expectations\[0\] needs a 'type'"),
        ({"expectations": [{"type": "column_exists", "kwargs": {}}]}, "expect_"),
        ({"expectations": [{"type": "expect_column_to_exist", "kwargs": "col"}]}, "needs a dict 'kwargs'"),
        ({"expectations": [{"type": "expect_column_to_exist", "kwargs": {}, "colum": "x"}]}, "unknown keys"),
        ({"expectations": GOOD, "result_format": "FULL"}, "result_format must be one of"),
    ],
)
def test_expectation_shape_checked_at_init(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ValidateDatasetOperator(task_id="validate", dataset_uri="/data/datasets/demo/abc", **kwargs)


@pytest.fixture(scope="module")
def gx_project(tmp_path_factory):
    """A Great Expectations file data context with a checkpoint that validates a dataframe asset."""
    import great_expectations as gx

    root = tmp_path_factory.mktemp("gx-project")
    context = gx.get_context(mode="file", project_root_dir=str(root))
    batch = (
        context.data_sources.add_pandas("snapshots")
        .add_dataframe_asset("demo")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(
        gx.ExpectationSuite(
            name="demo-checks",
            expectations=[
                gx.expectations.ExpectColumnValuesToNotBeNull(column="f1"),
                gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
            ],
        )
    )
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="demo", data=batch, suite=suite))
    context.checkpoints.add(gx.Checkpoint(name="nightly", validation_definitions=[definition]))
    return str(root)


def test_checkpoint_of_a_gx_file_context_validates_the_snapshot(snapshot, gx_project):
    with pytest.raises(DataValidationError) as info:
        validate(snapshot["uri"], gx_context_dir=gx_project, checkpoint_name="nightly")
    message = str(info.value)
    assert "failed 1 of 2 expectations" in message
    assert "unexpected_count=3" in message

    summary = validate(snapshot["uri"], gx_context_dir=gx_project, checkpoint_name="nightly", soft_fail=True)
    assert (summary["evaluated"], summary["unsuccessful"]) == (2, 1)
    assert summary["rows"] == 120


def test_unknown_checkpoint_is_named(snapshot, gx_project):
    with pytest.raises(ValueError, match="Cannot load checkpoint 'weekly' from the GX context"):
        validate(snapshot["uri"], gx_context_dir=gx_project, checkpoint_name="weekly")


def test_checkpoint_needs_its_context():
    with pytest.raises(ValueError, match="checkpoint_name and gx_context_dir go together"):
        ValidateDatasetOperator(task_id="v", dataset_uri="/data/x", checkpoint_name="nightly")
