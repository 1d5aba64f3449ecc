"""
A gate-rejected run says so where users look: one warning line in the task log naming the reason and the tasks
skipped, the XCom result, and the task instance's label (its rendered ``map_index_template``), which Airflow's
own task runner renders and the UI lists in the run's Task Instances. Real MLflow server, real models.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from types import SimpleNamespace

import jinja2
import mlflow
import pandas as pd
import pytest
from airflow.sdk import DAG
from airflow.sdk.execution_time.task_runner import _render_map_index
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from airflow_mlops import tags as T
from airflow_mlops.operators.evaluation import EvaluateModelOperator, label_rejection
from airflow_mlops.operators.registry import PromoteModelOperator
from tests.support.dags import serialize_dag
from tests.support.snapshots import write_frames_snapshot

pytestmark = pytest.mark.integration

GATE = {"accuracy_score": {"threshold": 0.6, "min_absolute_change": 0.02}}
LOG = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def rejected_candidate(client, tmp_path_factory) -> dict:
    """A strong champion and a weak (majority-class) candidate of a fresh model, with a holdout."""
    x, y = make_classification(n_samples=300, n_features=5, n_informative=3, random_state=3)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(label=y)
    train, holdout = frame.iloc[:200], frame.iloc[200:]
    uri = write_frames_snapshot(tmp_path_factory.mktemp("gate"), "churn", train, holdout)
    name = f"gate-label-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(f"gate-label-{uuid.uuid4().hex[:8]}")
    versions = {}
    for key, estimator in (
        ("strong", LogisticRegression()),
        ("weak", DummyClassifier(strategy="most_frequent")),
    ):
        estimator.fit(train.drop(columns="label"), train["label"])
        with mlflow.start_run(experiment_id=experiment_id, run_name=key):
            info = mlflow.sklearn.log_model(estimator, name="model", pip_requirements=["scikit-learn"])
        versions[key] = mlflow.register_model(info.model_uri, name).version
    client.set_registered_model_alias(name, T.CHAMPION, str(versions["strong"]))
    return {"name": name, "version": versions["weak"], "holdout": f"{uri}#holdout"}


def label_of(op: EvaluateModelOperator, context: dict) -> str | None:
    """The task instance's label as Airflow's task runner renders it from the context when execute ends."""
    return _render_map_index(context, ti=SimpleNamespace(task=op), log=LOG)


def test_a_rejected_candidate_says_why_in_the_log_the_xcom_and_the_task_instance_label(
    airflow_db, rejected_candidate, capsys
):
    name, version = rejected_candidate["name"], rejected_candidate["version"]
    with DAG("mlops_gate_label_run", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        EvaluateModelOperator(
            task_id="evaluate", model_name=name, candidate_version=str(version),
            holdout_data=rejected_candidate["holdout"], thresholds=GATE,
        ) >> PromoteModelOperator(task_id="promote", model_name=name, version=str(version))  # fmt: skip
    serialize_dag(dag)

    dag_run = dag.test()  # Airflow's own task runner, as a worker runs it

    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert (str(tis["evaluate"].state), str(tis["promote"].state)) == ("success", "skipped")
    result = tis["evaluate"].xcom_pull(task_ids="evaluate")
    assert result["passed"] is False
    reason = result["reason"]
    assert reason.startswith("accuracy_score: Metric accuracy_score value threshold check failed")
    log = capsys.readouterr().out
    assert f"Gate REJECTED model {name!r} v{version}: {reason} -- " in log
    assert "skipping downstream tasks ['promote']: nothing is promoted." in log
    # The label the run's Task Instances list shows: at most the 250 characters Airflow stores.
    full = f"gate rejected: {reason}"
    assert tis["evaluate"].rendered_map_index == (full if len(full) <= 250 else full[:249] + "…")


def test_no_label_unless_the_gate_rejects_and_a_template_of_your_own_wins():
    with DAG("mlops_gate_label_default", schedule=None, template_undefined=jinja2.StrictUndefined):
        op = EvaluateModelOperator(
            task_id="evaluate", model_name="churn", candidate_version="2", holdout_data="/data/s#holdout",
            thresholds=GATE,
        )  # fmt: skip
    assert op.map_index_template is None  # nothing set on the task: the DAG as written
    context: dict = {"map_index_template": None}  # what the task runner puts in the context
    assert label_of(op, dict(context)) is None  # a passed gate leaves no label

    assert label_rejection(context, "accuracy_score below 0.6") == "gate rejected: accuracy_score below 0.6"
    assert label_of(op, context) == "gate rejected: accuracy_score below 0.6"

    own = {"map_index_template": "{{ task.task_id }}: {{ mlops_gate_label }}", "task": op}
    label_rejection(own, "x" * 300)
    assert label_of(op, own) == "evaluate: gate rejected: " + "x" * 234 + "…"
