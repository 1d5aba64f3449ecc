"""EvaluateModelOperator against a real MLflow server with real scikit-learn models: the gate decision table."""

from __future__ import annotations

import json
import math
import uuid

import mlflow
import pandas as pd
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import DownstreamTasksSkipped
from mlflow import MlflowClient
from sklearn.datasets import make_classification, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import SVC

from airflow_mlops import tags as T
from airflow_mlops.evaluation.thresholds import CLASSIFIER_METRICS, REGRESSOR_METRICS
from airflow_mlops.exceptions import (
    ConfigurationError,
    ModelEvaluationError,
    ModelGateFailedError,
    ModelVersionNotFoundError,
)
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.registry import PromoteModelOperator
from airflow_mlops.results import EvaluationResult
from tests.support.context import context_for
from tests.support.deploy import approve_version
from tests.support.snapshots import write_frames_snapshot as write_snapshot

pytestmark = pytest.mark.integration

ACCURACY_GATE = {"accuracy_score": {"threshold": 0.6, "min_absolute_change": 0.02}}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> dict:
    x, y = make_classification(n_samples=500, n_features=5, n_informative=3, random_state=7)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(label=y)
    uri = write_snapshot(tmp_path_factory.mktemp("data"), "churn", frame.iloc[:300], frame.iloc[300:])
    return {"uri": uri, "holdout": f"{uri}#holdout", "train": frame.iloc[:300]}


@pytest.fixture(scope="module")
def models(client, snapshot) -> dict[str, str]:
    """Logged models (URIs): a strong and a weak classifier, and one without predict_proba."""
    train = snapshot["train"]
    x, y = train.drop(columns="label"), train["label"]
    experiment_id = client.create_experiment(f"evaluation-tests-{uuid.uuid4().hex[:8]}")
    estimators = {
        "strong": LogisticRegression().fit(x, y),
        "weak": DummyClassifier(strategy="most_frequent").fit(x, y),
        "no_proba": SVC().fit(x, y),
    }
    uris = {}
    for key, estimator in estimators.items():
        with mlflow.start_run(experiment_id=experiment_id, run_name=key):
            info = mlflow.sklearn.log_model(estimator, name="model", pip_requirements=["scikit-learn"])
        uris[key] = info.model_uri
    return uris


@pytest.fixture
def registry(client, models):
    """Register logged models as versions of a fresh model name; optionally make one the champion."""

    class Registry:
        name = f"churn-{uuid.uuid4().hex[:8]}"

        def add(self, key: str, champion: bool = False) -> int:
            version = int(mlflow.register_model(models[key], self.name).version)
            if champion:
                client.set_registered_model_alias(self.name, T.CHAMPION, str(version))
            return version

        def tags(self, version: int) -> dict:
            return client.get_model_version(self.name, str(version)).tags

    return Registry()


def evaluate_op(registry, snapshot, version, thresholds=ACCURACY_GATE, **kwargs):
    return EvaluateModelOperator(
        task_id="evaluate",
        model_name=registry.name,
        candidate_version=str(version),
        holdout_data=snapshot["holdout"],
        thresholds=thresholds,
        **kwargs,
    )


def test_first_run_applies_only_absolute_thresholds(client, registry, snapshot):
    version = registry.add("strong")
    op = evaluate_op(registry, snapshot, version)
    context = context_for(op)
    result = op.execute(context)

    assert set(result) == set(EvaluationResult.__annotations__)
    assert result["passed"] is True
    assert result["champion_version"] is None
    assert result["candidate_version"] == version
    assert "no champion" in result["report"].lower()
    assert "not applied" in result["report"]
    assert set(CLASSIFIER_METRICS) <= set(result["metrics"])  # the static table matches MLflow's output
    accuracy = result["metrics"]["accuracy_score"]
    assert accuracy["candidate"] > 0.6
    assert accuracy["champion"] is None
    assert accuracy["passed"] is True
    tags = registry.tags(version)
    assert tags[T.GATE_DECISION] == "passed"
    summary = json.loads(tags[T.EVALUATION_SUMMARY])
    assert summary["passed"] is True
    assert summary["holdout"] == snapshot["holdout"]
    assert summary["rows"] == 200
    run = client.get_run(result["evaluation_run_id"])
    assert run.data.tags[T.GATE_DECISION] == "passed"
    assert json.loads(json.dumps(result)) == result  # small JSON for XCom

    # A retry of the task resumes the same evaluation run instead of adding another.
    again = op.execute(context_for(op, try_number=2))
    assert again["evaluation_run_id"] == result["evaluation_run_id"]


