"""``airflow-mlops lineage`` against a real MLflow server: the chain of a version, read from its tags alone."""

from __future__ import annotations

import json
import uuid

import pytest
from mlflow import MlflowClient

from airflow_mlops import tags as T
from airflow_mlops.lineage.chain import main
from airflow_mlops.registry import write_signed_tags
from airflow_mlops.signing import DEPLOYMENT, Subject, load_keys

pytestmark = pytest.mark.integration

DEPLOYMENTS = [
    {"time": "2026-01-02T10:00:00+00:00", "action": "deploy", "version": "1", "outcome": "succeeded",
     "target": "local", "endpoint": "http://127.0.0.1:5001", "actor": "reviewer"},
    {"time": "2026-01-03T09:30:00+00:00", "action": "rollback", "version": "1", "outcome": "succeeded",
     "target": "local", "endpoint": "http://127.0.0.1:5001", "actor": "oncall", "reason": "latency regression",
     "previous_version": "2"},
]  # fmt: skip
# The model's history: v1 served, v2 replaced it, a rollback made v1 serve again.
MODEL_HISTORY = [
    DEPLOYMENTS[0],
    {"time": "2026-01-03T08:00:00+00:00", "action": "deploy", "version": "2", "outcome": "succeeded",
     "target": "local", "endpoint": "http://127.0.0.1:5001", "actor": "reviewer", "previous_version": "1"},
    DEPLOYMENTS[1],
]  # fmt: skip


@pytest.fixture(scope="module")
def model(mlflow_server) -> str:
    """
    Version 1 of a model with the tags every stage of the CT DAG writes (signed where the package signs), and
    the champion alias; version 2 replaced it for a while.
    """
    client = MlflowClient(mlflow_server.uri)
    name = f"lineage-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(f"lineage-{uuid.uuid4().hex[:8]}"))
    client.log_metric(run.info.run_id, "val_accuracy", 0.91)
    client.set_terminated(run.info.run_id)
    for _ in (1, 2):
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    keys = load_keys()
    subjects = {v: Subject.of(client.get_model_version(name, v)) for v in ("1", "2")}

    def signed(entries):
        return [keys.signed(DEPLOYMENT, subjects[entry["version"]], entry) for entry in entries]

    write_signed_tags(
        client, name, "1", T.GATE_SIGNATURE,
        {"decision": "passed", "reason": "all 1 gated metric(s) met their thresholds"}, keys,
    )  # fmt: skip
    write_signed_tags(
        client, name, "1", T.APPROVAL_SIGNATURE,
        {"decision": "approved", "approver": "reviewer", "time": "2026-01-02T09:00:00+00:00", "comment": "ship it"},
        keys,
    )  # fmt: skip
    infra = {
        "target": "local",
        "passed": True,
        "requests": 11,
        "latency_ms": {"p50": 3.1, "p95": 7.5, "max": 9.0},
    }
    for key, value in {
        T.DATA_URI: "s3://lake/datasets/churn/abc123", T.DATA_SHA256: "abc123",
        T.VALIDATION_SUCCESS: "true", T.MLFLOW_RUN_ID: run.info.run_id,
        T.AIRFLOW_DAG_ID: "mlops_continuous_training", T.AIRFLOW_RUN_ID: "manual__1", T.AIRFLOW_TRY_NUMBER: "1",
        T.PROMOTED_AT: "2026-01-02T09:01:00+00:00", T.PREVIOUS_CHAMPION: "",
        T.INFRA_VALIDATION_PASSED: "true", T.INFRA_VALIDATION_SUMMARY: json.dumps(infra),
        T.DEPLOYMENTS: json.dumps(signed(DEPLOYMENTS)),
        # Left by an earlier episode (before v1 served again); the chain must not call v1 rolled away from.
        T.ROLLBACK_REASON: "rolled back to version 0 by oncall: an earlier regression",
    }.items():  # fmt: skip
        client.set_model_version_tag(name, "1", key, value)
    client.set_registered_model_tag(name, T.DEPLOYMENTS, json.dumps(signed(MODEL_HISTORY)))
    client.set_registered_model_alias(name, T.CHAMPION, "1")
    return name


