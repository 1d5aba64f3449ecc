"""
Capture on the real local target: ``mlflow models serve`` behind the endpoint proxy, a real MLflow server,
captures in real Parquet files, and a store outage in the middle.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID, VERSION, count_captures, read_captures
from airflow_mlops.serving.local import LocalServerTarget
from airflow_mlops.serving.proxy import REQUEST_ID_HEADER
from airflow_mlops.serving.verification import smoke_test
from tests.conftest import free_port
from tests.support.deploy import register_version, stop_local_processes

pytestmark = pytest.mark.integration

MODEL = "capture_churn"


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    store = tmp_path_factory.mktemp("captures")
    target = LocalServerTarget(
        port=free_port(),
        state_dir=str(tmp_path_factory.mktemp("serving")),
        capture={"uri": str(store), "flush_seconds": 0.5, "redact": ["customer_email"]},
    )
    version = register_version(mlflow_server.uri, MODEL, "zeros")
    target.deploy(MODEL, version, f"models:/{MODEL}/{version}")
    yield target, store, version
    target.stop(MODEL)
    stop_local_processes()


def predict(target, rid: str, rows: list[dict]) -> requests.Response:
    response = requests.post(
        f"{target.endpoint}/invocations",
        json={"dataframe_records": rows},
        headers={REQUEST_ID_HEADER: rid},
        timeout=30,
    )
    response.raise_for_status()
    return response


def rows(index: int) -> list[dict]:
    return [
        {"tenure_months": float(index), "monthly_spend": 20.0 + index, "customer_email": f"u{index}@x.org"}
    ]


def captured(store, rids: set[str], timeout: float = 60.0):
    """The captured rows of the requests *rids*, once all of them are written."""
    window = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    deadline = time.monotonic() + timeout
    while True:
        frame = read_captures(str(store), MODEL, *window)
        mine = frame[frame[REQUEST_ID].isin(rids)]
        if set(mine[REQUEST_ID]) == rids or time.monotonic() > deadline:
            return mine
        time.sleep(0.25)


def test_every_prediction_is_captured_with_its_version_and_request_id(served):
    target, store, version = served
    for index in range(10):
        response = predict(target, f"first-{index}", rows(index))
        assert response.json()["predictions"] == [0]
        assert response.headers[REQUEST_ID_HEADER] == f"first-{index}"

    frame = captured(store, {f"first-{i}" for i in range(10)})
    assert len(frame) == 10
    assert set(frame[VERSION]) == {version}
    assert set(frame[PREDICTION]) == {0.0}
    assert sorted(frame["tenure_months"]) == [float(i) for i in range(10)]
    assert set(frame["customer_email"]) == {
        hashlib.sha256(f"u{i}@x.org".encode()).hexdigest() for i in range(10)
    }
    files = list((store / "captures" / f"model={MODEL}").glob("hour=*/part-*.parquet"))
    assert files, "no capture file in the model/hour layout"


def test_a_store_outage_neither_fails_predictions_nor_loses_captures(served):
    target, store, _ = served
    folder = store / "captures"
    aside = store / "captures-aside"
    folder.rename(aside)
    folder.write_text("the store is down")  # nothing can be written under captures/ now
    try:
        for index in range(10):
            assert predict(target, f"outage-{index}", rows(index)).json()["predictions"] == [0]
        deadline = time.monotonic() + 30
        while (target.capture_stats(MODEL) or {}).get("write_errors", 0) == 0:
            assert time.monotonic() < deadline, target.capture_stats(MODEL)
            time.sleep(0.25)
        stats = target.capture_stats(MODEL)
        assert stats["pending_rows"] >= 1
    finally:
        folder.unlink()
        shutil.move(str(aside), str(folder))

    frame = captured(store, {f"outage-{i}" for i in range(10)})
    assert len(frame) == 10
    assert target.capture_stats(MODEL)["pending_rows"] == 0


def test_the_deploy_smoke_test_is_stored_apart_from_production_traffic(served):
    target, store, _ = served
    window = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    predict(target, "before-smoke", rows(0))
    captured(store, {"before-smoke"})
    production = count_captures(str(store), MODEL, *window)

    failure, _ = smoke_test(target, target.current(MODEL), [row for i in range(5) for row in rows(i)])
    assert failure is None
    deadline = time.monotonic() + 60
    while count_captures(str(store), MODEL, *window, traffic="synthetic") < 5:
        assert time.monotonic() < deadline, target.capture_stats(MODEL)
        time.sleep(0.25)

    assert count_captures(str(store), MODEL, *window) == production
    assert len(read_captures(str(store), MODEL, *window)) == production
    assert target.capture_stats(MODEL)["rows_by_traffic"]["synthetic"] == 5


def test_capture_keeps_the_columns_of_the_served_model_s_signature(tmp_path, monkeypatch):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0] * len(model_input)

    path = tmp_path / "model"
    signature = ModelSignature(inputs=Schema([ColSpec("long", "tenure_months"), ColSpec("double", "spend")]))
    mlflow.pyfunc.save_model(str(path), python_model=Constant(), signature=signature, pip_requirements=[])
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path))

    settings = LocalServerTarget(capture=True).capture_settings(str(path))
    assert settings["signature"] == {"tenure_months": "long", "spend": "double"}
    # A signature set in the capture settings is kept as it is.
    chosen = LocalServerTarget(capture={"signature": {"spend": "double"}}).capture_settings(str(path))
    assert chosen["signature"] == {"spend": "double"}