def test_a_better_candidate_passes_against_the_champion(registry, snapshot):
    champion = registry.add("weak", champion=True)
    candidate = registry.add("strong")
    result = evaluate_op(registry, snapshot, candidate).execute({})

    assert result["passed"] is True
    assert result["champion_version"] == champion
    accuracy = result["metrics"]["accuracy_score"]
    assert accuracy["delta"] == pytest.approx(accuracy["candidate"] - accuracy["champion"])
    assert accuracy["delta"] > 0.02
    assert "| accuracy_score |" in result["report"]
    assert f"champion v{champion}" in result["report"]
    assert registry.tags(candidate)[T.GATE_DECISION] == "passed"


def test_it_takes_the_registration_and_the_ingest_whole_and_puts_the_intro_first(registry, snapshot):
    version = registry.add("strong")
    registered = {"model_name": registry.name, "version": version, "model_uri": f"models:/{registry.name}/{version}"}
    ingested = {"uri": snapshot["uri"], "splits": {"train": "unused", "holdout": snapshot["holdout"]}}
    op = EvaluateModelOperator(
        task_id="evaluate", model_name=registry.name, candidate_version=registered, holdout_data=ingested,
        thresholds=ACCURACY_GATE, report_intro="### Why this run\n\n- retraining requested by monitoring",
    )  # fmt: skip
    result = op.execute({})

    assert result["candidate_version"] == version
    assert json.loads(registry.tags(version)[T.EVALUATION_SUMMARY])["holdout"] == snapshot["holdout"]
    assert result["report"].startswith("### Why this run\n\n- retraining requested by monitoring\n\n")
    assert "accuracy_score" in result["report"]


def test_a_worse_candidate_is_rejected_promotion_skipped_and_it_is_no_challenger(client, registry, snapshot):
    champion = registry.add("strong", champion=True)
    candidate = registry.add("weak")
    client.set_registered_model_alias(registry.name, T.CHALLENGER, str(candidate))
    with DAG("mlops_gate_test", schedule=None):
        op = evaluate_op(registry, snapshot, candidate)
        promote = PromoteModelOperator(task_id="promote", model_name=registry.name, version=str(candidate))
        op >> promote
    context = context_for(op)

    with pytest.raises(DownstreamTasksSkipped) as skipped:
        op.execute(context)

    assert skipped.value.tasks == ["promote"]
    result = context["ti"].xcoms["return_value"]
    assert result["passed"] is False
    assert "accuracy_score" in result["reason"]
    assert "FAIL" in result["report"]
    assert registry.tags(candidate)[T.GATE_DECISION] == "rejected"
    assert "accuracy_score" in registry.tags(candidate)[T.GATE_REASON]
    aliases = client.get_registered_model(registry.name).aliases
    assert aliases[T.CHAMPION] == str(champion)
    assert T.CHALLENGER not in aliases  # a rejected version is no candidate any more


def test_fail_on_gate_fails_the_task_and_still_pushes_the_result(registry, snapshot):
    registry.add("strong", champion=True)
    candidate = registry.add("weak")
    op = evaluate_op(registry, snapshot, candidate, fail_on_gate=True)
    context = context_for(op)

    with pytest.raises(
        ModelGateFailedError, match=f"model '{registry.name}' v{candidate} did not pass"
    ) as err:
        op.execute(context)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (registry.name, str(candidate))
    assert "accuracy_score" in err.value.reason
    assert err.value.reason == context["ti"].xcoms["return_value"]["reason"]
    assert context["ti"].xcoms["return_value"]["passed"] is False
    assert registry.tags(candidate)[T.GATE_DECISION] == "rejected"


