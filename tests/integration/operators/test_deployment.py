"""
The deployment operators with a user's own target (defined outside the package, registered under its own
kind): deploy, automatic rollback, and rollback to the previous champion, with no change to the operators;
and what they refuse: unapproved versions, rollbacks to versions that never served, settings from the registry.
"""

from __future__ import annotations

import pytest

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    ApprovalRequiredError,
    DatasetError,
    DeploymentError,
    DeploymentRejectedError,
    DeploymentVerificationError,
)
from airflow_mlops.lineage.deployments import read_full_history, read_history
from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator
from airflow_mlops.serving import register_target_kind
from tests.support.context import context_for
from tests.support.deploy import EchoTarget, approve_version, write_holdout_snapshot

pytestmark = pytest.mark.integration

register_target_kind("echo", EchoTarget)  # as a user's DAG file (or plugin) does
TARGET = {"kind": "echo", "region": "eu-north-1"}


@pytest.fixture
def model(mlflow_server, request):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    name = f"echo_{request.node.name[5:40]}"
    client.create_registered_model(name)
    versions = [
        client.create_model_version(name, source=f"s3://models/{name}/{i}").version for i in (1, 2, 3)
    ]
    for version in versions:
        approve_version(client, name, version)
    yield client, name, versions
    EchoTarget.served.pop(name, None)
    EchoTarget.broken.clear()


def run(op_class, task_id, user="dana", **kwargs):
    op = op_class(task_id=task_id, **kwargs)
    return op.execute(context_for(op, user=user, run_id=f"manual__{task_id}"))


def test_a_user_target_deploys_rolls_back_and_is_found_by_the_rollback(model, tmp_path):
    client, name, (v1, v2, v3) = model
    holdout = write_holdout_snapshot(tmp_path)
    common = {"model_name": name, "target": TARGET, "sample_data": holdout, "drop_columns": ["label"]}

    run(DeployModelOperator, "deploy_1", version=v1, **common)
    run(DeployModelOperator, "deploy_2", version=v2, reason="weekly retrain", **common)
    EchoTarget.broken.add(v3)
    with pytest.raises(DeploymentVerificationError, match=f"version {v3} raised") as err:
        run(DeployModelOperator, "deploy_3", version=v3, **common)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (name, v3)
    assert err.value.reason.startswith("smoke test failed")
    assert EchoTarget.served[name].version == v2

    result = run(RollbackModelOperator, "rollback", user="erin", model_name=name, target=TARGET, reason="v2 drifts")

    assert result["version"] == v1
    assert result["previous_version"] == v2
    assert EchoTarget.served[name].version == v1
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1
    history = read_history(client, name)
    assert [(e["action"], e["version"], e["outcome"], e["actor"]) for e in history] == [
        ("deploy", v1, "succeeded", "dana"),
        ("deploy", v2, "succeeded", "dana"),
        ("deploy", v3, "failed", "dana"),
        ("auto_rollback", v2, "succeeded", "dana"),
        ("rollback", v1, "succeeded", "erin"),
    ]
    assert history[1]["reason"] == "weekly retrain"
    assert history[-1]["reason"] == "v2 drifts"
    assert {e["target"] for e in history} == {"echo"}
    assert client.get_model_version(name, v2).tags[T.ROLLBACK_REASON] == "rolled back to version 1 by erin: v2 drifts"
    assert len(read_full_history(client, name)) == len(history)


def test_a_failing_first_deployment_leaves_nothing_served_and_no_champion(model, tmp_path):
    client, name, (v1, _, _) = model
    client.set_registered_model_alias(name, T.CHAMPION, v1)  # as promote would have done
    EchoTarget.broken.add(v1)

    with pytest.raises(DeploymentVerificationError, match="no longer served"):
        run(DeployModelOperator, "deploy_1", model_name=name, version=v1, target=TARGET,
            sample_data=write_holdout_snapshot(tmp_path), drop_columns=["label"], smoke_rows=1)  # fmt: skip

    assert name not in EchoTarget.served
    assert T.CHAMPION not in client.get_registered_model(name).aliases


