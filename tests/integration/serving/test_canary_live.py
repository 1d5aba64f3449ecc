"""
The canary on the real local target, judged on live traffic: ``mlflow models serve`` processes behind the
endpoint proxy with capture on, a real MLflow server, users' requests from a traffic generator, and the deploy
run as Airflow runs a deferred task (``execute`` in a worker, the bake in a triggerer, the resumption on a
fresh operator).

A candidate that fails 5% of real requests, though it answers the smoke test and the probes, is rolled back by
its bake; a good one is promoted to all the traffic. A deploy whose process is killed (SIGKILL) in the middle of
the bake is finished by its retry: the same canary and bake window, one release, recorded once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from airflow_mlops import tags as T
from airflow_mlops.lineage.deployments import read_history
from airflow_mlops.operators.deployment import DeployModelOperator
from airflow_mlops.serving.local import LocalServerTarget
from tests.conftest import free_port
from tests.support.context import context_for
from tests.support.deferred import Timing, run_deferred
from tests.support.deploy import approve_version, http_predict, register_version, stop_local_processes
from tests.support.traffic import Users

pytestmark = pytest.mark.integration

MODEL = "canary_churn"
#: A short bake for the tests: half the traffic to the canary, judged every second on at least 30 requests.
CANARY = {"percent": 50, "bake_seconds": 6, "interval": 1, "min_requests": 30, "max_extensions": 1}


@pytest.fixture(scope="module")
def versions(mlflow_server, client) -> dict[str, str]:
    registered = {
        kind: register_version(mlflow_server.uri, MODEL, kind.split("-")[0])
        for kind in ("zeros", "fails_sometimes", "zeros-2", "zeros-3")
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


def make_deploy(target_config, version, holdout):
    def make():
        return DeployModelOperator(
            task_id="deploy", model_name=MODEL, version=version, target=target_config, sample_data=holdout,
            drop_columns=["label"], canary=CANARY,
        )  # fmt: skip

    return make


def deploy(target_config, version, holdout, run_id=None):
    make = make_deploy(target_config, version, holdout)
    timing = Timing()
    context = context_for(make(), user="releaser", run_id=run_id or f"manual__{uuid.uuid4().hex[:8]}")
    return run_deferred(make, context, timing), timing


def test_a_canary_failing_real_requests_is_rolled_back_and_a_good_one_is_promoted(
    target_config, versions, holdout, client
):
    champion, bad, good = versions["zeros"], versions["fails_sometimes"], versions["zeros-2"]
    endpoint = deploy(target_config, champion, holdout)[0]["endpoint"]  # nothing served: no canary

    with Users(endpoint) as users, pytest.raises(Exception, match="canary bake fail") as failed:
        deploy(target_config, bad, holdout)

    assert failed.value.version == bad
    assert users.answers[bad].count(200) > 0  # users were answered by the canary (its smoke test passed)
    assert 500 in users.answers[bad] or 400 in users.answers[bad]  # and some saw it fail
    assert set(users.answers[champion]) == {200}
    assert "the canary failed" in str(failed.value)
    assert http_predict(endpoint, [{"tenure_months": 19.0, "monthly_spend": 20.0}]) == ([0], champion)
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == champion
    history = read_history(client, MODEL)
    failed_entry = next(e for e in reversed(history) if e["version"] == bad)
    assert (failed_entry["action"], failed_entry["outcome"]) == ("deploy", "failed")
    assert failed_entry["bake"]["judged"] == "live"
    assert failed_entry["bake"]["verdict"] == "fail"
    assert failed_entry["bake"]["canary"]["errors"] > 0
    assert failed_entry["bake"]["baseline"]["errors"] == 0
    assert (history[-1]["action"], history[-1]["version"], history[-1]["outcome"]) == (
        "auto_rollback", champion, "succeeded",
    )  # fmt: skip
    state = LocalServerTarget.from_config(target_config).read_state(MODEL)
    assert "canary" not in state  # its server is stopped

    with Users(endpoint) as users:
        result, timing = deploy(target_config, good, holdout)

    assert (result["version"], result["outcome"], result["previous_version"]) == (good, "succeeded", champion)
    assert result["bake"]["verdict"] == "pass"
    assert result["bake"]["judged"] == "live"
    assert result["bake"]["canary"]["requests"] >= 30
    assert result["bake"]["baseline"]["requests"] >= 30
    assert result["bake"]["latency"]["test"] == "mann-whitney-u"
    assert len(result["bake"]["measurements"]) >= 3  # one a second
    assert set(users.answers[good]) == {200}
    assert http_predict(endpoint, [{"tenure_months": 19.0, "monthly_spend": 20.0}]) == ([0], good)
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == good
    assert timing.deferrals == 1  # the bake waited in the trigger, not in a worker


#: The deploy's first try in a process of its own, armed to die at a kill point (tests/kill/faults.py).
KILLED_TRY = """
import json, sys