def test_a_tie_fails_a_positive_min_absolute_change_and_passes_zero(registry, snapshot):
    registry.add("strong", champion=True)
    candidate = registry.add("strong")  # same model, second version: identical metrics

    tie = evaluate_op(registry, snapshot, candidate, {"accuracy_score": {"min_absolute_change": 0.01}})
    result = tie.execute({})
    assert result["passed"] is False
    assert result["metrics"]["accuracy_score"]["delta"] == 0
    assert "minimum absolute change check failed" in result["reason"]

    no_worse = evaluate_op(registry, snapshot, candidate, {"accuracy_score": {"min_absolute_change": 0}})
    assert no_worse.execute({})["passed"] is True
    assert registry.tags(candidate)[T.GATE_DECISION] == "passed"


def test_a_deleted_champion_version_counts_as_no_champion(client, registry, snapshot):
    old = registry.add("strong", champion=True)
    candidate = registry.add("strong")
    client.delete_model_version(registry.name, str(old))

    result = evaluate_op(registry, snapshot, candidate).execute({})

    assert result["passed"] is True
    assert result["champion_version"] is None
    assert "no champion" in result["report"].lower()


def test_a_champion_alias_left_on_a_missing_version_counts_as_no_champion(
    client, registry, snapshot, monkeypatch
):
    # Registries other than MLflow's SQL store can leave an alias on a deleted version: inject that fault.
    candidate = registry.add("strong")
    real = MlflowClient.get_registered_model

    def with_dangling_alias(self, name):
        model = real(self, name)
        model._aliases = {**model.aliases, T.CHAMPION: "99"}
        return model

    monkeypatch.setattr(MlflowClient, "get_registered_model", with_dangling_alias)
    result = evaluate_op(registry, snapshot, candidate).execute({})

    assert result["passed"] is True
    assert result["champion_version"] is None
    assert "points at version 99, which no longer exists" in result["report"]


def test_a_nan_metric_fails_the_gate_with_a_clear_reason(registry, snapshot, monkeypatch):
    candidate = registry.add("strong")
    real_evaluate = mlflow.models.evaluate

    def evaluate_with_nan_accuracy(*args, **kwargs):  # fault injection: the metric comes back NaN
        result = real_evaluate(*args, **kwargs)
        result.metrics["accuracy_score"] = math.nan
        return result

    monkeypatch.setattr(mlflow.models, "evaluate", evaluate_with_nan_accuracy)
    op = evaluate_op(
        registry, snapshot, candidate, {"accuracy_score": {"threshold": 0.5}, "f1_score": {"threshold": 0.1}}
    )
    result = op.execute({})

    assert result["passed"] is False
    assert "candidate accuracy_score is nan" in result["reason"]
    assert "f1_score" not in result["reason"]
    assert result["metrics"]["accuracy_score"]["candidate"] is None
    assert registry.tags(candidate)[T.GATE_DECISION] == "rejected"


def test_a_gated_metric_the_model_does_not_produce_is_a_clear_error(registry, snapshot):
    candidate = registry.add("no_proba")
    op = evaluate_op(registry, snapshot, candidate, {"roc_auc": {"threshold": 0.5}})
    with pytest.raises(
        ModelEvaluationError, match=r"does not produce the gated metric\(s\) \['roc_auc'\]"
    ) as err:
        op.execute({})
    assert "accuracy_score" in str(err.value)  # names what it does produce
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (registry.name, str(candidate))
    assert err.value.dataset == snapshot["holdout"]
    assert err.value.uri == f"models:/{registry.name}/{candidate}"
    assert T.GATE_DECISION not in registry.tags(candidate)


def test_a_missing_target_column_is_a_clear_error(registry, snapshot):
    candidate = registry.add("strong")
    op = evaluate_op(registry, snapshot, candidate, target="churned")
    with pytest.raises(ModelEvaluationError, match="no target column 'churned'.*'label'"):
        op.execute({})


