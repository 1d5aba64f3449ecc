"""
The watch after release on the real local target: ``mlflow models serve`` behind the endpoint proxy with capture
on, a real MLflow server, live traffic from a generator, and the watch run as Airflow runs a deferred task
(``execute`` in a worker, the trigger in a triggerer, the resumption on a fresh operator).

A release that fails 5% of real requests, though its smoke test passed, is rolled back by the watch; a good
one passes and keeps serving; one whose live predictions drift from its predictions on the holdout is rolled
back when the watch checks prediction drift. A watch whose process is killed (SIGKILL) in the middle of its
rollback is finished by its retry: one rollback, verified, recorded once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from airflow_mlops import tags as T
from airflow_mlops.lineage.deployments import read_history
from airflow_mlops.operators.deployment import DeployModelOperator
from airflow_mlops.operators.watch import WatchReleaseOperator
from airflow_mlops.serving.local import LocalServerTarget
from tests.conftest import free_port
from tests.support.context import context_for
from tests.support.deferred import Timing, run_deferred
from tests.support.deploy import (
    approve_version,
    http_predict,
    register_version,
    stop_local_processes,
)

pytestmark = pytest.mark.integration

MODEL = "watch_churn"


@pytest.fixture(scope="module")
def versions(mlflow_server, client) -> dict[str, str]:
    registered = {
        kind: register_version(mlflow_server.uri, MODEL, kind)
        for kind in ("zeros", "fails_sometimes", "by_tenure")
    }
    for version in registered.values():
        approve_version(client, MODEL, version)
    return registered


@pytest.fixture(scope="module")
def target_config(tmp_path_factory):
    config = {
        "kind": "local",
        "port": free_port(),
        "state_dir": str(tmp_path_factory.mktemp("serving")),
        "capture": {"uri": str(tmp_path_factory.mktemp("captures")), "flush_seconds": 0.5},
    }
    yield config
    LocalServerTarget.from_config(config).stop(MODEL)
    stop_local_processes()


def deploy(target_config, version, holdout):
    op = DeployModelOperator(
        task_id="deploy", model_name=MODEL, version=version, target=target_config, sample_data=holdout,
        drop_columns=["label"],
    )  # fmt: skip
    return op.execute(context_for(op, run_id=f"manual__{uuid.uuid4().hex[:8]}"))


def live_traffic(endpoint: str, count: int) -> int:
    """*count* one-row requests, tenures 0-99 in turn, as users send them; returns how many failed."""
    failed = 0
    with requests.Session() as session:
        for index in range(count):
            row = {"tenure_months": float(index % 100), "monthly_spend": 20.0 + index % 7}
            answer = session.post(f"{endpoint}/invocations", json={"dataframe_records": [row]}, timeout=30)
            failed += answer.status_code != 200
    time.sleep(1.5)  # the proxy's capture writer flushes every 0.5 s
    return failed


def watch(target_config, holdout, **policy):
    timing = Timing()

    def make():
        return WatchReleaseOperator(
            task_id="watch", model_name=MODEL, target=target_config, sample_data=holdout, drop_columns=["label"],
            watch={"interval_seconds": 1, "min_requests": 100, "max_error_rate": 0.02, **policy},
        )  # fmt: skip

    result = run_deferred(
        make, context_for(make(), user="watcher", run_id=f"manual__{uuid.uuid4().hex[:8]}"), timing
    )
    return result, timing


def test_a_release_failing_real_requests_is_rolled_back_and_a_good_one_keeps_serving(
    target_config, versions, holdout, client
):
    good, bad = versions["zeros"], versions["fails_sometimes"]
    endpoint = deploy(target_config, good, holdout)["endpoint"]
    assert deploy(target_config, bad, holdout)["version"] == bad  # its smoke test passed

    assert live_traffic(endpoint, 200) == 10  # 5% of what users sent failed
    result, timing = watch(target_config, holdout, window_seconds=120)

    assert (result["verdict"], result["watched_version"], result["version"]) == ("fail", bad, good)
    assert result["measurements"]["requests"] == 200
    assert result["measurements"]["errors"] == 10
    assert "the model server failed 10 of 200 live requests (5.0%; at most 2.0% allowed" in result["message"]
    assert http_predict(endpoint, [{"tenure_months": 19.0, "monthly_spend": 20.0}]) == ([0], good)
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == good
    last = read_history(client, MODEL)[-1]
    assert (last["action"], last["version"], last["outcome"], last["actor"]) == (
        "rollback",
        good,
        "succeeded",
        "watcher",
    )
    assert last["reason"].startswith(
        f"release watch: version {bad}: the model server failed 10 of 200 live requests"
    )
    assert timing.deferrals == 1  # the watch waited in the trigger, not in a worker

    # The good version, released again, serves its traffic within the limits for the whole window.
    assert live_traffic(endpoint, 120) == 0
    result, timing = watch(target_config, holdout, window_seconds=6)
    assert (result["verdict"], result["version"]) == ("pass", good)
    assert result["measurements"]["requests"] >= 120
    assert result["measurements"]["errors"] == 0
    assert result["measurements"]["p95_latency_ms"] > 0  # as the endpoint's proxy measured each request
    assert http_predict(endpoint, [{"tenure_months": 19.0, "monthly_spend": 20.0}]) == ([0], good)
    assert read_history(client, MODEL)[-1]["version"] == good


def test_a_release_whose_live_predictions_drift_from_the_holdout_is_rolled_back(
    target_config, versions, holdout, client
):
    good, shifting = versions["zeros"], versions["by_tenure"]
    endpoint = deploy(target_config, shifting, holdout)[
        "endpoint"
    ]  # answers 0 on the holdout's short tenures

    assert live_traffic(endpoint, 120) == 0  # users send tenures up to 99: mostly 1
    result, _ = watch(target_config, holdout, window_seconds=120, prediction_drift=True)

    assert (result["verdict"], result["watched_version"], result["version"]) == ("fail", shifting, good)
    assert "drifted from the predictions on the holdout (" in result["message"]
    assert "linf" in result["measurements"]["prediction_drift"]["exceeded"]
    assert http_predict(endpoint, [{"tenure_months": 40.0, "monthly_spend": 20.0}]) == ([0], good)
    assert read_history(client, MODEL)[-1]["reason"].startswith(
        f"release watch: version {shifting}: the live predictions"
    )


#: The watch's first try in a process of its own, armed to die at a kill point (tests/kill/faults.py).
KILLED_TRY = """
import json, sys

