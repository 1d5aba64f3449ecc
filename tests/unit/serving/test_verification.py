"""Smoke tests, the infra-validation exercise and percentiles, against a user target served in memory."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import DatasetError, NotRetryableError
from airflow_mlops.serving.verification import (
    RequestFailedError,
    SmokeTest,
    exercise,
    latency_summary,
    percentile,
    sample_records,
    smoke_test,
)
from tests.support.deploy import EchoTarget, holdout_frame, write_holdout_snapshot

ROWS = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]


@pytest.fixture
def echo():
    target = EchoTarget()
    yield target
    EchoTarget.served.clear()
    EchoTarget.broken.clear()


def test_percentiles_are_nearest_rank():
    values = [10.0, 1.0, 5.0, 3.0]

    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == 10.0
    assert percentile([7.0], 95) == 7.0
    assert latency_summary(values) == {"p50": 3.0, "p95": 10.0, "max": 10.0}


def test_a_serving_version_passes_the_smoke_test_and_a_broken_one_says_why(echo):
    good = echo.deploy("m", "2", "models:/m/2")

    assert smoke_test(echo, good, ROWS) == (None, "serving 2")

    EchoTarget.broken.add("2")
    failure, _ = smoke_test(echo, good, ROWS)
    assert failure == "smoke test failed: version 2 raised: ValueError"

    echo.stop("m")
    failure, _ = smoke_test(echo, good, ROWS)
    assert failure == "health check failed: serving nothing"


def test_the_exercise_counts_requests_and_names_the_one_that_failed(echo):
    deployment = echo.deploy("m", "3", "models:/m/3")
    latencies: list[float] = []

    assert exercise(echo, deployment, ROWS, latencies=latencies) == 4
    assert len(latencies) == 3

    EchoTarget.broken.add("3")
    with pytest.raises(RequestFailedError, match="request 1 of 4 failed: version 3 raised") as err:
        exercise(echo, deployment, ROWS)
    assert (err.value.requests, err.value.status_code) == (1, 500)


def test_smoke_test_settings_round_trip_and_read_their_rows(tmp_path):
    holdout = write_holdout_snapshot(tmp_path, rows=4)
    settings = SmokeTest(sample_data=holdout, drop_columns=["label"], rows=2)

    assert SmokeTest.from_dict(settings.to_dict()) == settings
    assert settings.to_dict() == {
        "sample_data": holdout,
        "drop_columns": ["label"],
        "rows": 2,
        "columns": None,
    }
    records = settings.records()
    assert len(records) == 2
    assert "label" not in records[0]
    assert SmokeTest().records() == []


def test_unreadable_sample_data_is_a_dataset_error(tmp_path):
    holdout = write_holdout_snapshot(tmp_path)

    with pytest.raises(DatasetError, match=r"no column\(s\) \['churned'\]") as err:
        sample_records(holdout, ["churned"], 3)
    assert err.value.dataset == holdout
    with pytest.raises(DatasetError, match="Cannot read the sample requests"):
        sample_records(str(tmp_path / "missing#holdout"), None, 3)


def test_the_rows_sent_have_exactly_the_models_columns_in_its_order(tmp_path):
    holdout = write_holdout_snapshot(tmp_path, rows=4)
    settings = SmokeTest(sample_data=holdout, drop_columns=["label"], rows=2, columns=["monthly_spend"])

    assert SmokeTest.from_dict(settings.to_dict()) == settings
    assert settings.records() == [{"monthly_spend": 20.0}, {"monthly_spend": 23.5}]
    both = sample_records(holdout, None, 1, columns=["monthly_spend", "tenure_months"])
    assert list(both[0]) == ["monthly_spend", "tenure_months"]


def test_a_sample_without_a_column_the_model_takes_names_it(tmp_path):
    holdout = write_holdout_snapshot(tmp_path)

    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['region'\] that the model takes") as err:
        sample_records(holdout, ["label"], 3, columns=["tenure_months", "region"])
    assert "signature inputs: ['tenure_months', 'region']" in str(err.value)
    assert isinstance(err.value, NotRetryableError)


def test_the_columns_come_from_the_models_signature(tmp_path):
    import mlflow
    from sklearn.linear_model import LinearRegression

    from airflow_mlops.trainer.models import log_model

    frame = write_holdout_snapshot(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("columns")  # not an experiment another test left active in another store
    data = holdout_frame(8)
    model = LinearRegression().fit(data[["monthly_spend"]], data["tenure_months"])
    with mlflow.start_run():
        info = log_model(model, data[["monthly_spend"]])

    settings = SmokeTest(sample_data=frame, drop_columns=["label"], rows=3).for_model(info.model_uri)
    assert settings.columns == ["monthly_spend"]
    assert [set(row) for row in settings.records()] == [{"monthly_spend"}] * 3