def test_a_missing_candidate_version_fails_at_once_naming_model_and_version(registry, snapshot):
    registry.add("strong")
    op = evaluate_op(registry, snapshot, 7)
    with pytest.raises(ModelVersionNotFoundError, match=f"Model '{registry.name}' has no version 7") as err:
        op.execute({})
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (registry.name, "7")


def test_a_missing_candidate_alias_fails_at_once(registry, snapshot):
    registry.add("strong")
    op = EvaluateModelOperator(
        task_id="evaluate",
        model_name=registry.name,
        candidate_model_uri=f"models:/{registry.name}@challenger",
        holdout_data=snapshot["holdout"],
        thresholds={"f1_score": {"threshold": 0.5}},
    )
    with pytest.raises(ModelVersionNotFoundError, match="has no alias 'challenger'") as err:
        op.execute({})
    assert err.value.retryable is False
    assert err.value.model == registry.name


def test_thresholds_from_dag_params_are_rendered_and_validated(registry, snapshot):
    candidate = registry.add("strong")
    op = evaluate_op(registry, snapshot, "{{ params.version }}", thresholds="{{ params.thresholds }}")
    params = {"version": candidate, "thresholds": {"accuracy_score": {"threshold": 0.99}}}
    op.render_template_fields({"params": params})
    result = op.execute({})
    assert result["passed"] is False
    assert "threshold check failed" in result["reason"]

    bad = evaluate_op(registry, snapshot, candidate, thresholds="{{ params.thresholds }}")
    bad.render_template_fields({"params": {"thresholds": {"accuracy": {"threshold": 0.5}}}})
    with pytest.raises(ValueError, match="Unknown metric 'accuracy'") as err:
        bad.execute({})
    assert isinstance(err.value, ConfigurationError)
    assert err.value.retryable is False


def test_regressors_are_gated_on_regression_metrics(client, tmp_path):
    x, y = make_regression(n_samples=200, n_features=3, noise=5.0, random_state=1)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(target=y)
    uri = write_snapshot(tmp_path, "prices", frame.iloc[:150], frame.iloc[150:])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LinearRegression().fit(frame.iloc[:150][["a", "b", "c"]], frame.iloc[:150]["target"]),
            name="model", pip_requirements=["scikit-learn"],
        )  # fmt: skip
    name = f"prices-{uuid.uuid4().hex[:8]}"
    version = mlflow.register_model(info.model_uri, name).version

    result = EvaluateModelOperator(
        task_id="evaluate", model_name=name, candidate_version=version, holdout_data=f"{uri}#holdout",
        target="target", model_type="regressor",
        thresholds={"r2_score": {"threshold": 0.8}, "root_mean_squared_error": {"threshold": 50}},
    ).execute({})  # fmt: skip

    assert result["passed"] is True
    assert set(REGRESSOR_METRICS) <= set(result["metrics"])
    assert "<= 50" in result["report"]


def business_cost(predictions, targets, metrics):
    """Under-forecasts cost three times what over-forecasts cost."""
    error = targets - predictions
    return float((3 * error.clip(lower=0) - error.clip(upper=0)).mean())


@pytest.fixture(scope="module")
def subset_regressor(client, tmp_path_factory) -> dict:
    """A regressor trained on two of the holdout's three feature columns, logged with its signature."""
    from airflow_mlops.trainer.models import log_model

    x, y = make_regression(n_samples=200, n_features=3, noise=5.0, random_state=2)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(target=y)
    root = tmp_path_factory.mktemp("subset")
    uri = write_snapshot(root, "demand", frame.iloc[:150], frame.iloc[150:])
    lacking = write_snapshot(
        root, "demand-no-c", frame.iloc[:150].drop(columns="c"), frame.iloc[150:].drop(columns="c")
    )
    with mlflow.start_run():
        info = log_model(LinearRegression().fit(frame.iloc[:150][["c", "a"]], frame.iloc[:150]["target"]),
                         frame.iloc[:150][["c", "a"]])  # fmt: skip
    name = f"demand-{uuid.uuid4().hex[:8]}"
    version = mlflow.register_model(info.model_uri, name).version
    return {"name": name, "version": version, "holdout": f"{uri}#holdout", "lacking": f"{lacking}#holdout"}


