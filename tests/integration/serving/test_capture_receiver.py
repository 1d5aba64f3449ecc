"""
The KServe capture receiver as a real process on loopback: it takes writes only with the shared token (a bearer
header, or the per-model-version key the KServe target writes into the logger URL), only for model names the
registry allows and the models it is configured for, only under its root, only the signature's columns, and it
stores refused and synthetic traffic apart from production traffic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_mlops.serving.capture import count_captures, read_captures
from airflow_mlops.serving.capture_receiver import logger_key
from tests.conftest import free_port, stop_process
from tests.support.capture_receiver import capture_receiver

pytestmark = pytest.mark.integration

TOKEN = "receiver-test-token-0123456789"
SIGNATURE = {"churn": {"tenure_months": "long", "monthly_spend": "double"}}
WINDOW = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    base = tmp_path_factory.mktemp("receiver")
    with capture_receiver(base, TOKEN, SIGNATURE) as started:
        yield type("Receiver", (), {"url": started.url, "root": started.root, "base": base, "proc": started.proc})


def post(receiver, query: str, event_id: str, kind: str, body, headers=None, data=None):
    return requests.post(
        f"{receiver.url}/?{query}", data=data if data is not None else json.dumps(body), timeout=10,
        headers={"ce-id": event_id, "ce-type": f"org.kubeflow.serving.inference.{kind}",
                 "Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip


def keyed(model: str, version: str) -> str:
    return f"model={model}&version={version}&key={logger_key(TOKEN, model, version)}"


def pair(receiver, query, event_id, row, answer, headers=None):
    assert post(receiver, query, event_id, "request", {"dataframe_records": [row]}, headers).status_code == 202
    assert post(receiver, query, event_id, "response", answer, headers).status_code == 202


def test_writes_without_the_token_are_refused(receiver):
    body = {"dataframe_records": [{"tenure_months": 1}]}

    missing = post(receiver, "model=churn&version=5", "forged-1", "request", body)
    wrong = post(receiver, "model=churn&version=5", "forged-2", "request", body,
                 {"Authorization": "Bearer not-the-token"})  # fmt: skip
    # A key is good for the one model version it was made for.
    other_version = post(receiver, f"model=churn&version=5&key={logger_key(TOKEN, 'churn', '4')}", "f3",
                         "request", body)  # fmt: skip

    assert [r.status_code for r in (missing, wrong, other_version)] == [401, 401, 401]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in missing.text


def test_a_model_name_that_walks_out_of_the_root_is_refused_and_nothing_is_written_outside(receiver):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    names = ["../../outside/evil", "..%2F..%2Foutside%2Fevil", "churn/../../x", "a b"]

    answers = [post(receiver, f"model={name}&version=1", "evil", "request", {}, auth) for name in names]

    assert [a.status_code for a in answers] == [400, 400, 400, 400]
    outside = [p for p in receiver.base.rglob("*") if "evil" in p.name or p.name == "outside"]
    assert outside == []


def test_only_the_configured_models_and_bodies_up_to_the_limit_are_taken(receiver):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    not_mine = post(receiver, keyed("sec_model", "5"), "x", "request", {"dataframe_records": []})
    too_big = post(receiver, "model=churn&version=5", "big", "request", None, auth, data=b"x" * 70000)
    bad_version = post(receiver, "model=churn&version=five", "v", "request", {}, auth)

    assert not_mine.status_code == 403
    assert too_big.status_code == 413
    assert bad_version.status_code == 400


def test_pairs_land_with_the_signature_columns_and_synthetic_or_refused_traffic_apart(receiver):
    query = keyed("churn", "5")
    for index in range(3):
        row = {"tenure_months": index, "monthly_spend": 50.0, "email": f"c{index}@example.com"}
        pair(receiver, query, f"ok-{index}", row, {"predictions": [1]})
    # The model refused it (KServe logs the error answer): rejected, never production.
    pair(receiver, query, "refused", {"tenure_months": "ten", "ssn": "123-45-6789"}, {"error": "bad input"})
    # A smoke test's request, its header forwarded by the logger (metadataHeaders -> ce-metadata).
    metadata = {"ce-metadata": json.dumps({"X-Mlops-Traffic": ["smoke"]})}
    pair(receiver, query, "smoke", {"tenure_months": 1, "monthly_spend": 1.0}, {"predictions": [0]}, metadata)
    # A bearer-token client (a replay job) marking its traffic itself.
    replay = {"Authorization": f"Bearer {TOKEN}", "X-MLOps-Traffic": "replay"}
    pair(receiver, "model=churn&version=5", "replay", {"tenure_months": 2, "monthly_spend": 2.0},
         {"predictions": [0]}, replay)  # fmt: skip
    stop_process(receiver.proc)  # SIGTERM writes what is pending

    root = str(receiver.root)
    captured = read_captures(root, "churn", *WINDOW, types=SIGNATURE["churn"])
    assert sorted(captured["tenure_months"]) == [0, 1, 2]
    assert [c for c in captured.columns if not c.startswith("_")] == ["tenure_months", "monthly_spend"]
    assert count_captures(root, "churn", *WINDOW) == 3
    assert count_captures(root, "churn", *WINDOW, traffic="rejected") == 1
    assert count_captures(root, "churn", *WINDOW, traffic="smoke") == 1
    assert count_captures(root, "churn", *WINDOW, traffic="replay") == 1
    stored = b"".join(p.read_bytes() for p in receiver.root.rglob("*.parquet"))
    assert b"example.com" not in stored
    assert b"123-45-6789" not in stored
    assert "listening on 127.0.0.1:" in receiver.proc.stderr.read()  # loopback unless told otherwise


def test_it_does_not_start_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_CAPTURE_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "airflow_mlops.serving.capture_receiver", "--port", str(free_port()), "--root",
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip

    assert done.returncode == 2
    assert "MLOPS_CAPTURE_TOKEN" in done.stderr
