"""The example DAGs pass results between tasks the Airflow way: ``.output``, never Jinja ``xcom_pull`` strings."""

from __future__ import annotations

import runpy
from pathlib import Path

DAGS = Path(__file__).resolve().parents[3] / "dags"


def test_no_example_dag_pulls_xcoms_in_jinja_or_renders_native_objects():
    for path in sorted(DAGS.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "xcom_pull" not in text, path.name
        assert "render_template_as_native_obj" not in text, path.name


def test_the_continuous_training_tasks_take_whole_upstream_results():
    dag = runpy.run_path(str(DAGS / "continuous_training.py"))["dag"]
    ingest, register = dag.get_task("ingest"), dag.get_task("register")

    # The snapshot, the trained model and the version travel as results (XComArgs), which also order the tasks.
    assert dag.get_task("train").train_data.operator is ingest
    assert dag.get_task("register").model_uri.operator is dag.get_task("train")
    for task_id, field in (("evaluate", "candidate_version"), ("deploy", "version"), ("promote", "version")):
        assert getattr(dag.get_task(task_id), field).operator is register, task_id
        assert "register" in dag.get_task(task_id).upstream_task_ids
    report = dag.get_task("approve").report  # the evaluation's report, then the replay's summary
    assert [section.operator for section in report] == [dag.get_task("evaluate"), dag.get_task("replay")]
    assert {"evaluate", "replay"} <= dag.get_task("approve").upstream_task_ids
    assert not dag.render_template_as_native_obj
