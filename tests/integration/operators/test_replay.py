"""
Replaying captured production traffic against a candidate, and a shadow, for real: a real MLflow server, the
champion served by the local target with capture on (the requests go through its endpoint proxy and land in
Parquet), each replayed candidate started in the local target's sandbox, and a shadow next to the champion. The
champion answers 1 below 12 months of tenure; one candidate answers alike, another below 6 months, so it answers
the east's requests (6-11 months) differently.

One champion server for the module (model servers start slowly): the replays first, then the shadow.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ConfigurationError, DeploymentRejectedError, ModelGateFailedError
from airflow_mlops.operators.replay import ReplayTrafficOperator
from airflow_mlops.serving import local
from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID, read_captures, traffic_kind
from airflow_mlops.serving.local import LocalServerTarget, process_alive
from airflow_mlops.serving.proxy import REQUEST_ID_HEADER, TRAFFIC_HEADER, VERSION_HEADER
from airflow_mlops.serving.replay import SHADOW, ReplayLimits, compare_shadow
from tests.conftest import free_port
from tests.support.context import context_for
from tests.support.deploy import stop_local_processes
from tests.support.replay import CAPTURED, register_threshold_model, request_rows, wait_for_captures

pytestmark = pytest.mark.integration

MODEL = "replay_churn"
REQUESTS = 40  # 12 of them (tenure 6-11 months) from the east


@pytest.fixture(scope="module")
def traffic(mlflow_server, client, tmp_path_factory):
    """The champion (v1) served with capture on, and the production requests it answered; v2 and v3 candidates."""
    store = str(tmp_path_factory.mktemp("captures"))
    config = {
        "kind": "local", "port": free_port(), "state_dir": str(tmp_path_factory.mktemp("serving")),
        "capture": {"uri": store, "flush_seconds": 0.5, "signature": CAPTURED},
    }  # fmt: skip
    versions = {
        "champion": register_threshold_model(mlflow_server.uri, MODEL, 12),
        "same": register_threshold_model(mlflow_server.uri, MODEL, 12),
        "shifted": register_threshold_model(mlflow_server.uri, MODEL, 6),
    }
    client.set_registered_model_alias(MODEL, T.CHAMPION, versions["champion"])
    target = LocalServerTarget.from_config(config)
    started = datetime.now(UTC)
    target.deploy(MODEL, versions["champion"], f"models:/{MODEL}/{versions['champion']}")
    try:
        for index in range(REQUESTS):
            response = requests.post(
                f"{target.endpoint}/invocations", json={"dataframe_records": request_rows(index)}, timeout=30
            )
            assert response.json()["predictions"] == [int(index % 24 < 12)]
        # The package's own requests are not production traffic: never replayed.
        for index in range(5):
            requests.post(
                f"{target.endpoint}/invocations", json={"dataframe_records": request_rows(index)},
                headers={TRAFFIC_HEADER: "smoke"}, timeout=30,
            ).raise_for_status()  # fmt: skip
        wait_for_captures(store, MODEL, REQUESTS)
        # The replays read this window only: what the shadow test sends later is not in it.
        window = {
            "since": (started - timedelta(minutes=1)).isoformat(),
            "until": datetime.now(UTC).isoformat(),
        }
        yield {"config": config, "target": target, "store": store, "versions": versions, "window": window}
    finally:
        target.stop(MODEL)
        stop_local_processes()


def replay(traffic, candidate: str, run_id: str | None = None, recorded: dict | None = None, **kwargs):
    config = {key: value for key, value in traffic["config"].items() if key != "capture"}
    op = ReplayTrafficOperator(
        task_id="replay", model_name=MODEL, version=traffic["versions"][candidate], target=config,
        capture_uri=traffic["store"], **{**traffic["window"], **kwargs},
    )  # fmt: skip
    context = context_for(op, run_id=run_id or f"manual__{uuid.uuid4().hex[:8]}")
    if recorded is not None:
        recorded["xcom"] = context["ti"].xcoms
    return op.execute(context)


def test_a_candidate_that_answers_like_the_champion_passes_with_every_request_replayed(traffic):
    result = replay(traffic, "same", segment_column="region", max_disagreement=0.05)

    assert result["outcome"] == "passed"
    assert result["champion_version"] == traffic["versions"]["champion"]
    # The smoke tests are left out.
    assert result["captured"] == {"requests": REQUESTS, "rows": REQUESTS, "bad_rows": 0}
    assert result["sample"]["requests"] == REQUESTS
    overall = result["comparison"]["overall"]
    assert (overall["disagreement"], overall["rows"], overall["changes"]) == (0.0, REQUESTS, [])
    segments = {s["segment"]: s for s in result["comparison"]["segments"]["values"]}
    assert set(segments) == {"east", "north", "south"}
    assert segments["east"]["sampled_rows"] == 12
    assert result["errors"]["requests"] == 0
    assert result["latency_ms"]["candidate"]["p95"] > 0
    # The champion's latency, as the proxy measured it when it answered those requests.
    champion = result["latency_ms"]["champion"]
    assert 0 < champion["p50"] <= champion["p95"] <= champion["max"]
    row = f"| champion latency p50 / p95 | {champion['p50']:g} / {champion['p95']:g} ms (as captured) |"
    assert row in result["markdown"]
    assert "| disagreement | 0% (0 of 40 rows) | <= 5% |" in result["markdown"]
    assert "**Passed**" in result["markdown"]


def test_a_shifted_candidate_fails_the_gate_naming_the_figure_and_is_flagged_per_segment(traffic):
    recorded: dict = {}

    with pytest.raises(ModelGateFailedError) as err:
        replay(
            traffic, "shifted", run_id="scheduled__2026-12-05", recorded=recorded, segment_column="region",
            sample_size=25, max_disagreement=0.1,
        )  # fmt: skip

    result = recorded["xcom"]["return_value"]  # the figures stay readable when the task fails
    overall = result["comparison"]["overall"]
    assert result["outcome"] == "failed"
    assert result["sample"]["requests"] == 25
    assert overall["changes"] == [{"champion": "1", "candidate": "0", "rows": overall["disagreeing_rows"]}]
    segments = {s["segment"]: s["disagreement"] for s in result["comparison"]["segments"]["values"]}
    assert segments == {"east": 1.0, "north": 0.0, "south": 0.0}
    shown = f"{overall['disagreement'] * 100:.4g}%"
    assert f"disagreement {shown} > max_disagreement 10%" in str(err.value)
    assert err.value.version == traffic["versions"]["shifted"]
    assert not err.value.retryable
    assert "| east | " in result["markdown"]
    assert result["markdown"].endswith(f"**Failed**: disagreement {shown} > max_disagreement 10%.")


def test_a_window_without_captured_requests_replays_nothing_and_says_so(traffic):
    children = dict(local._CHILDREN)
    until = datetime.now(UTC) - timedelta(days=2)

    result = replay(traffic, "shifted", since=(until - timedelta(hours=1)).isoformat(), until=until.isoformat(),
                    max_disagreement=0.0)  # fmt: skip

    assert result["outcome"] == "nothing_to_replay"
    assert "no production request answered by v1 was captured between" in result["reason"]
    assert result["markdown"].splitlines()[-1].startswith("Nothing to replay: no production request")
    assert str(traffic["store"]) not in result["markdown"]  # the reviewer's page shows no folder of the worker
    assert local._CHILDREN == children  # no sandbox was started


def test_a_segment_column_that_is_not_captured_is_refused_before_a_sandbox_starts(traffic):
    children = dict(local._CHILDREN)

    with pytest.raises(ConfigurationError, match="segment_column 'country' is not captured"):
        replay(traffic, "same", segment_column="country")

    assert local._CHILDREN == children


# -- shadow: the candidate gets a copy of live requests, users get the champion's answers ------------------


def test_a_shadow_gets_production_requests_its_answers_reach_no_user_and_are_compared(traffic):
    target, store, versions = traffic["target"], traffic["store"], traffic["versions"]
    started = datetime.now(UTC)
    shadow = target.start_shadow(MODEL, versions["shifted"], f"models:/{MODEL}/{versions['shifted']}", 100)
    sent = {f"user-{index}" for index in range(24)}  # 6 of them from the east

    for index in range(24):
        response = requests.post(
            f"{target.endpoint}/invocations", json={"dataframe_records": request_rows(index)},
            headers={REQUEST_ID_HEADER: f"user-{index}"}, timeout=30,
        )  # fmt: skip
        # What users get is the champion's answer, from the champion.
        assert response.json()["predictions"] == [int(index % 24 < 12)]
        assert response.headers[VERSION_HEADER] == versions["champion"]
    # From when the shadow started: the fixture's own production traffic, sent just before, is not this test's.
    window = (started, datetime.now(UTC) + timedelta(minutes=5))
    deadline = time.monotonic() + 60
    kind = traffic_kind(SHADOW, 200)
    while (
        set(read_captures(store, MODEL, *window, traffic=kind, version=versions["shifted"])[REQUEST_ID])
        != sent
    ):
        assert time.monotonic() < deadline, "the shadow's answers were not captured"
        time.sleep(0.2)
    production = read_captures(store, MODEL, *window)
    assert set(production[REQUEST_ID]) == sent  # the copies are not production traffic
    assert set(production[PREDICTION]) == {0.0, 1.0}

    result = compare_shadow(
        store,
        MODEL,
        versions["shifted"],
        *window,
        segment_column="region",
        limits=ReplayLimits(max_disagreement=0.1),
    )

    assert result["served_versions"] == [versions["champion"]]
    assert result["compared"] == {"requests": 24, "rows": 24}
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
    answer = requests.post(
        f"{target.endpoint}/invocations", json={"dataframe_records": request_rows(0)}, timeout=30
    )
    assert answer.json()["predictions"] == [1]  # the endpoint serves on without its shadow


def test_a_shadow_where_nothing_serves_is_refused(tmp_path):
    target = LocalServerTarget(port=free_port(), state_dir=str(tmp_path))

    with pytest.raises(DeploymentRejectedError, match="no traffic to mirror"):
        target.start_shadow(MODEL, "2", f"models:/{MODEL}/2", 10)
    with pytest.raises(ValueError, match="percent must be a number above 0 and at most 100"):
        target.start_shadow(MODEL, "2", f"models:/{MODEL}/2", 0)