from airflow_mlops.operators.deployment import DeployModelOperator
from tests.kill.faults import arm
from tests.support.context import context_for
from tests.support.deferred import run_deferred

given = json.loads(sys.argv[1])


def make():
    return DeployModelOperator(task_id="deploy", model_name=given["model"], version=given["version"],
                               target=given["target"], sample_data=given["holdout"], drop_columns=["label"],
                               canary=given["canary"])


context = context_for(make(), user="releaser", run_id=given["run_id"])
arm(context)
run_deferred(make, context)
print("returned")
"""


def test_a_deploy_killed_during_its_bake_is_finished_by_its_retry_once(
    target_config, versions, holdout, client, tmp_path
):
    from tests.kill.faults import PLAN_ENV, add_to_plan, fired_marker

    baseline, candidate = versions["zeros-2"], versions["zeros-3"]
    target = LocalServerTarget.from_config(target_config)
    if (target.current(MODEL) or None) is None or target.current(MODEL).version != baseline:
        deploy(target_config, baseline, holdout)
    endpoint = target.endpoint
    entries = len(read_history(client, MODEL))
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    plan = tmp_path / "plan.json"
    add_to_plan(plan, "mlops_tests", run_id, {"deploy": "canary.measured"})
    given = {
        "model": MODEL, "version": candidate, "target": target_config, "holdout": holdout, "run_id": run_id,
        "canary": CANARY,
    }  # fmt: skip
    repo = Path(__file__).resolve().parents[3]
    with Users(endpoint) as users:
        first = subprocess.run(
            [sys.executable, "-c", KILLED_TRY, json.dumps(given)],
            env={**os.environ, PLAN_ENV: str(plan), "PYTHONPATH": str(repo)},
            cwd=repo, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert first.returncode == -9, first.stdout[-2000:] + first.stderr[-4000:]  # SIGKILL, in the bake
        assert "returned" not in first.stdout
        canary = target.read_state(MODEL)["canary"]  # the canary still takes its share of the traffic
        recorded = json.loads(client.get_model_version(MODEL, candidate).tags[T.RELEASE])
        assert recorded["step"] == "bake"
        window = recorded["plan"]["bake_window"]

        make = make_deploy(target_config, candidate, holdout)
        retried = run_deferred(make, context_for(make(), user="releaser", run_id=run_id, try_number=2))

    assert (retried["version"], retried["outcome"], retried["previous_version"]) == (
        candidate, "succeeded", baseline,
    )  # fmt: skip
    assert (retried["bake"]["start"], retried["bake"]["deadline"]) == (window["start"], window["deadline"])
    assert (
        target.read_state(MODEL)["server"]["pid"] == canary["pid"]
    )  # the same canary, promoted: no re-switch
    assert set(users.answers.get(candidate, [])) == {200}
    assert http_predict(endpoint, [{"tenure_months": 19.0, "monthly_spend": 20.0}]) == ([0], candidate)
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == candidate
    new = read_history(client, MODEL)[entries:]
    assert [(e["action"], e["version"], e["outcome"]) for e in new] == [("deploy", candidate, "succeeded")]
    assert (
        json.loads(fired_marker(plan, "mlops_tests", run_id, "deploy").read_text())["kill_point"]
        == "canary.measured"
    )
