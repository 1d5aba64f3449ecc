"""
The validation's Data Docs page published to the real MLflow server: the task's "Data Docs" link opens the
artifact's page in the MLflow UI, the evaluation report (and so the approval page) links it, and a page that
stayed on the worker's disk is never linked.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from airflow_mlops import tags as T
from airflow_mlops.evaluation import report as reporting
from airflow_mlops.exceptions import DataValidationError
from airflow_mlops.links import DataDocsLink, browser_url, data_docs_url, http_links_only
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import DATA_DOCS_ARTIFACT, ValidateDatasetOperator
from tests.support.context import context_for
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration

NOT_NULL = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}}
BINARY = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> dict:
    """40 rows whose label is 0, 1 or (two rows) 7."""
    tmp = tmp_path_factory.mktemp("data-docs")
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"f1": rng.normal(size=40), "label": rng.integers(0, 2, 40)})
    frame.loc[[3, 30], "label"] = 7
    frame.to_csv(tmp / "demo.csv", index=False)
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="docs_demo", source=str(tmp / "demo.csv"), data_root=str(tmp / "root")
    )
    return op.execute(context={})


def run_id_of(url: str) -> str:
    match = re.search(r"/runs/([0-9a-f]{32})/artifacts/", url)
    assert match, url
    return match[1]


def artifact_html(mlflow_server, run_id: str) -> requests.Response:
    """The artifact as the MLflow UI's page fetches it to show it."""
    return requests.get(
        f"{mlflow_server.uri}/get-artifact",
        params={"path": DATA_DOCS_ARTIFACT, "run_uuid": run_id},
        timeout=30,
    )


def test_published_data_docs_open_from_the_link_the_report_and_the_approval_page(mlflow_server, snapshot):
    op = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"], expectations=[NOT_NULL], experiment_name="docs-demo"
    )
    context = context_for(op, run_id="scheduled__docs-1")
    summary = op.execute(context)

    url = summary["data_docs_uri"]
    assert url.startswith(f"{mlflow_server.uri}/#/experiments/")
    assert url.endswith(f"/artifacts/{DATA_DOCS_ARTIFACT}")
    assert DataDocsLink().get_link(op, ti_key=None) == url  # the task's extra link
    assert not summary["data_docs"].startswith("http")  # the stored copy is still where it was
    assert requests.get(url, timeout=30).status_code == 200  # the MLflow UI page
    run_id = run_id_of(url)
    page = artifact_html(mlflow_server, run_id)
    assert page.status_code == 200
    assert "<title>Data documentation compiled by Great Expectations</title>" in page.text
    assert page.text == Path(summary["data_docs"]).read_text()  # the page the validation rendered

    # The evaluation report links it, and the approval page's default body keeps it (an http(s) link).
    assert reporting.data_docs_uri(summary) == url
    assert f"[Data Docs]({url})" in http_links_only(f"[Data Docs]({url})")

    run = MlflowClient(mlflow_server.uri).get_run(run_id)
    assert run.data.tags[T.VALIDATION_SUCCESS] == "true"
    assert run.data.tags[T.AIRFLOW_RUN_ID] == "scheduled__docs-1"
    assert run.info.status == "FINISHED"

    # A retry of the same task instance publishes to the same run, not a second one.
    again = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"], expectations=[NOT_NULL], experiment_name="docs-demo"
    ).execute(context_for(op, run_id="scheduled__docs-1", try_number=2))
    assert again["data_docs_uri"] == url


def test_a_failed_validation_publishes_the_page_that_says_why(mlflow_server, snapshot):
    op = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"], expectations=[BINARY], experiment_name="docs-demo"
    )
    with pytest.raises(DataValidationError, match="expect_column_values_to_be_in_set"):
        op.execute(context_for(op, run_id="scheduled__docs-failed"))

    run_id = run_id_of(DataDocsLink().get_link(op, ti_key=None))
    assert MlflowClient(mlflow_server.uri).get_run(run_id).info.status == "FAILED"
    page = artifact_html(mlflow_server, run_id)
    assert page.status_code == 200
    assert "<title>Data documentation compiled by Great Expectations</title>" in page.text
    stored = next(Path(snapshot["uri"]).glob("_validation/*/index.html"))
    assert page.text == stored.read_text()


def test_a_page_left_on_the_worker_is_never_linked(snapshot):
    op = ValidateDatasetOperator(task_id="validate", dataset_uri=snapshot["uri"], expectations=[NOT_NULL])
    summary = op.execute(context_for(op))

    assert summary["data_docs"].endswith("/index.html")
    assert summary["data_docs_uri"] is None
    assert DataDocsLink().get_link(op, ti_key=None) == ""
    # The evaluation report (and so the approval page) shows no Data Docs link for it.
    assert browser_url(data_docs_url(reporting.data_docs_uri(summary))) == ""


def test_experiment_name_needs_the_page():
    with pytest.raises(ValueError, match="needs data_docs=True"):
        ValidateDatasetOperator(
            task_id="v", dataset_uri="/data/x", expectations=[NOT_NULL], experiment_name="e", data_docs=False
        )
