"""
A shadow on the real local target: the champion serves behind the endpoint proxy with capture on, a candidate
gets a copy of the production requests, its answers reach no user and are captured as shadow traffic, and
the two are compared as a replay compares. Real MLflow server, real model servers, real Parquet captures.
The champion answers 1 below 12 months of tenure, the shadow below 6: they differ on the east's requests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_mlops import tags as T
from airflow_mlops.exceptions import DeploymentRejectedError
from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID, read_captures, traffic_kind
from airflow_mlops.serving.local import LocalServerTarget, process_alive
from airflow_mlops.serving.proxy import REQUEST_ID_HEADER, VERSION_HEADER
from airflow_mlops.serving.replay import SHADOW, ReplayLimits, compare_shadow
from tests.conftest import free_port
from tests.support.deploy import stop_local_processes
from tests.support.replay import CAPTURED, register_threshold_model, request_rows, wait_for_captures

pytestmark = pytest.mark.integration

MODEL = "shadow_churn"
REQUESTS = 24  # 6 of them (tenure 6-11 months) from the east


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    from mlflow import MlflowClient

    store = str(tmp_path_factory.mktemp("captures"))
    target = LocalServerTarget(
        port=free_port(), state_dir=str(tmp_path_factory.mktemp("serving")),
        capture={"uri": store, "flush_seconds": 0.5, "signature": CAPTURED},
    )  # fmt: skip
    champion = register_threshold_model(mlflow_server.uri, MODEL, 12)
    candidate = register_threshold_model(mlflow_server.uri, MODEL, 6)
    MlflowClient(mlflow_server.uri).set_registered_model_alias(MODEL, T.CHAMPION, champion)
    target.deploy(MODEL, champion, f"models:/{MODEL}/{champion}")
    yield {"target": target, "store": store, "champion": champion, "candidate": candidate}
    target.stop(MODEL)
    stop_local_processes()


def test_a_shadow_gets_the_production_requests_its_answers_reach_no_user_and_are_compared(served):
    target, store = served["target"], served["store"]
    started = datetime.now(UTC) - timedelta(minutes=1)
    shadow = target.start_shadow(MODEL, served["candidate"], f"models:/{MODEL}/{served['candidate']}", 100)

    for index in range(REQUESTS):
        response = requests.post(
            f"{target.endpoint}/invocations", json={"dataframe_records": request_rows(index)},
            headers={REQUEST_ID_HEADER: f"user-{index}"}, timeout=30,
        )  # fmt: skip
        # What users get is the champion's answer, from the champion.
        assert response.json()["predictions"] == [int(index % 24 < 12)]
        assert response.headers[VERSION_HEADER] == served["champion"]
    wait_for_captures(store, MODEL, REQUESTS)
    deadline = time.monotonic() + 60
    window = (started, datetime.now(UTC) + timedelta(minutes=5))
    kind = traffic_kind(SHADOW, 200)
    while len(read_captures(store, MODEL, *window, traffic=kind, version=served["candidate"])) < REQUESTS:
        assert time.monotonic() < deadline, "the shadow's answers were not captured"
        time.sleep(0.2)

    mirrored_answers = read_captures(store, MODEL, *window, traffic=kind, version=served["candidate"])
    assert set(mirrored_answers[REQUEST_ID]) == {f"user-{i}" for i in range(REQUESTS)}
    production = read_captures(store, MODEL, *window)
    assert set(production[PREDICTION]) == {0.0, 1.0}
    assert len(production) == REQUESTS  # the copies are not production traffic

    result = compare_shadow(store, MODEL, served["candidate"], *window, segment_column="region",
                            limits=ReplayLimits(max_disagreement=0.1))  # fmt: skip

    assert result["served_versions"] == [served["champion"]]
    assert result["compared"] == {"requests": REQUESTS, "rows": REQUESTS}
    assert result["comparison"]["overall"]["disagreement"] == 0.25
    segments = {s["segment"]: s["disagreement"] for s in result["comparison"]["segments"]["values"]}
    assert segments == {"east": 1.0, "north": 0.0, "south": 0.0}
    assert result["outcome"] == "failed"
    assert result["failures"] == ["disagreement 25% > max_disagreement 10%"]
    assert "| east | 6 | 100% |" in result["markdown"]

    stopped = target.stop_shadow(MODEL)
    assert stopped["port"] == shadow["port"]
    assert not process_alive(stopped)
    assert "shadow" not in target.read_state(MODEL)
    assert requests.post(
        f"{target.endpoint}/invocations", json={"dataframe_records": request_rows(0)}, timeout=30
    ).json()["predictions"] == [1]  # the endpoint serves on without its shadow


def test_a_shadow_without_anything_served_is_refused(tmp_path):
    target = LocalServerTarget(port=free_port(), state_dir=str(tmp_path))

    with pytest.raises(DeploymentRejectedError, match="no traffic to mirror"):
        target.start_shadow(MODEL, "2", f"models:/{MODEL}/2", 10)
    with pytest.raises(ValueError, match="percent must be a number above 0 and at most 100"):
        target.start_shadow(MODEL, "2", f"models:/{MODEL}/2", 0)