def test_a_regressor_trained_on_some_columns_is_inferred_and_gated_on_a_custom_metric(subset_regressor):
    from airflow_mlops.evaluation.thresholds import CustomMetric

    op = EvaluateModelOperator(
        task_id="evaluate", model_name=subset_regressor["name"], candidate_version=subset_regressor["version"],
        holdout_data=subset_regressor["holdout"], target="target",
        thresholds={"root_mean_squared_error": {"threshold": 500}, "business_cost": {"threshold": 1.0}},
        extra_metrics=[CustomMetric("business_cost", business_cost, greater_is_better=False)],
    )  # fmt: skip
    result = op.execute({})

    # No model_type given: the regression metric says it; the model got only its columns c and a.
    assert set(REGRESSOR_METRICS) <= set(result["metrics"])
    cost = result["metrics"]["business_cost"]
    assert cost["candidate"] > 1.0  # noise 5.0: the cost of the errors is far above 1
    assert cost["passed"] is False
    assert result["metrics"]["root_mean_squared_error"]["passed"] is True
    assert result["passed"] is False
    assert result["reason"].startswith("business_cost: Metric business_cost value threshold check failed")
    assert "root_mean_squared_error" not in result["reason"]
    assert "| business_cost |" in result["report"]
    assert "<= 1" in result["report"]


def test_a_holdout_without_a_column_the_model_takes_names_it(subset_regressor):
    op = EvaluateModelOperator(
        task_id="evaluate", model_name=subset_regressor["name"], candidate_version=subset_regressor["version"],
        holdout_data=subset_regressor["lacking"], target="target",
        thresholds={"mean_absolute_error": {"threshold": 50}},
    )  # fmt: skip
    with pytest.raises(ModelEvaluationError, match=r"lacks column\(s\) \['c'\] that model") as err:
        op.execute({})
    assert "signature inputs: ['c', 'a']" in str(err.value)
    assert err.value.retryable is False


def test_the_model_type_comes_from_the_signature_when_the_metrics_fit_both(subset_regressor):
    from airflow_mlops.evaluation.thresholds import CustomMetric

    result = EvaluateModelOperator(
        task_id="evaluate", model_name=subset_regressor["name"], candidate_version=subset_regressor["version"],
        holdout_data=subset_regressor["holdout"], target="target",
        thresholds={"business_cost": {"threshold": 1000.0}},
        extra_metrics=[CustomMetric("business_cost", business_cost, greater_is_better=False)],
    ).execute({})  # fmt: skip
    assert result["passed"] is True
    assert "root_mean_squared_error" in result["metrics"]  # evaluated as a regressor


def test_metrics_of_the_other_model_type_are_refused_at_parse_time_and_after_rendering(subset_regressor):
    with pytest.raises(
        ValueError, match="Unknown metric 'root_mean_squared_error' for model_type 'classifier'"
    ) as err:
        EvaluateModelOperator(
            task_id="evaluate", model_name="m", candidate_version=1, holdout_data="s#holdout",
            model_type="classifier", thresholds={"root_mean_squared_error": {"threshold": 50}},
        )  # fmt: skip
    assert "classifier: accuracy_score" in str(err.value)
    assert "regressor: max_error" in str(err.value)

    op = EvaluateModelOperator(
        task_id="evaluate", model_name=subset_regressor["name"], candidate_version=subset_regressor["version"],
        holdout_data=subset_regressor["holdout"], target="target", model_type="classifier",
        thresholds="{{ params.thresholds }}",
    )  # fmt: skip
    op.render_template_fields({"params": {"thresholds": {"root_mean_squared_error": {"threshold": 50}}}})
    with pytest.raises(ConfigurationError, match="regressor: max_error, mean_absolute_error") as err:
        op.execute({})
    assert err.value.retryable is False


