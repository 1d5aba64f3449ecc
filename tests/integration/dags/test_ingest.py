"""The example DAG ``mlops_ingest`` in a real dag.test() run: deferred wait, snapshot, Asset event."""

from __future__ import annotations

import runpy
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.operators.ingest import dataset_asset
from tests.support.dags import serialize_dag
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "ingest.py"


def load_dag(monkeypatch, source: Path, name: str):
    monkeypatch.setenv("MLOPS_SOURCE_PATH", str(source))
    monkeypatch.setenv("MLOPS_DATASET_NAME", name)
    dag = runpy.run_path(str(DAG_FILE))["dag"]
    serialize_dag(dag)
    return dag


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_new_data_is_ingested_and_announced_then_nothing_new_skips(airflow_db, monkeypatch, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"x": range(40), "label": [0, 1] * 20}).to_csv(raw / "part-1.csv", index=False)
    dag = load_dag(monkeypatch, raw, "ingest_dag_demo")

    first = dag.test()

    assert states(first) == {"wait_for_new_data": "success", "ingest": "success"}
    with create_session() as session:
        events = (
            session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == dataset_asset("ingest_dag_demo").uri).all()
        )  # fmt: skip
        (event,) = events
        assert event.extra["rows"] == 40
        assert event.extra["uri"].endswith(f"/datasets/ingest_dag_demo/{event.extra['snapshot_id']}")
        # The Asset is the dataset's real location: the folder the snapshot was written in.
        assert Path(event.extra["uri"]).parent.as_uri() == dataset_asset("ingest_dag_demo").uri
        assert dataset_asset("ingest_dag_demo").uri.startswith("file:///")
        assert len(event.extra["sha256"]) == 64

    # Nothing new: the sensor defers, its trigger times out, and the run is skipped, not failed.
    dag.task_dict["wait_for_new_data"].timeout = 1
    dag.task_dict["wait_for_new_data"].poke_interval = 0.2
    serialize_dag(dag)
    second = dag.test()
    assert states(second) == {"wait_for_new_data": "skipped", "ingest": "skipped"}
