"""
The example DAG's validation suite pins its features to numbers, so a first run stops a numeric column written
as text (thousands separators, timestamps, lists) at validation instead of training without it.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.demo.data import make_demo_data
from airflow_mlops.exceptions import DataValidationError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "continuous_training.py"
CASES = {
    "thousands-separators": (
        lambda df: df.assign(monthly_spend=(df["monthly_spend"] * 100).map("{:,.2f}".format)),
        "monthly_spend",
    ),
    "timestamp-in-a-feature": (
        lambda df: df.assign(usage_hours=pd.Timestamp("2026-12-05 10:00") + pd.to_timedelta(df.index, "h")),
        "usage_hours",
    ),
    "list-column": (
        lambda df: df.assign(support_calls=df["support_calls"].map(lambda n: [n, n + 1])),
        "support_calls",
    ),
}


@pytest.fixture(scope="module")
def example_suite() -> list[dict]:
    """The validation suite of ``mlops_continuous_training``, rendered for the label column ``label``."""
    task = runpy.run_path(str(DAG_FILE))["dag"].get_task("validate")
    return json.loads(json.dumps(task.expectations).replace("{{ params.target }}", "label"))


@pytest.mark.parametrize("case", list(CASES))
def test_the_example_suite_stops_a_feature_that_is_not_a_number_on_the_first_run(
    case, tmp_path, example_suite
):
    spoil, column = CASES[case]
    frame = spoil(pd.read_csv(make_demo_data(tmp_path / "customers.csv", rows=200)))
    source = tmp_path / "spoilt.csv"
    frame.to_csv(source, index=False)
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name="spoilt", source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})

    with pytest.raises(DataValidationError) as info:
        ValidateDatasetOperator(
            task_id="validate", dataset_uri=snapshot["uri"], expectations=example_suite
        ).execute(context={})
    assert f"column {column!r} must hold numbers (number)" in str(info.value)
