"""
Someone with MLflow write access (but no Airflow account that may approve) plants the records that decide what
serves: gate and approval tags, a release record for the next deploy, an approval task marker, a deployment
history entry. Nothing they plant serves, is promoted or answers for a reviewer; what the package signed keeps
working across a key rotation, and the lineage command tells the two apart.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ApprovalRequiredError, ConfigurationError, RecordSignatureError
from airflow_mlops.lineage.chain import format_lineage, get_lineage
from airflow_mlops.lineage.deployments import read_history
from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator
from airflow_mlops.operators.registry import PromoteModelOperator
from airflow_mlops.serving import register_target_kind
from airflow_mlops.signing import SigningKeys, load_keys
from tests.support.context import RecordingTI, context_for
from tests.support.deploy import EchoTarget, write_holdout_snapshot
from tests.support.signing import approve_version

pytestmark = pytest.mark.integration

register_target_kind("echo", EchoTarget)
TARGET = {"kind": "echo"}
SIGNING_ENV = "AIRFLOW_CONN_MLOPS_SIGNING_DEFAULT"


@pytest.fixture
def model(mlflow_server):
    """A model with three versions; v1 passed the gate and was approved through the package, and serves."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    name = f"forged_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    versions = [
        client.create_model_version(name, source=f"s3://models/{name}/{i}").version for i in (1, 2, 3)
    ]
    approve_version(client, name, versions[0])
    yield client, name, versions
    EchoTarget.served.pop(name, None)


def run(op_class, task_id, *, run_id=None, user="dana", **kwargs):
    op = op_class(task_id=task_id, **kwargs)
    return op.execute(context_for(op, user=user, run_id=run_id or f"manual__{task_id}"))


def deploy(name, version, tmp_path, task_id="deploy", **kwargs):
    holdout = write_holdout_snapshot(tmp_path)
    return run(
        DeployModelOperator, task_id, model_name=name, version=version, target=TARGET, sample_data=holdout,
        drop_columns=["label"], **kwargs,
    )  # fmt: skip


def forge_approval(client, name, version, approver="mallory", task=""):
    """What anyone with MLflow write access can write: the tags of a passed gate and an approval."""
    for key, value in (
        (T.GATE_DECISION, "passed"),
        (T.GATE_REASON, "looks fine"),
        (T.APPROVAL_DECISION, "approved"),
        (T.APPROVAL_APPROVER, approver),
        (T.APPROVAL_TIME, "2026-12-05T10:00:00+00:00"),
        (T.APPROVAL_COMMENT, ""),
        (T.APPROVAL_TASK, task),
    ):
        client.set_model_version_tag(name, version, key, value)


def champion(client, name):
    return (client.get_registered_model(name).aliases or {}).get("champion")


def test_forged_gate_and_approval_tags_neither_promote_nor_serve(model, tmp_path):
    client, name, (v1, v2, _) = model
    deploy(name, v1, tmp_path, task_id="deploy_v1")
    forge_approval(client, name, v2)

    with pytest.raises(ApprovalRequiredError, match=r"mlops\.approval\.signature is missing") as promoted:
        run(PromoteModelOperator, "promote", model_name=name, version=v2)
    assert "mlops.gate.signature is missing" in str(promoted.value)
    assert promoted.value.retryable is False
    with pytest.raises(ApprovalRequiredError, match="no trusted approval"):
        deploy(name, v2, tmp_path)

    assert EchoTarget.served[name].version == v1
    assert champion(client, name) == v1
    assert [e["version"] for e in read_history(client, name, load_keys())] == [v1]


def test_a_signed_approval_moved_to_another_version_or_edited_counts_as_absent(model, tmp_path):
    client, name, (v1, v2, v3) = model
    signed = client.get_model_version(name, v1).tags
    for key in (*[k for k in signed if k.startswith(("mlops.gate.", "mlops.approval."))],):
        client.set_model_version_tag(name, v2, key, signed[key])  # copied, signature and all
    approve_version(client, name, v3, approver="reviewer")
    client.set_model_version_tag(name, v3, T.APPROVAL_APPROVER, "mallory")  # edited after signing

    for version in (v2, v3):
        with pytest.raises(ApprovalRequiredError, match="signed for another model or version|changed after"):
            run(PromoteModelOperator, f"promote_{version}", model_name=name, version=version)
    assert champion(client, name) is None
    assert name not in EchoTarget.served


def test_a_planted_release_record_for_the_next_deploy_does_not_decide_what_it_serves(model, tmp_path):
    """The record names the deploy task instance, another (unapproved) version and a model from a file."""
    client, name, (v1, v2, v3) = model
    deploy(name, v1, tmp_path, task_id="deploy_v1")
    approve_version(client, name, v2)
    crafted = tmp_path / "crafted-model"
    crafted.mkdir()
    rid = "mlops_tests/manual__deploy/deploy/-1"  # guessable from the mlops.airflow.* tags
    plan = {
        "model_name": name, "version": v3, "model_uri": crafted.as_uri(), "target": TARGET, "previous": None,
        "verify": {"sample_data": None, "drop_columns": [], "rows": 5}, "reason": "", "actor": "mallory",
        "airflow": {"dag_id": "mlops_tests", "run_id": "manual__deploy", "task_id": "deploy", "map_index": -1},
        "phase": "deploy", "canary": None,
    }  # fmt: skip
    record = {"id": rid, "kind": "deploy", "version": v3, "step": "switch", "updated": "2026-12-05T10:00:00+00:00",
              "expires": "2099-01-01T00:00:00+00:00", "plan": plan, "steps": []}  # fmt: skip
    client.set_model_version_tag(name, v3, T.RELEASE, json.dumps(record))
    pointer = {k: record[k] for k in ("id", "version", "kind", "step", "updated", "expires")}
    client.set_registered_model_tag(name, T.RELEASE, json.dumps(pointer))

    with pytest.raises(
        RecordSignatureError, match=r"mlops\.release \(registered model\) on model .* is missing"
    ):
        deploy(name, v2, tmp_path)

    assert EchoTarget.served[name].version == v1
    assert EchoTarget.served[name].model_uri == f"models:/{name}/{v1}"
    assert champion(client, name) == v1