def test_deploying_the_champion_by_alias(model):
    client, name, (v1, v2, _) = model
    client.set_registered_model_alias(name, T.CHAMPION, v2)

    result = run(DeployModelOperator, "deploy", model_name=name, target=TARGET)

    assert result["version"] == v2
    assert EchoTarget.served[name].version == v2


def test_rolling_back_with_no_earlier_version_is_refused(model):
    client, name, (v1, _, _) = model
    run(DeployModelOperator, "deploy_1", model_name=name, version=v1, target=TARGET)

    with pytest.raises(DeploymentError, match="no earlier version") as err:
        run(RollbackModelOperator, "rollback", model_name=name, target=TARGET, reason="undo")

    assert isinstance(err.value, DeploymentRejectedError)
    assert err.value.retryable is False

    assert EchoTarget.served[name].version == v1


def test_an_unapproved_version_is_not_deployed_and_nothing_changes(model):
    client, name, (v1, v2, _) = model
    run(DeployModelOperator, "deploy_1", model_name=name, version=v1, target=TARGET)
    client.delete_model_version_tag(name, v2, T.APPROVAL_DECISION)  # the approval task marked success by hand

    with pytest.raises(ApprovalRequiredError, match=f"Refusing to deploy version {v2}.*no recorded approval") as err:
        run(DeployModelOperator, "deploy_2", model_name=name, version=v2, target=TARGET)

    assert err.value.retryable is False
    assert EchoTarget.served[name].version == v1
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1
    assert [e["version"] for e in read_history(client, name)] == [v1]


def test_a_deploy_that_fails_for_good_leaves_champion_on_what_serves(model):
    client, name, (v1, v2, _) = model
    run(DeployModelOperator, "deploy_1", model_name=name, version=v1, target=TARGET)
    client.set_registered_model_alias(name, T.CHAMPION, v2)  # promote moved it; the deploy then fails

    with pytest.raises(DatasetError, match="Cannot read the sample requests"):
        run(DeployModelOperator, "deploy_2", model_name=name, target=TARGET, sample_data="file:///nowhere/x")

    assert EchoTarget.served[name].version == v1
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1


def test_a_rollback_refuses_versions_that_never_served_or_were_not_approved(model):
    client, name, (v1, v2, v3) = model
    run(DeployModelOperator, "deploy_1", model_name=name, version=v1, target=TARGET)
    run(DeployModelOperator, "deploy_2", model_name=name, version=v2, target=TARGET)
    client.set_model_version_tag(name, v1, T.GATE_DECISION, "rejected")  # say the gate was re-run and failed

    with pytest.raises(DeploymentRejectedError, match=f"back to version {v3}: it never served") as never:
        run(RollbackModelOperator, "rollback_3", model_name=name, version=v3, target=TARGET, reason="undo")
    with pytest.raises(ApprovalRequiredError, match=f"roll back to version {v1}.*'rejected'") as unapproved:
        run(RollbackModelOperator, "rollback_1", model_name=name, version=v1, target=TARGET, reason="undo")

    assert never.value.retryable is unapproved.value.retryable is False
    assert EchoTarget.served[name].version == v2
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v2


def test_a_rollback_builds_its_target_from_the_dag_never_from_the_registry(model):
    client, name, (v1, v2, _) = model
    run(DeployModelOperator, "deploy_1", model_name=name, version=v1, target=TARGET)
    run(DeployModelOperator, "deploy_2", model_name=name, version=v2, target=TARGET)
    # Anyone with registry write access could put this in the tag the rollback used to read.
    client.set_registered_model_tag(
        name, T.DEPLOYMENT_TARGET, '{"kind": "local", "port": 8080, "server_args": ["-h", "0.0.0.0"]}'
    )

    result = run(RollbackModelOperator, "rollback", model_name=name, target=TARGET, reason="undo")

    assert (result["version"], result["target"]) == (v1, "echo")
    assert EchoTarget.served[name].version == v1