def test_the_text_chain_shows_every_stage_in_order(mlflow_server, model, capsys):
    assert main([model, "champion", "--tracking-uri", mlflow_server.uri]) == 0
    out = capsys.readouterr().out
    labels = [
        line.split()[0]
        for line in out.splitlines()[1:]
        if line.startswith("  ") and not line.startswith("    ")
    ]
    assert labels == [
        "data", "source", "code", "validation", "training", "airflow", "evaluation", "approval", "promotion", "infra",
        "deployments", "serving", "rollback",
    ]  # fmt: skip
    assert f"{model} version 1 (aliases: champion)" in out
    # The snapshot's manifest is not readable here: the source says why; no code version was recorded.
    assert "  source      unknown (manifest not readable: " in out
    assert "  code        not recorded" in out
    assert "approval    approved by reviewer at 2026-01-02T09:00:00+00:00: 'ship it' [signed]" in out
    assert "infra       passed on local, 11 requests, latency ms p50=3.1 p95=7.5 max=9.0" in out
    assert "deployments 2" in out
    assert (
        "    2026-01-03T09:30:00+00:00  rollback v1 succeeded on local http://127.0.0.1:5001 by oncall "
        "(previous v2): latency regression"
    ) in out
    # v1 serves again after the rollback: the chain says so, not "rolled away from this version".
    assert "serving     yes, since 2026-01-03T09:30:00+00:00 (rollback on local)" in out
    assert "rolled away from this version" not in out
    assert (
        "rollback    rolled away from earlier (rolled back to version 0 by oncall: an earlier regression); "
        in out
    )


def test_the_json_chain_has_infra_validation_deployments_and_rollback(mlflow_server, model, capsys):
    assert main([model, "1", "--tracking-uri", mlflow_server.uri, "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert chain["infra_validation"]["passed"] is True
    assert chain["infra_validation"]["summary"]["latency_ms"]["p95"] == 7.5
    assert [{k: v for k, v in e.items() if k != "signature"} for e in chain["deployments"]] == DEPLOYMENTS
    assert chain["approval"]["signature"] is None  # the package signed it
    assert chain["untrusted_deployments"] == []
    assert chain["rollback"]["reason"] == "rolled back to version 0 by oncall: an earlier regression"
    assert chain["serving"] == {
        "now": True, "version": "1", "since": "2026-01-03T09:30:00+00:00", "action": "rollback", "target": "local",
    }  # fmt: skip
    assert chain["training_run"]["metrics"] == {"val_accuracy": 0.91}


def test_a_version_without_deployments_says_so(mlflow_server, model, capsys):
    assert main([model, "2", "--tracking-uri", mlflow_server.uri]) == 0
    out = capsys.readouterr().out
    assert "infra       not validated" in out
    assert "deployments none" in out
    assert "serving     no (v1 serves since 2026-01-03T09:30:00+00:00)" in out
    assert "rollback" not in out
    assert main([model, "7", "--tracking-uri", mlflow_server.uri]) == 1
    assert f"Model '{model}' has no version or alias '7'" in capsys.readouterr().out


def test_a_version_rolled_away_from_says_so_and_what_serves(mlflow_server, model, capsys):
    client = MlflowClient(mlflow_server.uri)
    run_id = client.get_model_version(model, "1").run_id
    version = client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id).version
    client.set_model_version_tag(model, version, T.ROLLBACK_REASON, "automatic rollback: smoke test failed")
    assert main([model, version, "--tracking-uri", mlflow_server.uri]) == 0
    out = capsys.readouterr().out
    assert "serving     no (v1 serves since 2026-01-03T09:30:00+00:00)" in out
    assert "rollback    rolled away from this version: automatic rollback: smoke test failed" in out
