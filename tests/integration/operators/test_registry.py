"""RegisterModelOperator and PromoteModelOperator against a real MLflow server."""

from __future__ import annotations

import json
import uuid

import mlflow
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ApprovalRequiredError, ModelVersionNotFoundError, RegistryError
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_mlops.results import RegisteredVersion
from tests.support.context import context_for
from tests.support.deploy import approve_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(client) -> list[dict]:
    """Two small trained models, each logged by its own MLflow run."""
    x, y = make_classification(n_samples=120, n_features=4, random_state=0)
    experiment_id = client.create_experiment(f"registry-tests-{uuid.uuid4().hex[:8]}")
    out = []
    for c in (1.0, 0.1):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = mlflow.sklearn.log_model(
                LogisticRegression(C=c).fit(x, y), name="model", pip_requirements=["scikit-learn"]
            )
        out.append({"model_uri": info.model_uri, "run_id": run.info.run_id})
    return out


@pytest.fixture
def model_name() -> str:
    return f"churn-{uuid.uuid4().hex[:8]}"


def aliases(client, model_name) -> dict[str, int]:
    return {alias: int(v) for alias, v in client.get_registered_model(model_name).aliases.items()}


def register(model_name, trained_model, task_id="register", try_number=1, **kwargs):
    op = RegisterModelOperator(
        task_id=task_id, model_name=model_name, model_uri=trained_model["model_uri"], **kwargs
    )
    return op.execute(context_for(op, try_number=try_number))


def promote(model_name, version, approve=True):
    op = PromoteModelOperator(task_id="promote", model_name=model_name, version=str(version))
    if approve:
        approve_version(op.hook.client, model_name, version)
    return op.execute(context_for(op))


def test_register_creates_a_ready_challenger_with_lineage_tags(client, trained, model_name):
    lineage = {T.DATA_URI: "s3://lake/datasets/churn/abc", T.DATA_SHA256: "abc", T.VALIDATION_SUCCESS: True}
    result = register(model_name, trained[0], tags=lineage)

    assert result == {
        "model_name": model_name,
        "version": 1,
        "model_uri": f"models:/{model_name}/1",
        "source_uri": trained[0]["model_uri"],
        "run_id": trained[0]["run_id"],
        "champion_version": None,
    }
    mv = client.get_model_version(model_name, "1")
    assert mv.status == "READY"
    assert mv.run_id == trained[0]["run_id"]
    assert mv.tags[T.DATA_URI] == "s3://lake/datasets/churn/abc"
    assert mv.tags[T.VALIDATION_SUCCESS] == "true"
    assert mv.tags[T.MLFLOW_RUN_ID] == trained[0]["run_id"]
    assert mv.tags[T.AIRFLOW_DAG_ID] == "mlops_tests"
    assert mv.tags[T.AIRFLOW_RUN_ID] == "manual__1"
    assert mv.tags[T.AIRFLOW_TASK_ID] == "register"
    assert mv.tags[T.AIRFLOW_TRY_NUMBER] == "1"
    assert aliases(client, model_name) == {T.CHALLENGER: 1}


def test_a_retried_registration_reuses_the_version_of_the_same_run(client, trained, model_name):
    first = register(model_name, trained[0], try_number=1)
    second = register(model_name, trained[0], try_number=2)

    assert second["version"] == first["version"] == 1
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [int(v.version) for v in versions] == [1]
    assert versions[0].tags[T.AIRFLOW_TRY_NUMBER] == "2"


def test_a_runs_uri_registers_with_the_run_id_derived(client, trained, model_name):
    op = RegisterModelOperator(
        task_id="register", model_name=model_name, model_uri=f"runs:/{trained[1]['run_id']}/model"
    )
    result = op.execute({})

    assert result["run_id"] == trained[1]["run_id"]
    assert (
        client.get_model_version(model_name, str(result["version"])).tags[T.MLFLOW_RUN_ID]
        == trained[1]["run_id"]
    )
    # Registering the same run again through its logged-model URI finds the same version.
    again = register(model_name, trained[1])
    assert again["version"] == result["version"]


def test_the_training_result_registers_with_the_runs_data_validation_and_code_tags(client, model_name):
    pytest.importorskip("airflow.providers.openlineage")
    from openlineage.client.serde import Serde

    from airflow_mlops.lineage.openlineage import MODEL_VERSION_FACET

    x, y = make_classification(n_samples=60, n_features=4, random_state=1)
    run_tags = {
        T.DATA_URI: "s3://lake/datasets/churn/ab12#train", T.DATA_VALID_URI: "s3://lake/datasets/churn/ab12#valid",
        T.DATA_SHA256: "ab12", T.VALIDATION_SUCCESS: "true", T.CODE_VERSION: "3f2c9d1e", "team": "risk",
    }  # fmt: skip
    with mlflow.start_run(experiment_id=client.create_experiment(f"copy-{model_name}"), tags=run_tags) as run:
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, y), name="model", pip_requirements=["scikit-learn"]
        )
    training = {"run_id": run.info.run_id, "model_uri": info.model_uri, "metrics": {"accuracy": 0.9}}

    op = RegisterModelOperator(
        task_id="register", model_name=model_name, model_uri=training, tags={T.VALIDATION_SUCCESS: False}
    )
    result = op.execute(context_for(op))

    assert set(result) == set(RegisteredVersion.__annotations__)
    assert (result["source_uri"], result["run_id"]) == (info.model_uri, run.info.run_id)
    tags = client.get_model_version(model_name, str(result["version"])).tags
    assert tags[T.DATA_URI] == "s3://lake/datasets/churn/ab12"  # the snapshot, not its split
    assert tags[T.DATA_VALID_URI] == "s3://lake/datasets/churn/ab12#valid"
    assert (tags[T.DATA_SHA256], tags[T.CODE_VERSION]) == ("ab12", "3f2c9d1e")
    assert tags[T.VALIDATION_SUCCESS] == "false"  # what the DAG gives wins
    assert "team" not in tags
    # The version's OpenLineage event says where it came from.
    (output,) = op.get_openlineage_facets_on_complete(None).outputs
    facet = json.loads(Serde.to_json(output))["facets"][MODEL_VERSION_FACET]
    assert (facet["trainingRun"], facet["codeVersion"]) == (run.info.run_id, "3f2c9d1e")