from airflow_mlops.operators.watch import WatchReleaseOperator
from tests.kill.faults import arm
from tests.support.context import context_for
from tests.support.deferred import run_deferred

given = json.loads(sys.argv[1])


def make():
    return WatchReleaseOperator(task_id="watch", model_name=given["model"], target=given["target"],
                                sample_data=given["holdout"], drop_columns=["label"], watch=given["watch"])


context = context_for(make(), user="watcher", run_id=given["run_id"])
arm(context)
run_deferred(make, context)
print("returned")
"""


def test_a_watch_killed_in_the_middle_of_its_rollback_is_finished_by_its_retry_once(
    target_config, versions, holdout, client, tmp_path
):
    from tests.kill.faults import PLAN_ENV, add_to_plan, fired_marker

    good, bad = versions["zeros"], versions["fails_sometimes"]
    deploy(target_config, good, holdout)
    endpoint = deploy(target_config, bad, holdout)["endpoint"]
    assert live_traffic(endpoint, 200) == 10
    entries = len(read_history(client, MODEL))
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    plan = tmp_path / "plan.json"
    add_to_plan(plan, "mlops_tests", run_id, {"watch": "release.verify"})  # switched back; not verified yet
    given = {
        "model": MODEL, "target": target_config, "holdout": holdout, "run_id": run_id,
        "watch": {"interval_seconds": 1, "min_requests": 100, "max_error_rate": 0.02, "window_seconds": 120},
    }  # fmt: skip
    repo = Path(__file__).resolve().parents[3]
    first = subprocess.run(
        [sys.executable, "-c", KILLED_TRY, json.dumps(given)],
        env={**os.environ, PLAN_ENV: str(plan), "PYTHONPATH": str(repo)},
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert first.returncode == -9, first.stdout[-2000:] + first.stderr[-4000:]  # SIGKILL, at the kill point
    assert "returned" not in first.stdout

    def make():
        return WatchReleaseOperator(
            task_id="watch", model_name=MODEL, target=target_config, sample_data=holdout, drop_columns=["label"],
            watch=given["watch"],
        )  # fmt: skip

    retried = run_deferred(make, context_for(make(), user="watcher", run_id=run_id, try_number=2))

    assert (retried["version"], retried["previous_version"], retried["action"]) == (good, bad, "rollback")
    assert http_predict(endpoint, [{"tenure_months": 19.0, "monthly_spend": 20.0}]) == ([0], good)
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == good
    new = read_history(client, MODEL)[entries:]
    assert [(e["action"], e["version"], e["outcome"]) for e in new] == [("rollback", good, "succeeded")]
    assert new[0]["reason"].startswith(f"release watch: version {bad}: the model server failed 10 of 200")
    assert (
        json.loads(fired_marker(plan, "mlops_tests", run_id, "watch").read_text())["kill_point"]
        == "release.verify"
    )