def test_the_candidate_can_be_named_by_its_challenger_alias(client, registry, snapshot):
    version = registry.add("strong")
    client.set_registered_model_alias(registry.name, T.CHALLENGER, str(version))
    op = EvaluateModelOperator(
        task_id="evaluate", model_name=registry.name, candidate_model_uri=f"models:/{registry.name}@challenger",
        holdout_data=snapshot["holdout"], thresholds={"f1_score": {"threshold": 0.5}},
    )  # fmt: skip
    result = op.execute({})
    assert result["candidate_version"] == version
    assert registry.tags(version)[T.GATE_DECISION] == "passed"
    assert client.get_registered_model(registry.name).aliases[T.CHALLENGER] == str(version)  # kept


# --- slices, report contents ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regional(client, tmp_path_factory) -> dict:
    """
    A holdout with a ``region`` column where the label follows ``f0`` in the north and ``f1`` elsewhere.

    ``north_model`` learned the north's rule and ``south_model`` the south's: the north model is better
    overall (the north has most rows) but much worse in the south. ``tiny`` has too few rows to judge.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    rng = __import__("numpy").random.default_rng(3)

    def frame(region: str, rows: int) -> pd.DataFrame:
        f0, f1 = rng.normal(size=rows), rng.normal(size=rows)
        label = (f0 > 0) if region == "north" else (f1 > 0)
        return pd.DataFrame({"f0": f0, "f1": f1, "region": region, "label": label.astype(int)})

    holdout = pd.concat([frame("north", 150), frame("south", 60), frame("tiny", 10)], ignore_index=True)
    train = pd.concat([frame("north", 200), frame("south", 200)], ignore_index=True)
    uri = write_snapshot(tmp_path_factory.mktemp("regional"), "regional", train, holdout)
    experiment_id = client.create_experiment(f"slice-tests-{uuid.uuid4().hex[:8]}")
    uris = {}
    for key, region, feature in (("north_model", "north", "f0"), ("south_model", "south", "f1")):
        part = train[train["region"] == region]
        pipeline = make_pipeline(
            ColumnTransformer([("rule", "passthrough", [feature])]), LogisticRegression()
        ).fit(part.drop(columns="label"), part["label"])
        with mlflow.start_run(experiment_id=experiment_id, run_name=key):
            uris[key] = mlflow.sklearn.log_model(
                pipeline, name="model", pip_requirements=["scikit-learn"]
            ).model_uri
    return {"holdout": f"{uri}#holdout", **uris}


def _slice_status(result: dict) -> dict[str, str]:
    return {row["segment"]: row["status"] for row in result["slices"]}


SLICES_BY_REGION = {
    "column": "region",
    "metrics": {"accuracy_score": {"max_regression": 0.05}},
    "min_rows": 30,
}


@pytest.mark.parametrize(
    ("slices", "with_champion", "passed", "statuses"),
    [
        pytest.param(
            SLICES_BY_REGION, True, False, {"north": "pass", "south": "fail", "tiny": "not enough rows"},
            id="a regression on one slice rejects a candidate that is better overall",
        ),
        pytest.param(
            {**SLICES_BY_REGION, "metrics": {"accuracy_score": {"max_regression": 0.8}}},
            True, True, {"north": "pass", "south": "pass", "tiny": "not enough rows"},
            id="a regression within max_regression passes",
        ),
        pytest.param(
            '{"column": "region", "metrics": {"accuracy_score": {"max_regression": 0}}, "min_rows": 100}',
            True, True, {"north": "pass", "south": "not enough rows", "tiny": "not enough rows"},
            id="slices with too few rows do not gate",
        ),
        pytest.param(
            {"column": "region", "metrics": {"accuracy_score": {"max_regression": 0.0}}},
            False, True, {"north": "no champion", "south": "no champion", "tiny": "not enough rows"},
            id="without a champion slice metrics are reported only",
        ),
    ],
)  # fmt: skip
def test_slice_checks(client, regional, slices, with_champion, passed, statuses):
    name = f"regional-{uuid.uuid4().hex[:8]}"
    if with_champion:
        champion = mlflow.register_model(regional["south_model"], name).version
        client.set_registered_model_alias(name, T.CHAMPION, champion)
    candidate = int(mlflow.register_model(regional["north_model"], name).version)

    result = EvaluateModelOperator(
        task_id="evaluate", model_name=name, candidate_version=candidate, holdout_data=regional["holdout"],
        thresholds={"accuracy_score": {"threshold": 0.6, "min_absolute_change": 0.0}}, slices=slices,
    ).execute({})  # fmt: skip

    assert result["metrics"]["accuracy_score"]["candidate"] > 0.8  # better overall in every case
    assert result["passed"] is passed, result["reason"]
    assert _slice_status(result) == statuses
    tiny = next(row for row in result["slices"] if row["segment"] == "tiny")
    assert tiny["rows"] == 10
    assert "| region=tiny | 10 | accuracy_score |" in result["report"]
    assert "not enough rows" in result["report"]
    summary = json.loads(client.get_model_version(name, str(candidate)).tags[T.EVALUATION_SUMMARY])
    assert "region=tiny" in summary["slices"]["not_enough_rows"]
    if not passed:
        assert "slice accuracy_score on region=south" in result["reason"]
        assert [failure["segment"] for failure in summary["slices"]["failed"]] == ["south"]
        south = next(row for row in result["slices"] if row["segment"] == "south")
        assert south["champion"] - south["candidate"] > 0.3
        assert client.get_model_version(name, str(candidate)).tags[T.GATE_DECISION] == "rejected"


def test_a_slice_column_missing_from_the_holdout_is_a_clear_error(registry, snapshot):
    candidate = registry.add("strong")
    op = evaluate_op(
        registry,
        snapshot,
        candidate,
        slices={"column": "region", "metrics": {"f1_score": {"max_regression": 0}}},
    )
    with pytest.raises(ModelEvaluationError, match=r"no slice column\(s\) \['region'\]"):
        op.execute({})


def test_report_shows_plots_past_champions_upstream_checks_and_links(
    client, mlflow_server, registry, snapshot
):
    first = registry.add("weak")
    evaluate_op(registry, snapshot, first, {"accuracy_score": {"threshold": 0.1}}).execute({})
    approve_version(client, registry.name, first)
    PromoteModelOperator(task_id="promote", model_name=registry.name, version=first).execute({})
    candidate = registry.add("strong")
    validation = {
        "success": True, "rows": 200, "evaluated": 3, "successful": 3, "unsuccessful": 0, "failed": [],
        "data_docs_uri": "https://docs.example.com/validations/run-1.html",
    }  # fmt: skip
    op = evaluate_op(
        registry, snapshot, candidate, validation_summary="{{ params.validation }}",
        drift_summary={"drift": False, "drifted_features": [], "reference": "s3://lake/datasets/churn/abc"},
    )  # fmt: skip
    op.render_template_fields({"params": {"validation": validation}})
    result = op.execute({})

    report = result["report"]
    assert "- Data validation: **passed**" in report
    assert "[Data Docs](https://docs.example.com/validations/run-1.html)" in report
    assert "- Drift: no drift detected; reference `s3://lake/datasets/churn/abc`" in report
    run_page = f"{mlflow_server.uri}/#/experiments/"
    assert f"[MLflow evaluation run]({run_page}" in report
    assert f"/#/models/{registry.name}/versions/{candidate})" in report
    assert f"| v{first} |" in report  # past champions, with what their own evaluation measured
    # The default evaluator's plots and the champion history are artifacts of the evaluation runs.
    artifacts = result["artifacts"]
    assert {"roc_curve_plot", "precision_recall_curve_plot", "confusion_matrix"} <= set(artifacts)
    history_uri = artifacts["champion_history"]
    assert history_uri == f"runs:/{result['evaluation_run_id']}/evaluation/champion_history.png"
    local = mlflow.artifacts.download_artifacts(history_uri)
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(registry.tags(candidate)[T.EVALUATION_SUMMARY])
    assert summary["artifacts"] == artifacts
    assert result["links"]["data_docs"] == validation["data_docs_uri"]
