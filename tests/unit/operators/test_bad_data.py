"""
Bad data of the kinds users send, each stopped with a message naming the dataset and
the problem (these all parse, so validation is where they are caught). The suite is the kind a team writes once for its table: schema, types, nulls, uniqueness.
"""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import DataValidationError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.new_data_support import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

HEADER = "customer_id,tenure_months,monthly_spend,label"
GOOD_ROWS = [f"{i},{i % 60 + 1},{20 + i % 50}.5,{i % 2}" for i in range(40)]
SUITE = [
    {"type": "expect_table_columns_to_match_set",
     "kwargs": {"column_set": ["customer_id", "tenure_months", "monthly_spend", "label"], "exact_match": True}},
    {"type": "expect_column_values_to_be_in_type_list",
     "kwargs": {"column": "monthly_spend", "type_list": ["float64", "int64", "float", "int"]}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "monthly_spend"}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}},
]  # fmt: skip


def _csv(rows: list[str], header: str = HEADER, sep: str = ",") -> str:
    return "\n".join(line.replace(",", sep) for line in [header, *rows]) + "\n"


CASES = {
    "wrong-delimiter": (_csv(GOOD_ROWS, sep=";"), "expect_table_columns_to_match_set"),
    "strings-where-numbers-expected": (
        _csv([*GOOD_ROWS[:-1], "39,12,twelve dollars,1"]), "expect_column_values_to_be_in_type_list"
    ),
    "all-null-column": (
        _csv([row.rsplit(",", 2)[0] + ",," + row.rsplit(",", 1)[1] for row in GOOD_ROWS]),
        "expect_column_values_to_not_be_null",
    ),
    "unexpected-extra-column": (
        _csv([row + ",x" for row in GOOD_ROWS], header=HEADER + ",notes"), "expect_table_columns_to_match_set"
    ),
    "duplicated-rows": (_csv([*GOOD_ROWS, GOOD_ROWS[3], GOOD_ROWS[7]]), "expect_column_values_to_be_unique"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_stopped_with_the_dataset_and_the_problem_named(case, tmp_path):
    content, failing = CASES[case]
    source = tmp_path / f"{case}.csv"
    source.write_text(content)
    name = f"customers_{case.replace('-', '_')}"
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name=name, source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})
    with pytest.raises(DataValidationError) as info:
        ValidateDatasetOperator(task_id="validate", dataset_uri=snapshot["uri"], expectations=SUITE).execute(
            context={}
        )
    message = str(info.value)
    assert repr(name) in message
    assert failing in message


def test_the_suite_passes_on_good_data(tmp_path):
    source = tmp_path / "good.csv"
    source.write_text(_csv(GOOD_ROWS))
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name="customers", source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})
    summary = ValidateDatasetOperator(task_id="validate", dataset_uri=snapshot["uri"], expectations=SUITE).execute(
        context={}
    )
    assert summary["success"] is True
