"""
Every argument that takes another task's result accepts it the Airflow way (``task.output``,
``task.output["key"]``), as it accepts a Jinja string or a literal: the DAG parses, serialises and wires the
dependency; a value found bad once rendered fails the task at once (ConfigurationError, not retried) with
the message a bad literal gets at parse time. No server.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from datetime import datetime

import pytest
from airflow.sdk import DAG, BaseOperator

import airflow_mlops.operators
import airflow_mlops.sensors
from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.deployment import (
    DeployModelOperator,
    InfraValidateOperator,
    RollbackModelOperator,
)
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.monitoring import MonitorModelOperator, RequestRetrainingOperator
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_mlops.operators.replay import ReplayTrafficOperator
from airflow_mlops.operators.training import TrainModelOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from airflow_mlops.operators.watch import WatchReleaseOperator
from airflow_mlops.sensors.new_data import NewDataSensor
from airflow_mlops.utils.templating import is_templated
from tests.support.upstream import Upstream, assert_refused_at_execute


def _wired(up: BaseOperator) -> dict[type, list[dict]]:
    """Per operator class, keyword arguments (one dict per way of using it) taken from upstream results."""
    out = up.output
    return {
        IngestDatasetOperator: [
            {"dataset_name": "churn", "source": out["source"], "data_root": out["root"],
             "label_column": out["label"], "mlflow_run_id": out["run_id"]},
            {"dataset_name": "churn", "sql": out["query"], "sql_conn_id": "warehouse"},
        ],
        ValidateDatasetOperator: [
            {"dataset_uri": out["uri"], "expectations": out["expectations"]},
            {"dataset_uri": out["uri"], "suite_path": out["suite"]},
            {"sql_conn_id": "warehouse", "table": out["table"], "expectations": out["expectations"]},
        ],
        DriftCheckOperator: [
            {"dataset_uri": out["uri"], "reference_uri": out["reference"], "model_name": out["m"]},
        ],
        NewDataSensor: [{"source": out["source"], "dataset_name": out["name"], "data_root": out["root"]}],
        TrainModelOperator: [
            {"entrypoint": "pkg.train", "train_data": out["splits"]["train"],
             "valid_data": out["splits"]["valid"], "experiment_name": out["experiment"],
             "hyperparameters": out["params"], "output_root": out["root"],
             "env": out["env"]},
        ],
        RegisterModelOperator: [
            {"model_name": out["model_name"], "model_uri": out["model_uri"], "run_id": out["run_id"],
             "tags": out["tags"]},
            {"model_name": "churn", "model_uri": out["model_uri"], "tags": {"mlops.data.uri": out["uri"]}},
        ],
        PromoteModelOperator: [{"model_name": out["model_name"], "version": out["version"]}],
        ApproveModelOperator: [
            {"model_name": out["model_name"], "candidate_version": out["version"], "report": out["report"]},
        ],
        EvaluateModelOperator: [
            {"model_name": out["model_name"], "candidate_version": out["version"],
             "holdout_data": out["holdout"],
             "target": out["label"], "thresholds": out["thresholds"], "average": out["average"],
             "slices": out["slices"], "validation_summary": up.output, "drift_summary": up.output,
             "experiment_name": out["experiment"]},
            {"model_name": "churn", "candidate_model_uri": out["model_uri"], "holdout_data": out["holdout"],
             "thresholds": {"accuracy_score": {"threshold": 0.7}}},
        ],
        InfraValidateOperator: [
            {"model_name": out["model_name"], "version": out["version"], "sample_data": out["holdout"],
             "target": out["target"], "drop_columns": out["drop"]},
        ],
        DeployModelOperator: [
            {"model_name": out["model_name"], "version": out["version"], "target": out["target"],
             "sample_data": out["holdout"], "drop_columns": out["drop"], "reason": out["reason"]},
        ],
        RollbackModelOperator: [
            {"model_name": out["model_name"], "reason": out["reason"], "version": out["version"],
             "target": out["target"], "sample_data": out["holdout"]},
        ],
        WatchReleaseOperator: [
            {"model_name": out["model_name"], "target": out["target"], "sample_data": out["holdout"],
             "capture_uri": out["root"], "reason": out["reason"]},
        ],
        MonitorModelOperator: [
            {"model_name": out["model_name"], "capture_uri": out["root"], "window_end": out["end"],
             "labels_uri": out["labels"]},
        ],
        RequestRetrainingOperator: [{"model_name": out["model_name"], "monitoring": up.output}],
        ReplayTrafficOperator: [
            {"model_name": out["model_name"], "version": out["version"], "target": out["target"],
             "capture_uri": out["root"], "since": out["start"], "until": out["end"],
             "segment_column": out["segment"]},
        ],
    }  # fmt: skip


def _package_operator_classes() -> set[type]:
    found = set()
    for package in (airflow_mlops.operators, airflow_mlops.sensors):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(cls, BaseOperator)
                    and cls.__module__.startswith("airflow_mlops.")
                    and not cls.__name__.startswith("_")
                ):
                    found.add(cls)
    return found


def _serialised_round_trip(dag: DAG) -> dict:
    """The DAG as the DAG processor stores it (strict JSON) and read back, as the scheduler reads it."""
    from airflow.serialization import serialized_objects

    data = serialized_objects.LazyDeserializedDAG.from_dag(dag).data
    json.loads(json.dumps(data, allow_nan=False))
    serializer = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG
    return {task.task_id: task for task in serializer.from_dict(data).tasks}


def test_every_operator_class_is_covered():
    with DAG("covered", schedule=None, start_date=datetime(2026, 1, 1)):
        wired = _wired(Upstream(task_id="up"))

    assert set(wired) == _package_operator_classes()


def test_every_argument_from_another_task_parses_serialises_and_wires_the_dependency():
    with DAG("wired", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        up = Upstream(task_id="up")
        tasks = [
            cls(task_id=f"{cls.__name__}_{i}", **kwargs)
            for cls, uses in _wired(up).items()
            for i, kwargs in enumerate(uses)
        ]

    for task in tasks:
        assert task.upstream_task_ids == {"up"}, task.task_id  # wired through the XComArgs it holds
        for name, value in vars(task).items():
            if not name.startswith("_") and name not in task.template_fields:
                assert not is_templated(value), (
                    f"{task.task_id}.{name}: an upstream result outside template_fields"
                )
    stored = _serialised_round_trip(dag)
    assert set(stored) == {"up", *(task.task_id for task in tasks)}
    assert stored["RegisterModelOperator_0"].upstream_task_ids == {"up"}


@pytest.mark.parametrize(
    "cls",
    sorted(_package_operator_classes(), key=lambda cls: cls.__name__),
    ids=lambda cls: cls.__name__,
)
def test_connection_ids_default_to_the_providers_and_are_templated(cls):
    with DAG("conns", schedule=None, start_date=datetime(2026, 1, 1)):
        task = cls(task_id="t", **_wired(Upstream(task_id="up"))[cls][0])

    for field in ("aws_conn_id", "mlflow_conn_id", "sql_conn_id", "kubernetes_conn_id"):
        if hasattr(task, field):
            assert field in task.template_fields, f"{field} is not templated"
    if hasattr(task, "aws_conn_id"):
        assert task.aws_conn_id == "aws_default"
        (annotation,) = [
            params["aws_conn_id"].annotation
            for params in (
                inspect.signature(c.__init__).parameters for c in cls.__mro__ if "__init__" in vars(c)
            )
            if "aws_conn_id" in params
        ][:1]
        assert "None" in str(annotation), "aws_conn_id=None (boto3's defaults) is not allowed"


# -- a bad value that arrives through rendering fails at execute, as a bad literal fails at parse ----------


@pytest.mark.parametrize(
    ("make", "rendered", "message"),
    [
        pytest.param(
            lambda out: RegisterModelOperator(task_id="t", model_name="churn", model_uri=out["model_uri"]),
            {"model_uri": None}, "model_uri must be a non-empty string", id="register: no model_uri",
        ),
        pytest.param(
            lambda out: MonitorModelOperator(task_id="t", model_name="churn", window_end=out["end"]),
            {"window_end": "2026-12-05T00:00:00"}, "window_end must carry a time zone",
            id="monitor: window_end without a time zone",
        ),
        pytest.param(
            lambda out: ReplayTrafficOperator(task_id="t", model_name="churn", version=4, since=out["start"]),
            {"since": "yesterday"}, "since must be an ISO 8601 time", id="replay: since not a time",
        ),
        pytest.param(
            lambda out: RegisterModelOperator(
                task_id="t", model_name="churn", model_uri="models:/m-1", tags=out["tags"]
            ),
            {"tags": ["mlops.data.uri"]}, "tags must be a dict", id="register: tags not a dict",
        ),
        pytest.param(
            lambda out: PromoteModelOperator(task_id="t", model_name="churn", version=out["version"]),
            {"version": None}, "positive integer model version", id="promote: no version",
        ),
        pytest.param(
            lambda out: EvaluateModelOperator(
                task_id="t", model_name="churn", candidate_version=3, holdout_data=out["holdout"],
                thresholds={"accuracy_score": {"threshold": 0.7}},
            ),
            {"holdout_data": ["file:///s"]}, "holdout_data of model 'churn' rendered to",
            id="evaluate: holdout not a URI",
        ),
        pytest.param(
            lambda out: InfraValidateOperator(
                task_id="t", model_name="churn", version=3, sample_data=out["holdout"]
            ),
            {"sample_data": None}, "sample_data must be a snapshot URI", id="infra-validate: no sample",
        ),
        pytest.param(
            lambda out: DeployModelOperator(task_id="t", model_name="churn", version=3, target=out["target"]),
            {"target": ["local"]}, "invalid deploy target", id="deploy: bad target",
        ),
        pytest.param(
            lambda out: DriftCheckOperator(task_id="t", dataset_uri=out["uri"], reference_uri="/r"),
            {"dataset_uri": None}, "dataset_uri must be a snapshot URI", id="drift: no dataset",
        ),
        pytest.param(
            lambda out: ValidateDatasetOperator(
                task_id="t", dataset_uri="/s", expectations=out["expectations"]
            ),
            {"expectations": {"type": "expect_column_to_exist"}}, "must be a non-empty list of expectations",
            id="validate: expectations not a list",
        ),
        pytest.param(
            lambda out: IngestDatasetOperator(task_id="t", dataset_name="churn", source=out["source"]),
            {"source": ""}, "source must be a non-empty path", id="ingest: empty source",
        ),
        pytest.param(
            lambda out: IngestDatasetOperator(
                task_id="t", dataset_name="churn", source="/raw", label_column=out["label"]
            ),
            {"label_column": 7}, "label_column must be a column name", id="ingest: label not a name",
        ),
        pytest.param(
            lambda out: TrainModelOperator(
                task_id="t", entrypoint="pkg.train", train_data="/s#train", experiment_name="e",
                env=out["env"],
            ),
            {"env": {"MLOPS_TRAIN_DATA": "/elsewhere"}}, "env may not set MLOPS_TRAIN_DATA",
            id="train: env redefines the contract",
        ),
        pytest.param(
            lambda out: MonitorModelOperator(task_id="t", model_name=out["model_name"]),
            {"model_name": None}, "model_name must be a registered model name", id="monitor: no model",
        ),
        pytest.param(
            lambda out: RequestRetrainingOperator(task_id="t", model_name="churn", monitoring=out["m"]),
            {"monitoring": ["degraded"]}, "monitoring must render to a dict", id="request-retraining",
        ),
    ],
)  # fmt: skip
def test_a_bad_upstream_result_fails_at_execute_without_retries(make, rendered, message):
    assert_refused_at_execute(make, rendered, message)


def test_the_same_values_given_as_literals_still_fail_at_parse_time():
    with pytest.raises(ValueError, match="model_uri must be a non-empty string"):
        RegisterModelOperator(task_id="t", model_name="churn", model_uri="")
    with pytest.raises(ValueError, match="sample_data must be a snapshot URI"):
        InfraValidateOperator(task_id="t", model_name="churn", version=3, sample_data="")
    with pytest.raises(ValueError, match="target must be a DeployTarget"):
        DeployModelOperator(task_id="t", model_name="churn", version=3, target=["local"])
    with pytest.raises(ValueError, match="dataset_uri must be a snapshot URI"):
        DriftCheckOperator(task_id="t", dataset_uri="", reference_uri="/r")
    with pytest.raises(ValueError, match="must be a non-empty list of expectations"):
        ValidateDatasetOperator(task_id="t", dataset_uri="/s", expectations=[])
    with pytest.raises(ValueError, match="label_column must be a column name"):
        IngestDatasetOperator(task_id="t", dataset_name="churn", source="/raw", label_column=7)
    with pytest.raises(ValueError, match="env may not set MLOPS_TRAIN_DATA"):
        TrainModelOperator(
            task_id="t", entrypoint="pkg.train", train_data="/s", experiment_name="e",
            env={"MLOPS_TRAIN_DATA": "/x"},
        )  # fmt: skip
    with pytest.raises(ValueError, match="model_name must be a registered model name"):
        MonitorModelOperator(task_id="t", model_name="")
    with pytest.raises(ValueError, match="reason is required"):
        RollbackModelOperator(task_id="t", model_name="churn", reason=" ")


def test_an_upstream_result_is_not_transformed_at_parse_time():
    with DAG("kept", schedule=None, start_date=datetime(2026, 1, 1)):
        out = Upstream(task_id="up").output
        deploy = DeployModelOperator(
            task_id="deploy", model_name="churn", target=out["target"], drop_columns=out["drop"]
        )
        validate = ValidateDatasetOperator(task_id="validate", dataset_uri="/s", expectations=out["e"])

    # Stored as given, so Airflow renders them (and keeps the dependency); read once rendered, in execute.
    assert is_templated(deploy.target)
    assert is_templated(deploy.drop_columns)
    assert is_templated(validate.expectations)


def test_each_key_of_a_result_is_an_xcom_of_its_own_so_output_key_resolves():
    with DAG("keys", schedule=None, start_date=datetime(2026, 1, 1)):
        wired = _wired(Upstream(task_id="up"))
        tasks = [cls(task_id=cls.__name__, **uses[0]) for cls, uses in wired.items() if cls in _KEYED]
        by_choice = RegisterModelOperator(
            task_id="one_xcom", model_name="churn", model_uri="models:/m-1", multiple_outputs=False
        )

    assert [task.task_id for task in tasks if not task.multiple_outputs] == []
    assert by_choice.multiple_outputs is False


_KEYED = _package_operator_classes()