def test_a_planted_release_record_of_another_task_neither_blocks_nor_is_taken_over(model, tmp_path):
    client, name, (v1, v2, _) = model
    approve_version(client, name, v2)
    pointer = {"id": "other/run/deploy/-1", "version": v1, "kind": "deploy", "step": "verify",
               "updated": "2026-12-05T10:00:00+00:00", "expires": "2099-01-01T00:00:00+00:00"}  # fmt: skip
    client.set_registered_model_tag(name, T.RELEASE, json.dumps(pointer))

    result = deploy(name, v2, tmp_path)

    assert (result["version"], result["outcome"]) == (v2, "succeeded")
    assert EchoTarget.served[name].model_uri == f"models:/{name}/{v2}"


def test_a_planted_approval_task_marker_answers_for_nobody(model):
    client, name, (_, v2, _) = model
    op = ApproveModelOperator(task_id="approve", model_name=name, candidate_version=v2)
    forge_approval(client, name, v2, task="mlops_tests/manual__1/approve/-1")  # names this task instance

    def asked() -> None:
        raise RuntimeError("the approvers were asked")

    op.prepare_request = asked  # the first step of asking the reviewers
    with pytest.raises(RuntimeError, match="approvers were asked"):
        op.execute({"ti": RecordingTI("approve"), "task": op})


def test_a_planted_history_entry_does_not_make_a_version_a_rollback_target(model, tmp_path):
    client, name, (v1, v2, v3) = model
    deploy(name, v1, tmp_path, task_id="deploy_v1")
    approve_version(client, name, v2)
    deploy(name, v2, tmp_path, task_id="deploy_v2")
    forge_approval(client, name, v3)
    entry = {"time": "2026-12-05T09:00:00+00:00", "action": "deploy", "version": v3, "outcome": "succeeded",
             "target": "echo", "endpoint": "echo://x", "actor": "mallory", "reason": "", "previous_version": v1}  # fmt: skip
    client.set_model_version_tag(name, v3, T.DEPLOYMENTS, json.dumps([entry]))
    history = json.loads(client.get_registered_model(name).tags[T.DEPLOYMENTS])
    client.set_registered_model_tag(name, T.DEPLOYMENTS, json.dumps([*history, entry]))

    with pytest.raises(
        RecordSignatureError, match=r"mlops\.deployments entry saying it served .* is missing"
    ):
        run(
            RollbackModelOperator, "rollback_v3", model_name=name, version=v3, reason="planted", target=TARGET
        )
    assert EchoTarget.served[name].version == v2

    # The previous champion is chosen from the signed entries: v1, not the planted v3 "after" it.
    result = run(RollbackModelOperator, "rollback", model_name=name, reason="incident 7", target=TARGET)
    assert (result["version"], EchoTarget.served[name].version, champion(client, name)) == (v1, v1, v1)

    text = format_lineage(get_lineage(client, name, v3, load_keys()))
    assert "NOT SIGNED  1 deployment entries" in text
    assert "approval    approved by mallory" in text
    assert "[NOT SIGNED: signature is missing" in text
    assert "[signed]" in format_lineage(get_lineage(client, name, v1, load_keys()))


def test_a_key_rotation_keeps_old_records_verifiable(model, tmp_path, monkeypatch):
    client, name, (v1, v2, _) = model
    deploy(name, v1, tmp_path, task_id="deploy_v1")  # gate, approval and history signed with the tests' key
    old = load_keys()
    old_secret = json.loads(os.environ[SIGNING_ENV])["password"]
    new = SigningKeys.from_secrets("k2", "n" * 48)
    monkeypatch.setenv(
        SIGNING_ENV,
        json.dumps({"conn_type": "generic", "login": "k2", "password": "n" * 48,
                    "extra": {"previous_keys": {old.key_id: old_secret}}}),
    )  # fmt: skip
    approve_version(client, name, v2, keys=new)

    deploy(name, v2, tmp_path, task_id="deploy_v2")  # v2 signed with k2, checked with k2
    result = run(RollbackModelOperator, "rollback", model_name=name, reason="rotated", target=TARGET)
    assert result["version"] == v1  # v1's records, signed with the old key, still count
    assert EchoTarget.served[name].version == v1

    # Once the old key is dropped, what it signed counts as absent, and the error names the key id.
    monkeypatch.setenv(SIGNING_ENV, json.dumps({"conn_type": "generic", "login": "k2", "password": "n" * 48}))
    with pytest.raises(ApprovalRequiredError, match=f"key id '{old.key_id}', which the signing connection"):
        run(PromoteModelOperator, "promote_v1", model_name=name, version=v1)


def test_without_a_signing_key_nothing_is_promoted_and_the_error_says_what_to_create(model, monkeypatch):
    client, name, (v1, _, _) = model
    monkeypatch.delenv(SIGNING_ENV)

    with pytest.raises(ConfigurationError, match="connection 'mlops_signing_default' is not defined"):
        run(PromoteModelOperator, "promote", model_name=name, version=v1)
    assert champion(client, name) is None