def test_registering_an_unknown_model_uri_names_the_model(client, model_name):
    op = RegisterModelOperator(
        task_id="register", model_name=model_name, model_uri="models:/m-0123456789abcdef"
    )
    with pytest.raises(RegistryError, match=f"as model '{model_name}'.*m-0123456789abcdef") as err:
        op.execute({})
    assert (err.value.model, err.value.uri) == (model_name, "models:/m-0123456789abcdef")


def test_promotion_moves_champion_records_the_previous_one_and_is_idempotent(client, trained, model_name):
    v1 = register(model_name, trained[0])["version"]
    assert promote(model_name, v1) == {"model_name": model_name, "version": 1, "previous_champion": None}
    assert aliases(client, model_name) == {T.CHAMPION: 1}

    registered = register(model_name, trained[1])
    assert registered["champion_version"] == 1
    assert aliases(client, model_name) == {T.CHAMPION: 1, T.CHALLENGER: 2}

    result = promote(model_name, 2)
    assert result == {"model_name": model_name, "version": 2, "previous_champion": 1}
    assert aliases(client, model_name) == {T.CHAMPION: 2}
    tags = client.get_model_version(model_name, "2").tags
    assert tags[T.PREVIOUS_CHAMPION] == "1"
    promoted_at = tags[T.PROMOTED_AT]

    # A retry (or a second promotion of the champion) changes nothing and returns the same result.
    assert promote(model_name, 2) == result
    assert client.get_model_version(model_name, "2").tags[T.PROMOTED_AT] == promoted_at
    assert aliases(client, model_name) == {T.CHAMPION: 2}


def test_templated_promotion_renders_model_and_version(client, trained, model_name):
    register(model_name, trained[0])
    op = PromoteModelOperator(
        task_id="promote", model_name="{{ params.model }}", version="{{ params.version }}"
    )
    op.render_template_fields({"params": {"model": model_name, "version": 1}})
    approve_version(client, model_name, 1)
    assert op.execute({})["version"] == 1
    assert aliases(client, model_name) == {T.CHAMPION: 1}


def test_promoting_a_missing_version_names_model_and_version(client, trained, model_name):
    register(model_name, trained[0])
    with pytest.raises(ModelVersionNotFoundError, match=f"Model '{model_name}' has no version 7") as err:
        promote(model_name, 7, approve=False)
    assert isinstance(err.value, RegistryError)
    assert err.value.retryable is False  # a retry cannot create the version: no retries spent
    assert (err.value.model, err.value.version) == (model_name, "7")
    assert aliases(client, model_name) == {T.CHALLENGER: 1}


@pytest.mark.parametrize(
    ("tags", "missing"),
    [
        ({}, ["no passed evaluation gate", "no recorded approval"]),
        ({T.GATE_DECISION: "rejected"}, ["mlops.gate.decision is 'rejected'", "no recorded approval"]),
        # The approval task marked success by hand, or a DAG with no approval task: no decision recorded.
        ({T.GATE_DECISION: "passed"}, ["mlops.approval.decision is missing"]),
        ({T.GATE_DECISION: "passed", T.APPROVAL_DECISION: "rejected"}, ["mlops.approval.decision is 'rejected'"]),
        ({T.GATE_DECISION: "passed", T.APPROVAL_DECISION: "approved"}, ["has no mlops.approval.approver"]),
    ],
)
def test_promotion_refuses_a_version_without_a_passed_gate_and_a_recorded_approval(
    client, trained, model_name, tags, missing
):
    v1 = register(model_name, trained[0])["version"]
    promote(model_name, v1)
    v2 = register(model_name, trained[1])["version"]
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(v2), key, value)

    with pytest.raises(ApprovalRequiredError, match=f"Refusing to promote version {v2}") as err:
        promote(model_name, v2, approve=False)

    assert err.value.retryable is False
    for text in missing:
        assert text in str(err.value)
    assert aliases(client, model_name) == {T.CHAMPION: v1, T.CHALLENGER: v2}
    assert T.PROMOTED_AT not in client.get_model_version(model_name, str(v2)).tags


def test_promotion_without_approval_when_the_deployment_turns_the_check_off(
    client, trained, model_name, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__MLOPS__REQUIRE_APPROVAL", "False")
    v1 = register(model_name, trained[0])["version"]
    assert promote(model_name, v1, approve=False)["version"] == v1
    assert aliases(client, model_name) == {T.CHAMPION: v1}
